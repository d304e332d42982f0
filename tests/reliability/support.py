"""Processes for the reliability tests: the launcher serving ``tests.reliability.apps``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.launcher.support import children_of, kill_tree, launcher_env, wait_until
from tests.support import ROOT, free_port

APP = "tests.reliability.apps:app"
# Generous, because other test suites share the 2 CPU cores.
STARTUP_WAIT_S = 60.0


def app_env(tmp_path: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Build the environment of a server process: feedback and marker dirs under ``tmp_path``."""
    feedback_dir = tmp_path / "feedback"
    marker_dir = tmp_path / "markers"
    feedback_dir.mkdir(exist_ok=True)
    marker_dir.mkdir(exist_ok=True)
    env = launcher_env(
        {
            "PYTHONPATH": str(ROOT),
            "PYTHONDONTWRITEBYTECODE": "1",
            "RELIABILITY_FEEDBACK_DIR": str(feedback_dir),
            "RELIABILITY_MARKER_DIR": str(marker_dir),
        }
    )
    env.update(extra or {})
    return env


class Launcher:
    """``mlmiddleware run`` on a free 127.0.0.1 port, with its stderr lines collected.

    Set ``read_stderr=False`` to leave the stderr pipe undrained until ``start_reading()``,
    which plays a log collector that has stalled. ``file_size_limit`` runs the launcher
    under ``tests.reliability.limited``, which plays a full disk.
    """

    def __init__(
        self,
        tmp_path: Path,
        *,
        workers: int = 2,
        args: tuple[str, ...] = (),
        env: Mapping[str, str] | None = None,
        read_stderr: bool = True,
        file_size_limit: int | None = None,
        app: str = APP,
    ) -> None:
        self.port = free_port()
        self.workers = workers
        prefix = []
        if file_size_limit is not None:
            prefix = [sys.executable, "-m", "tests.reliability.limited", str(file_size_limit)]
        self.command = [
            *prefix,
            sys.executable,
            "-m",
            "mlmiddleware",
            "run",
            app,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(workers),
            *args,
        ]
        self.env = app_env(tmp_path, env)
        self.read_stderr = read_stderr
        self.process: subprocess.Popen[bytes] | None = None
        self.lines: list[bytes] = []
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> Launcher:
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=self.env,
            cwd=ROOT,
        )
        if self.read_stderr:
            self.start_reading()
        return self

    def start_reading(self) -> None:
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def wait_ready(self, count: int | None = None) -> list[int]:
        """Wait until ``count`` (default: all) workers logged ready; return the live worker pids."""
        expected_count = self.workers if count is None else count
        wait_until(
            lambda: len(self.ready_pids()) >= expected_count, timeout=STARTUP_WAIT_S, interval=0.1
        )
        return self.worker_pids()

    def ready_pids(self) -> list[int]:
        return [
            int(record["worker_pid"])
            for record in self.records()
            if str(record.get("message", "")).startswith("Worker ")
            and " ready after " in str(record.get("message", ""))
        ]

    def worker_pids(self) -> list[int]:
        return sorted(children_of(self.pid, zombies=False))

    def records(self) -> list[dict[str, Any]]:
        """Parse every collected stderr line; a line that is not JSON fails the test."""
        return [orjson.loads(line) for line in list(self.lines) if line.strip()]

    def stop(self, timeout: float = 30.0) -> int:
        """Send SIGTERM and wait; SIGKILL the whole tree after ``timeout``. Return the status."""
        assert self.process is not None
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_tree(self.process)
            status = self.process.wait()
        if self._reader is None and self.process.stderr is not None:
            self.start_reading()
        if self._reader is not None:
            self._reader.join(timeout=10)
        if self.process.stderr is not None:
            self.process.stderr.close()
        return status

    def kill(self) -> None:
        """Clean up after a test: SIGKILL the launcher and its descendants by pid."""
        if self.process is None:
            return
        if self.process.poll() is None:
            kill_tree(self.process)
        if self._reader is not None:
            self._reader.join(timeout=10)
        if self.process.stderr is not None:
            self.process.stderr.close()


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Return the (labels, value) pairs of the samples called ``name`` in a scrape."""
    found = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found.append((dict(sample.labels), float(sample.value)))
    return found


def scrape(url: str) -> str:
    response = httpx.get(f"{url}/metrics", timeout=20.0)
    response.raise_for_status()
    return response.text


def process_usage(pid: int) -> tuple[int, int]:
    """Return (open file descriptors, threads) of ``pid`` from /proc."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            threads = int(line.split()[1])
    return fds, threads


def poll(condition: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Poll ``condition`` until it returns a truthy value or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
