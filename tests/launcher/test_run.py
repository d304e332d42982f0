"""Run mode end to end: real workers, real signals, a bounded local load generator."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.launcher.support import (
    APP_DIR,
    LAUNCHER,
    STARTUP_WAIT_SECONDS,
    children_of,
    free_port,
    is_alive,
    kill_tree,
    launcher_env,
    log_records,
    wait_until,
)

DRAIN_SECONDS = 0.5
GRACEFUL_TIMEOUT = 15.0


@dataclass
class Launcher:
    process: subprocess.Popen[bytes]
    port: int
    stdout: Path
    stderr: Path
    events: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def messages(self) -> list[str]:
        return [
            record["message"]
            for record in log_records(self.stderr)
            if record.get("logger") == "mlmiddleware.launcher"
        ]

    def ready_count(self) -> int:
        return sum(1 for message in self.messages() if re.match(r"Worker \d+ ready", message))

    def worker_pids(self) -> list[int]:
        return children_of(self.process.pid, zombies=False)


def start_run(
    tmp_path: Path, *args: str, app: str = "serve_app:app", env: dict[str, str] | None = None
) -> Launcher:
    port = free_port()
    stdout, stderr, events = tmp_path / "stdout", tmp_path / "stderr", tmp_path / "events"
    extra = {"LAUNCHER_TEST_EVENTS": str(events), **(env or {})}
    with stdout.open("wb") as out, stderr.open("wb") as err:
        # A session of its own, so a signal to the launcher's process group misses pytest.
        process = subprocess.Popen(
            [*LAUNCHER, "run", app, "--host", "127.0.0.1", "--port", str(port), *args],
            cwd=APP_DIR,
            env=launcher_env(extra),
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    return Launcher(process, port, stdout, stderr, events)


def wait_ready(launcher: Launcher, workers: int) -> None:
    try:
        wait_until(lambda: launcher.ready_count() >= workers, timeout=STARTUP_WAIT_SECONDS)
    except TimeoutError:
        kill_tree(launcher.process)
        raise


def get(url: str) -> httpx.Response:
    # A new connection per request, so that requests spread over the workers.
    return httpx.get(url, timeout=60.0)


def lifespan_events(launcher: Launcher) -> list[tuple[str, int]]:
    lines = launcher.events.read_text().split("\n") if launcher.events.exists() else []
    return [(line.split()[0], int(line.split()[1])) for line in lines if line]


def count_events(launcher: Launcher, name: str) -> int:
    return sum(1 for event, _ in lifespan_events(launcher) if event == name)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["sigterm-pid", "sigint-group"])
def test_run_drain_under_load(tmp_path: Path, target: str) -> None:
    launcher = start_run(
        tmp_path,
        "--workers=2",
        f"--drain-seconds={DRAIN_SECONDS}",
        f"--graceful-timeout={GRACEFUL_TIMEOUT}",
        env={"LAUNCHER_TEST_SLOW_SECONDS": "3", "LAUNCHER_TEST_BATCH_SECONDS": "1"},
    )
    wait_ready(launcher, 2)
    try:
        with ThreadPoolExecutor(max_workers=20) as pool, httpx.Client() as probe:
            slow = [pool.submit(get, f"{launcher.url}/slow") for _ in range(2)]
            batched = [pool.submit(get, f"{launcher.url}/double?x={i}") for i in range(16)]
            wait_until(lambda: count_events(launcher, "request") == 18, timeout=30)
            ready_before = probe.get(f"{launcher.url}/readyz").status_code

            signalled_at = time.monotonic()
            if target == "sigterm-pid":
                os.kill(launcher.process.pid, signal.SIGTERM)
            else:
                os.killpg(launcher.process.pid, signal.SIGINT)
            turned_at = wait_until(
                lambda: probe.get(f"{launcher.url}/readyz").status_code == 503 and time.monotonic(),
                timeout=5,
                interval=0.005,
            )
            slow_responses = [future.result() for future in slow]
            batched_responses = [future.result() for future in batched]

        status = launcher.process.wait(timeout=DRAIN_SECONDS + GRACEFUL_TIMEOUT + 10)
        exited_at = time.monotonic()
    finally:
        kill_tree(launcher.process)

    events = lifespan_events(launcher)
    startups = sorted(pid for event, pid in events if event == "startup")
    shutdowns = sorted(pid for event, pid in events if event == "shutdown")
    assert ready_before == 200
    # A bound with room for a loaded 2-core machine, against a target of 100 ms. The
    # launcher forwards the signal at once and the worker fails readiness on its next loop turn.
    assert turned_at - signalled_at < 0.5, f"readyz took {turned_at - signalled_at:.3f} s"
    assert [response.status_code for response in slow_responses] == [200, 200]
    assert [response.status_code for response in batched_responses] == [200] * 16
    assert [response.json()["y"] for response in batched_responses] == [2 * i for i in range(16)]
    assert {response.headers.get("connection") for response in slow_responses} == {"close"}
    assert len(startups) == 2
    assert shutdowns == startups
    assert status == 0
    assert exited_at - signalled_at < DRAIN_SECONDS + GRACEFUL_TIMEOUT


@pytest.mark.slow
def test_run_second_signal_fast_stop(tmp_path: Path) -> None:
    launcher = start_run(
        tmp_path,
        "--drain-seconds=0",
        "--graceful-timeout=60",
        env={"LAUNCHER_TEST_SLOW_SECONDS": "60"},
    )
    wait_ready(launcher, 1)
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(httpx.get, f"{launcher.url}/slow", timeout=90.0)
            wait_until(lambda: count_events(launcher, "request") == 1, timeout=30)
            started = time.monotonic()
            os.kill(launcher.process.pid, signal.SIGTERM)
            time.sleep(0.5)
            os.kill(launcher.process.pid, signal.SIGTERM)
            status = launcher.process.wait(timeout=30)
            elapsed = time.monotonic() - started
            try:
                outcome: int | str = pending.result().status_code
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
    finally:
        kill_tree(launcher.process)
    # Without the second signal the launcher would wait for the 60 s request, so it either
    # fails with a 5xx or loses its connection.
    assert outcome != 200, outcome
    assert elapsed < 10
    assert status in (0, 124)


def http_requests_for(metrics_text: str, route: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "http_requests_total" and sample.labels.get("route") == route:
                total += sample.value
    return total


def private_metrics_dir(launcher: Launcher) -> Path:
    for message in launcher.messages():
        if message.startswith("Set PROMETHEUS_MULTIPROC_DIR="):
            return Path(message.split("=", 1)[1].split()[0])
    raise AssertionError("the launcher did not log its private PROMETHEUS_MULTIPROC_DIR")


@pytest.mark.slow
def test_run_worker_sigkill_replaced(tmp_path: Path) -> None:
    launcher = start_run(tmp_path, "--workers=2", "--drain-seconds=0")
    wait_ready(launcher, 2)
    try:
        metrics_dir = private_metrics_dir(launcher)
        served_by = {int(get(f"{launcher.url}/pid").text) for _ in range(10)}
        victim = launcher.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: launcher.ready_count() >= 3, timeout=STARTUP_WAIT_SECONDS)
        replacement = (set(launcher.worker_pids()) - {victim}).pop()
        new_requests = 0
        while new_requests < 200:
            new_requests += 1
            if int(get(f"{launcher.url}/pid").text) not in served_by | {victim}:
                break
        metrics = get(f"{launcher.url}/metrics").text
        live_workers = launcher.worker_pids()
        os.kill(launcher.process.pid, signal.SIGTERM)
        status = launcher.process.wait(timeout=30)
    finally:
        kill_tree(launcher.process)
    assert not is_alive(victim)
    assert replacement in live_workers
    assert len(live_workers) == 2
    assert new_requests < 200
    # The killed worker's counter files stay in the multiprocess directory, so the
    # aggregated total still counts every request it served.
    assert http_requests_for(metrics, "/pid") == 10 + new_requests
    assert status == 0
    assert not metrics_dir.exists()


@pytest.mark.slow
def test_run_crash_loop_exits(tmp_path: Path) -> None:
    launcher = start_run(tmp_path, app="crash_app:app")
    try:
        status = launcher.process.wait(timeout=90)
    finally:
        kill_tree(launcher.process)
    failures = [m for m in launcher.messages() if "during startup" in m and "exited" in m]
    assert status == 70
    assert len(failures) == 5


@pytest.mark.slow
def test_run_relays_whole_lines(tmp_path: Path) -> None:
    size = 100_000
    launcher = start_run(tmp_path, "--workers=2", "--drain-seconds=0")
    wait_ready(launcher, 2)
    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            urls = [f"{launcher.url}/log?size={size}&tag=TAG{i:03d}-" for i in range(40)]
            statuses = [response.status_code for response in pool.map(get, urls)]
        os.kill(launcher.process.pid, signal.SIGTERM)
        launcher.process.wait(timeout=30)
    finally:
        kill_tree(launcher.process)
    lines = [line for line in launcher.stdout.read_bytes().split(b"\n") if line]
    tagged = [line for line in lines if line.startswith(b"TAG")]
    broken = [line[:12] for line in tagged if line != line[:7] + b"x" * size]
    assert statuses == [200] * 40
    assert len(tagged) == 40
    assert broken == []
    assert sorted(line[:7] for line in tagged) == [f"TAG{i:03d}-".encode() for i in range(40)]


@pytest.mark.slow
def test_run_blocked_worker_replaced(tmp_path: Path) -> None:
    launcher = start_run(tmp_path, "--drain-seconds=0", "--worker-timeout=2")
    wait_ready(launcher, 1)
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            blocked = pool.submit(httpx.get, f"{launcher.url}/block?seconds=60", timeout=90.0)
            wait_until(lambda: launcher.ready_count() >= 2, timeout=STARTUP_WAIT_SECONDS)
            with pytest.raises(httpx.HTTPError):
                blocked.result()
        served = get(f"{launcher.url}/pid").status_code
        os.kill(launcher.process.pid, signal.SIGTERM)
        status = launcher.process.wait(timeout=30)
    finally:
        kill_tree(launcher.process)
    timeouts = [message for message in launcher.messages() if "sent no heartbeat" in message]
    assert len(timeouts) == 1
    assert served == 200
    assert status == 0


@pytest.mark.slow
def test_run_startup_timeout_kills(tmp_path: Path) -> None:
    launcher = start_run(
        tmp_path, "--startup-timeout=1", env={"LAUNCHER_TEST_IMPORT_SECONDS": "60"}
    )
    try:
        wait_until(
            lambda: any("startup timeout" in message for message in launcher.messages()),
            timeout=STARTUP_WAIT_SECONDS,
        )
        # The killed worker must be reaped and logged before the stop signal, or the
        # launcher treats its exit as part of the shutdown.
        wait_until(lambda: any("during startup" in m for m in launcher.messages()), 20)
        wait_until(lambda: launcher.ready_count() == 0 and len(launcher.worker_pids()) == 1, 20)
        os.kill(launcher.process.pid, signal.SIGTERM)
        status = launcher.process.wait(timeout=30)
    finally:
        kill_tree(launcher.process)
    restarts = [message for message in launcher.messages() if "during startup" in message]
    assert len(restarts) >= 1
    # The replacement was still importing the app, so SIGTERM ended it before any request.
    assert status == 0


def test_run_unknown_config_key(tmp_path: Path) -> None:
    config = tmp_path / "launcher.toml"
    config.write_text("workers = 2\nwokers = 3\n")
    result = subprocess.run(
        [*LAUNCHER, "run", "serve_app:app", "--config", str(config)],
        cwd=APP_DIR,
        env=launcher_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "unknown key 'wokers'" in result.stderr


def test_run_port_in_use(tmp_path: Path) -> None:
    with __import__("socket").socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [*LAUNCHER, "run", "serve_app:app", "--host", "127.0.0.1", "--port", str(port)],
            cwd=APP_DIR,
            env=launcher_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert f"Cannot listen on 127.0.0.1:{port}" in result.stderr
