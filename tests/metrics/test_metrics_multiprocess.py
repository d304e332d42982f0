"""Multi-process mode: real uvicorn workers, one aggregated scrape, dead-worker files."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlmiddleware.metrics import mark_process_dead

HERE = Path(__file__).resolve().parent
WORKERS = 3
REQUESTS = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_startups(
    process: subprocess.Popen[str], lines: list[str], count: int, timeout: float
) -> threading.Thread:
    """Read uvicorn's log into ``lines`` until ``count`` workers report startup."""
    done = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if sum("Application startup complete" in seen for seen in lines) >= count:
                done.set()
        done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    done.wait(timeout)
    return reader


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(url, timeout=20)
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def scrape_until_total(
    url: str, total: int
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Scrape until the request count reaches ``total``.

    A worker records a request after sending its response, so the last requests can
    reach the files a moment after the client has its response.
    """
    key = ("http_requests_total", (("method", "GET"), ("route", "/work"), ("status", "200")))
    deadline = time.monotonic() + 20
    samples = scrape(url)
    while samples.get(key) != total and time.monotonic() < deadline:
        time.sleep(0.1)
        samples = scrape(url)
    return samples


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_three_workers_summed(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    command = [
        sys.executable, "-m", "uvicorn", "multiproc_app:app",
        "--app-dir", str(HERE), "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(WORKERS), "--no-access-log", "--log-level", "info",
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = wait_for_startups(process, lines, WORKERS, timeout=30)
    try:
        started = sum("Application startup complete" in line for line in lines)
        assert started == WORKERS, "".join(lines)

        base = f"http://127.0.0.1:{port}"

        def fetch(_: int) -> str:
            # A new connection per request, so the kernel spreads them over the workers.
            response = httpx.get(f"{base}/work", headers={"connection": "close"}, timeout=20)
            assert response.status_code == 200
            return response.text

        with ThreadPoolExecutor(max_workers=6) as pool:
            pids = set(pool.map(fetch, range(REQUESTS)))
        samples = scrape_until_total(f"{base}/metrics", REQUESTS)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        reader.join(timeout=10)
        assert process.stderr is not None
        process.stderr.close()

    assert len(pids) >= 2
    work = (("method", "GET"), ("route", "/work"))
    assert samples[("http_requests_total", (*work, ("status", "200")))] == REQUESTS
    assert samples[("http_request_duration_seconds_count", work)] == REQUESTS
    assert samples[("http_requests_in_progress", work)] == 0
    model = (("model", "multiproc-test"), ("service", "multiproc-test"), ("version", "v1"))
    assert samples[("model_info", model)] == 1
    assert all("pid" not in dict(labels) for _, labels in samples)


CHILD = """
from mlmiddleware.metrics.http import http_metrics
metrics = http_metrics()
metrics.requests.labels("GET", "/x", "200").inc()
metrics.in_progress.labels("GET", "/x").inc()
"""


def test_mark_process_dead_live_gauges(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    child = subprocess.run([sys.executable, "-c", CHILD], env=env, timeout=60, check=True)
    assert child.returncode == 0
    files = {path.name for path in tmp_path.iterdir()}
    pid = next(
        int(name.rsplit("_", 1)[1].removesuffix(".db"))
        for name in files
        if name.startswith("counter_")
    )
    assert f"gauge_livesum_{pid}.db" in files

    mark_process_dead(pid, str(tmp_path))

    remaining = {path.name for path in tmp_path.iterdir()}
    assert f"gauge_livesum_{pid}.db" not in remaining
    assert f"counter_{pid}.db" in remaining


def test_mark_process_dead_env_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dead = tmp_path / "gauge_livesum_4242.db"
    dead.write_bytes(b"")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    mark_process_dead(4242)

    assert not dead.exists()


def test_mark_process_dead_no_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.delenv("prometheus_multiproc_dir", raising=False)

    mark_process_dead(4242)
