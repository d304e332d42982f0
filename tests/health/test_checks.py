"""HealthChecks: check results, caching, single-flight runs, timeouts and state logging."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest

from mlmiddleware import _lifecycle
from mlmiddleware.health import HealthChecks, ProbeReport


def run(checks: HealthChecks, kind: Any = "readiness", **kwargs: Any) -> ProbeReport:
    return asyncio.run(checks.run(kind, **kwargs))


class Counter:
    """A sync check that counts its calls and returns ``result``."""

    def __init__(self, result: Any = True) -> None:
        self.calls = 0
        self.result = result

    def __call__(self) -> Any:
        self.calls += 1
        return self.result


class FakeWorker:
    def __init__(self, name: str = "model") -> None:
        self.name = name
        self.last_progress = 0.0
        self.queue_depth = 0
        self.stuck: str | None = None
        self.not_ready: str | None = None

    def liveness_error(self) -> str | None:
        return self.stuck

    def readiness_error(self) -> str | None:
        return self.not_ready


def test_check_passing_sync() -> None:
    checks = HealthChecks()
    checks.add("db", lambda: True)

    report = run(checks)

    assert report.status == "ok"
    assert report.checks["db"].status == "ok"
    assert report.checks["db"].error is None
    assert report.checks["db"].duration_ms >= 0.0


def test_check_passing_async() -> None:
    async def ping() -> bool:
        await asyncio.sleep(0)
        return True

    checks = HealthChecks()
    checks.add("cache", ping)

    assert run(checks).status == "ok"


def test_check_returning_false_fails() -> None:
    checks = HealthChecks()
    checks.add("db", lambda: False)

    report = run(checks)

    assert report.status == "fail"
    assert report.checks["db"].status == "fail"
    assert report.checks["db"].error == "check returned False"


def test_check_returning_none_fails() -> None:
    checks = HealthChecks()
    checks.add("db", lambda: None)

    report = run(checks)

    assert report.status == "fail"
    assert report.checks["db"].error == "check returned None, expected True or False"


def test_check_raising_reports_error() -> None:
    def broken() -> bool:
        raise ConnectionError("database refused the connection")

    checks = HealthChecks()
    checks.add("db", broken)

    report = run(checks)

    assert report.status == "fail"
    assert report.checks["db"].error == "ConnectionError: database refused the connection"


def test_check_async_raising_reports_error() -> None:
    async def broken() -> bool:
        raise TimeoutError("upstream took too long")

    checks = HealthChecks()
    checks.add("upstream", broken)

    report = run(checks)

    # The check's own TimeoutError is its error, not the probe's timeout.
    assert report.checks["upstream"].error == "TimeoutError: upstream took too long"


def test_sync_check_runs_off_loop() -> None:
    thread_names: list[str] = []

    def record_thread() -> bool:
        thread_names.append(threading.current_thread().name)
        return True

    checks = HealthChecks()
    checks.add("db", record_thread)
    run(checks)

    assert thread_names == ["mlmiddleware-health-db"]


def test_check_timeout_sync_hang() -> None:
    release = threading.Event()
    counter = Counter()

    def hang() -> bool:
        counter()
        release.wait(30)
        return True

    checks = HealthChecks(cache_seconds=0)
    checks.add("gpu", hang, timeout=0.2)
    try:
        first = run(checks)
        second = run(checks)
    finally:
        release.set()

    assert first.status == "fail"
    assert first.checks["gpu"].error == "timed out after 0.2 s"
    assert second.checks["gpu"].error is not None
    assert second.checks["gpu"].error.startswith("timed out after 0.2 s")
    # The hung call still occupies its thread, so the second probe started no other.
    assert counter.calls == 1


def test_check_timeout_async_hang() -> None:
    async def hang() -> bool:
        await asyncio.Event().wait()
        return True

    checks = HealthChecks()
    checks.add("gpu", hang, timeout=0.1)

    report = run(checks)

    assert report.status == "fail"
    assert report.checks["gpu"].error == "timed out after 0.1 s"


def test_check_timeout_default_message() -> None:
    async def hang() -> bool:
        await asyncio.Event().wait()
        return True

    checks = HealthChecks()
    checks.add("gpu", hang)

    assert run(checks).checks["gpu"].error == "timed out after 1.0 s"


def test_noncritical_failure_keeps_status() -> None:
    checks = HealthChecks()
    checks.add("db", lambda: True)
    checks.add("feature_store", lambda: False, critical=False)

    report = run(checks)

    assert report.status == "ok"
    assert report.checks["feature_store"].status == "fail"


def test_cache_reuses_result() -> None:
    counter = Counter()
    checks = HealthChecks(cache_seconds=60)
    checks.add("db", counter)

    async def probe_twice() -> None:
        await checks.run("readiness")
        await checks.run("readiness")

    asyncio.run(probe_twice())

    assert counter.calls == 1


def test_cache_zero_reruns() -> None:
    counter = Counter()
    checks = HealthChecks(cache_seconds=0)
    checks.add("db", counter)

    run(checks)
    run(checks)

    assert counter.calls == 2


def test_single_flight_1000_probes_async() -> None:
    calls = 0

    async def slow() -> bool:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return True

    checks = HealthChecks(cache_seconds=0)
    checks.add("db", slow)

    async def storm() -> list[ProbeReport]:
        return await asyncio.gather(*(checks.run("readiness") for _ in range(1000)))

    reports = asyncio.run(storm())

    # cache_seconds=0: only the shared in-flight run keeps this at one call.
    assert calls == 1
    assert all(report.status == "ok" for report in reports)


def test_single_flight_1000_probes_sync() -> None:
    counter = Counter()
    checks = HealthChecks(cache_seconds=0)
    checks.add("db", counter)

    async def storm() -> list[ProbeReport]:
        return await asyncio.gather(*(checks.run("readiness") for _ in range(1000)))

    reports = asyncio.run(storm())

    assert counter.calls == 1
    assert len(reports) == 1000


def test_cancelled_probe_keeps_shared_run() -> None:
    calls = 0

    async def slow() -> bool:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.1)
        return True

    checks = HealthChecks(cache_seconds=60)
    checks.add("db", slow)

    async def cancel_one() -> ProbeReport:
        first = asyncio.ensure_future(checks.run("readiness"))
        second = asyncio.ensure_future(checks.run("readiness"))
        await asyncio.sleep(0.01)
        first.cancel()
        return await second

    report = asyncio.run(cancel_one())

    assert report.status == "ok"
    assert calls == 1


def test_kinds_select_checks() -> None:
    checks = HealthChecks()
    checks.add("live", lambda: True, kind="liveness")
    checks.add("ready", lambda: True, kind="readiness")
    checks.add("model_loaded", lambda: True, kind="startup")

    assert set(run(checks, "liveness").checks) == {"live"}
    assert set(run(checks, "readiness").checks) == {"model_loaded", "ready", "startup_complete"}
    assert set(run(checks, "startup").checks) == {"model_loaded", "startup_complete"}


def test_readiness_before_startup_fails() -> None:
    checks = HealthChecks()

    report = run(checks, startup_complete=False)

    assert report.status == "fail"
    assert report.checks["startup_complete"].status == "fail"
    assert report.checks["startup_complete"].error is not None


def test_startup_before_startup_fails() -> None:
    checks = HealthChecks()
    checks.add("model_loaded", lambda: True, kind="startup")

    assert run(checks, "startup", startup_complete=False).status == "fail"
    assert run(checks, "startup", startup_complete=True).status == "ok"


def test_startup_check_failing_fails_readiness() -> None:
    checks = HealthChecks()
    checks.add("model_loaded", lambda: False, kind="startup")

    assert run(checks, "readiness").status == "fail"


def test_liveness_ignores_startup_state() -> None:
    checks = HealthChecks()

    report = run(checks, "liveness", startup_complete=False)

    assert report.status == "ok"
    assert report.checks == {}


def test_draining_skips_checks() -> None:
    counter = Counter()
    checks = HealthChecks()
    checks.add("db", counter)

    _lifecycle.begin_shutdown()
    report = run(checks)

    assert report.status == "draining"
    assert report.checks == {}
    assert counter.calls == 0


def test_draining_keeps_liveness() -> None:
    checks = HealthChecks()
    checks.add("live", lambda: True, kind="liveness")

    _lifecycle.begin_shutdown()

    assert run(checks, "liveness").status == "ok"


def test_worker_stuck_fails_liveness() -> None:
    worker = FakeWorker("resnet")
    checks = HealthChecks()
    checks.add_worker(worker)
    worker.stuck = "batch running for 45.0 s, over stuck_after_s=30.0"

    report = run(checks, "liveness")

    assert report.status == "fail"
    assert report.checks["worker:resnet"].error == worker.stuck


def test_worker_not_ready_fails_readiness() -> None:
    worker = FakeWorker("resnet")
    checks = HealthChecks()
    checks.add_worker(worker)
    worker.not_ready = "warmup has not finished"

    assert run(checks, "readiness").status == "fail"
    assert run(checks, "liveness").status == "ok"


def test_worker_healthy_passes() -> None:
    checks = HealthChecks()
    checks.add_worker(FakeWorker("resnet"))

    assert run(checks, "liveness").checks["worker:resnet"].status == "ok"
    assert run(checks, "readiness").checks["worker:resnet"].status == "ok"


def test_worker_recovers_without_cache() -> None:
    worker = FakeWorker()
    checks = HealthChecks(cache_seconds=60)
    checks.add_worker(worker)
    worker.stuck = "worker thread died"

    assert run(checks, "liveness").status == "fail"
    worker.stuck = None
    assert run(checks, "liveness").status == "ok"


def test_worker_raising_fails_liveness() -> None:
    class BrokenWorker(FakeWorker):
        def liveness_error(self) -> str | None:
            raise RuntimeError("state lock poisoned")

    checks = HealthChecks()
    checks.add_worker(BrokenWorker())

    report = run(checks, "liveness")

    assert report.checks["worker:model"].error == "RuntimeError: state lock poisoned"


def test_add_worker_rejects_other_objects() -> None:
    checks = HealthChecks()

    with pytest.raises(TypeError, match="ModelWorker protocol"):
        checks.add_worker(object())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "kwargs", "error", "match"),
    [
        ("", {}, ValueError, "non-empty string"),
        ("event_loop", {}, ValueError, "reserved"),
        ("startup_complete", {}, ValueError, "reserved"),
        ("db", {"kind": "ready"}, ValueError, "invalid kind='ready'"),
        ("db", {"timeout": 0}, ValueError, "invalid timeout=0"),
        ("db", {"timeout": float("inf")}, ValueError, "invalid timeout=inf"),
        ("db", {"timeout": "1"}, ValueError, "invalid timeout='1'"),
    ],
)
def test_add_rejects_bad_input(
    name: str, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    checks = HealthChecks()

    with pytest.raises(error, match=match):
        checks.add(name, lambda: True, **kwargs)


def test_add_rejects_duplicate_name() -> None:
    checks = HealthChecks()
    checks.add("db", lambda: True, kind="startup")

    with pytest.raises(ValueError, match="registered twice"):
        checks.add("db", lambda: True)


def test_add_rejects_non_callable() -> None:
    checks = HealthChecks()

    with pytest.raises(TypeError, match="pass a callable"):
        checks.add("db", True)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [-1, float("nan"), "1"])
def test_cache_seconds_rejects_bad_input(value: Any) -> None:
    with pytest.raises(ValueError, match="invalid cache_seconds"):
        HealthChecks(cache_seconds=value)


def test_loop_lag_settings_rejected_early() -> None:
    with pytest.raises(ValueError, match="invalid max_lag_seconds"):
        HealthChecks(max_loop_lag_seconds=0)


def test_state_change_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    counter = Counter(result=False)
    checks = HealthChecks(cache_seconds=0)
    checks.add("db", counter)
    caplog.set_level(logging.INFO, logger="mlmiddleware.health")

    for _ in range(3):
        run(checks)
    counter.result = True
    for _ in range(3):
        run(checks)

    records = [r for r in caplog.records if r.name == "mlmiddleware.health"]
    assert counter.calls == 6
    assert [r.levelname for r in records] == ["WARNING", "INFO"]
    assert "db" in records[0].getMessage()
    assert "check returned False" in records[0].getMessage()
    assert "recovered" in records[1].getMessage()


def test_passing_check_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    checks = HealthChecks(cache_seconds=0)
    checks.add("db", lambda: True)
    caplog.set_level(logging.INFO, logger="mlmiddleware.health")

    run(checks)
    run(checks)

    assert [r for r in caplog.records if r.name == "mlmiddleware.health"] == []


def test_report_json_shape() -> None:
    checks = HealthChecks()
    checks.add("db", lambda: False)

    body = run(checks).to_json()

    assert body["status"] == "fail"
    assert set(body["checks"]["db"]) == {"status", "duration_ms", "error"}
