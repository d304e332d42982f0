"""Test support: a real uvicorn server in a subprocess, on a free 127.0.0.1 port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_S = 30.0


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """Run ``python -m uvicorn MODULE:ATTR`` on 127.0.0.1 and collect its stderr lines.

    ``app_dir`` is put on the import path, so test apps live next to their tests. The
    server is stopped by pid with SIGTERM, then SIGKILL after ``stop_timeout``.
    """

    def __init__(
        self,
        target: str,
        *,
        app_dir: str | Path | None = None,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.target = target
        self.app_dir = Path(app_dir) if app_dir is not None else None
        self.args = args
        self.env = env or {}
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.stderr_lines: list[bytes] = []
        self._reader: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        command = [sys.executable, "-m", "uvicorn", self.target, "--host", "127.0.0.1"]
        command += ["--port", str(self.port), *self.args]
        if self.app_dir is not None:
            command += ["--app-dir", str(self.app_dir)]
        env = {**os.environ, "PYTHONPATH": str(ROOT), **self.env}
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT
        )
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        self.wait_until_listening()
        return self

    def _read_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr_lines.append(line)

    def wait_until_listening(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                output = b"".join(self.stderr_lines).decode(errors="replace")
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{output}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(
            f"server on port {self.port} did not listen within {STARTUP_TIMEOUT_S} s"
        )

    def stop(self, timeout: float = 15.0) -> int | None:
        """Send SIGTERM, wait, then SIGKILL; return the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self.process.stderr is not None:
            self.process.stderr.close()
        return self.process.returncode

    def records(self) -> list[dict[str, Any]]:
        """Parse every stderr line as JSON; a line that does not parse fails the test."""
        return [orjson.loads(line) for line in self.stderr_lines if line.strip()]

    def wait_for_record(self, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
        """Wait until a parsed stderr record satisfies ``predicate`` and return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.records():
                if predicate(record):
                    return record
            time.sleep(0.02)
        raise TimeoutError("no matching log record within the timeout")
