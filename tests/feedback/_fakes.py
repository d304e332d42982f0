"""Deterministic fake sinks for the capture and endpoint tests."""

from __future__ import annotations

import errno
import threading
import time
from typing import Any

WAIT_TIMEOUT = 20.0


class GateSink:
    """Collect records; ``flush`` blocks while the gate is closed and signals ``entered``."""

    def __init__(self, *, open_gate: bool = True) -> None:
        self.records: list[dict[str, Any]] = []
        self.pending: list[dict[str, Any]] = []
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.closed = False
        if open_gate:
            self.gate.set()

    def write(self, record: dict[str, Any]) -> None:
        if record.get("bad"):
            raise TypeError("Type is not JSON serializable: object")
        self.pending.append(record)

    def flush(self) -> None:
        self.entered.set()
        assert self.gate.wait(WAIT_TIMEOUT), "test never opened the gate"
        self.records.extend(self.pending)
        self.pending.clear()

    def close(self) -> None:
        self.closed = True


class FailingSink:
    """Fail every flush with ENOSPC until ``recover()`` is called; then store records."""

    path = "/data/feedback/feedback-host-1-1.jsonl.active"

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.pending: list[dict[str, Any]] = []
        self.failing = True
        self.failures = 0

    def write(self, record: dict[str, Any]) -> None:
        self.pending.append(record)

    def flush(self) -> None:
        batch = self.pending
        self.pending = []
        if self.failing:
            self.failures += 1
            raise OSError(errno.ENOSPC, "No space left on device", self.path)
        self.records.extend(batch)

    def close(self) -> None:
        pass

    def recover(self) -> None:
        self.failing = False


def wait_until(condition: Any, timeout: float = WAIT_TIMEOUT) -> None:
    """Poll ``condition`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.01)
