"""Faults under ``mlmiddleware run``: killed worker, hung model, full disk, stalled log reader."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.launcher.support import wait_until
from tests.reliability.support import Launcher, poll

# Waits are generous because other suites share the 2 CPU cores.
WAIT_S = 30.0


def post_in_thread(url: str, document: Any, results: list[Any]) -> threading.Thread:
    """POST in a background thread; append the response, or the exception it raised."""

    def post() -> None:
        try:
            results.append(httpx.post(url, json=document, timeout=WAIT_S))
        except httpx.HTTPError as exc:
            results.append(exc)

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_worker_sigkill_mid_batch(
    launcher_factory: Callable[..., Launcher], tmp_path: Path
) -> None:
    launcher = launcher_factory(workers=2)
    pids = launcher.wait_ready()
    results: list[Any] = []
    thread = post_in_thread(
        f"{launcher.url}/v1/predict", {"inputs": {"x": 1, "mark": True, "delay_ms": 4000}}, results
    )

    markers = wait_until(lambda: list((tmp_path / "markers").glob("running-*")), timeout=WAIT_S)
    victim = int(markers[0].name.removeprefix("running-"))
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=WAIT_S)
    caller_done_s = time.monotonic() - killed_at

    replacement = wait_until(
        lambda: [pid for pid in launcher.ready_pids() if pid not in pids], timeout=WAIT_S
    )
    with httpx.Client(base_url=launcher.url, timeout=WAIT_S) as client:
        statuses = [client.post("/v1/predict", json={"inputs": n}).status_code for n in range(20)]
        served_by = {
            httpx.get(f"{launcher.url}/pid", timeout=WAIT_S).json()["pid"] for _ in range(30)
        }

    assert victim in pids
    assert not thread.is_alive()
    assert caller_done_s < WAIT_S
    assert len(results) == 1
    outcome = results[0]
    assert isinstance(outcome, httpx.HTTPError) or outcome.status_code >= 500, outcome
    assert len(replacement) == 1
    assert sorted(launcher.worker_pids()) == sorted([*(set(pids) - {victim}), *replacement])
    assert statuses == [200] * 20
    assert victim not in served_by
    assert launcher.stop() == 0


@pytest.mark.slow
def test_hung_model_fails_liveness(launcher_factory: Callable[..., Launcher]) -> None:
    stuck_after_s = 1.0
    launcher = launcher_factory(
        workers=1,
        env={"RELIABILITY_STUCK_AFTER_S": str(stuck_after_s), "RELIABILITY_TIMEOUT_S": "3"},
    )
    launcher.wait_ready()
    live_before = httpx.get(f"{launcher.url}/livez", timeout=WAIT_S)
    results: list[Any] = []
    sent_at = time.monotonic()
    thread = post_in_thread(
        f"{launcher.url}/v1/predict", {"inputs": {"x": 1, "hang": True}}, results
    )

    def liveness_failed() -> httpx.Response | None:
        response = httpx.get(f"{launcher.url}/livez", timeout=WAIT_S)
        return response if response.status_code == 503 else None

    failed = poll(liveness_failed, timeout=WAIT_S, interval=0.1)
    failed_after_s = time.monotonic() - sent_at
    thread.join(timeout=WAIT_S)
    httpx.post(f"{launcher.url}/control/release", timeout=WAIT_S)
    recovered = poll(
        lambda: httpx.get(f"{launcher.url}/livez", timeout=WAIT_S).status_code == 200,
        timeout=WAIT_S,
        interval=0.1,
    )

    assert live_before.status_code == 200
    assert failed is not None
    assert failed_after_s >= stuck_after_s
    check = failed.json()["checks"]["worker:fake"]
    assert check["status"] == "fail"
    assert "stuck_after_s=1.0" in check["error"]
    assert len(results) == 1
    assert results[0].status_code == 504
    assert results[0].json()["error"]["type"] == "timeout"
    assert recovered
    assert launcher.stop() == 0


FILE_SIZE_LIMIT = 4096


@pytest.mark.slow
def test_full_disk_feedback(launcher_factory: Callable[..., Launcher], tmp_path: Path) -> None:
    launcher = launcher_factory(workers=1, file_size_limit=FILE_SIZE_LIMIT)
    launcher.wait_ready()
    responses = []
    with httpx.Client(base_url=launcher.url, timeout=WAIT_S) as client:
        for n in range(200):
            response = client.post("/feedback", json={"request_id": f"disk-{n}", "label": n})
            responses.append(response)
            if response.status_code == 503:
                break
        ready = client.get("/readyz")
        live = client.get("/livez")
        predicted = client.post("/v1/predict", json={"inputs": 2})
    errors = poll(
        lambda: [
            record
            for record in launcher.records()
            if record.get("logger") == "mlmiddleware.feedback" and record.get("level") == "ERROR"
        ],
        timeout=WAIT_S,
    )
    status = launcher.stop()

    statuses = {response.status_code for response in responses}
    rejected = responses[-1]
    accepted = {f"disk-{n}" for n, response in enumerate(responses) if response.status_code == 202}
    stored: list[str] = []
    for path in (tmp_path / "feedback").iterdir():
        data = path.read_bytes()
        assert data == b"" or data.endswith(b"\n"), f"{path.name} ends in a partial line"
        records = [orjson.loads(line) for line in data.splitlines()]
        stored += [record["request_id"] for record in records if record["kind"] == "feedback"]

    assert statuses == {202, 503}
    assert rejected.json()["error"]["type"] == "sink_unavailable"
    assert "retry-after" in rejected.headers
    assert ready.status_code == 503
    assert ready.json()["checks"]["feedback_sink"]["status"] == "fail"
    assert live.status_code == 200
    assert predicted.status_code == 200
    assert errors
    assert "File too large" in orjson.dumps(errors[0]).decode()
    assert accepted
    assert sorted(stored) == sorted(accepted)
    assert status == 0


# How long the test leaves the launcher's stderr pipe undrained, and the stall it accepts.
LOG_STALL_S = 6.0
STALL_BOUND_S = 1.0


@pytest.fixture(scope="module")
def stalled_log_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Serve requests while the launcher's stderr is undrained for ``LOG_STALL_S`` seconds."""
    launcher = Launcher(tmp_path_factory.mktemp("stalled"), workers=1, read_stderr=False).start()
    try:
        wait_until(lambda: _status(f"{launcher.url}/readyz") == 200, timeout=WAIT_S, interval=0.1)
        pids_before = launcher.worker_pids()
        stop = threading.Event()
        latencies: list[tuple[float, int | None]] = []
        thread = threading.Thread(target=_send_until, args=(launcher.url, stop, latencies))
        thread.start()

        time.sleep(LOG_STALL_S)
        launcher.start_reading()
        time.sleep(2.0)
        stop.set()
        thread.join(timeout=WAIT_S)
        pids_after = launcher.worker_pids()
        status = launcher.stop()
        yield {
            "latencies": latencies,
            "records": launcher.records(),
            "pids": (pids_before, pids_after),
            "status": status,
        }
    finally:
        launcher.kill()


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=5.0).status_code
    except httpx.HTTPError:
        return None


def _send_until(url: str, stop: threading.Event, latencies: list[tuple[float, int | None]]) -> None:
    # A long user agent makes each access log line about 600 bytes, so the pipes fill fast.
    headers = {"user-agent": "reliability-" + "x" * 300}
    with httpx.Client(base_url=url, timeout=60.0, headers=headers) as client:
        while not stop.is_set():
            started = time.monotonic()
            try:
                status: int | None = client.get("/items/7").status_code
            except httpx.HTTPError:
                status = None
            latencies.append((time.monotonic() - started, status))


@pytest.mark.slow
def test_stalled_log_reader_loses_nothing(stalled_log_run: dict[str, Any]) -> None:
    latencies = stalled_log_run["latencies"]
    access = [
        record
        for record in stalled_log_run["records"]
        if record.get("logger") == "mlmiddleware.access"
    ]
    pids_before, pids_after = stalled_log_run["pids"]
    print(
        f"stalled log reader: {len(latencies)} requests, slowest "
        f"{max(latency for latency, _ in latencies):.2f} s with stderr undrained "
        f"for {LOG_STALL_S} s"
    )

    assert len(latencies) > 100
    assert {status for _, status in latencies} == {200}
    assert len(access) == len(latencies)
    assert pids_after == pids_before
    assert stalled_log_run["status"] == 0


# The launcher's relay queues output for a stalled reader (dropping whole lines past its
# bound), so a worker's log writes never wait for the reader.
@pytest.mark.slow
def test_stalled_log_reader_bounded_stall(stalled_log_run: dict[str, Any]) -> None:
    slowest = max(latency for latency, _ in stalled_log_run["latencies"])

    assert slowest < STALL_BOUND_S
