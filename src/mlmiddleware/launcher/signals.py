"""Signal capture for the launcher's select loop: each delivered signal becomes one byte."""

from __future__ import annotations

import os
import signal
from types import FrameType
from typing import Any

__all__ = ["FORWARDED_SIGNALS", "STOP_SIGNALS", "SignalInbox", "signal_name"]

# Signals the launcher passes on to its workers (run mode) or its child (exec mode).
FORWARDED_SIGNALS: tuple[signal.Signals, ...] = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
)
# Signals that start a shutdown; a second one during shutdown forces a fast stop.
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


def signal_name(sig: int) -> str:
    """Return the name of signal number ``sig`` (``SIGTERM``), or ``signal N`` if unknown."""
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _ignore_in_python(sig: int, frame: FrameType | None) -> None:
    """Keep the default action away; the wakeup byte already carries the signal number."""


class SignalInbox:
    """Deliver signals as bytes on a non-blocking pipe that a select loop can wait on.

    CPython's C-level handler writes the signal number to the wakeup fd on every delivery,
    so no signal is lost between two ``select`` calls, and the Python-level handler can be
    a no-op. Use it as a context manager: leaving it restores the previous handlers.
    """

    def __init__(self, signals: tuple[int, ...]) -> None:
        self.signals = tuple(dict.fromkeys((*signals, signal.SIGCHLD)))
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._previous_handlers: dict[int, Any] = {}
        self._previous_wakeup_fd = -1

    def fileno(self) -> int:
        """Return the read end of the wakeup pipe, for ``select``."""
        return self._read_fd

    def __enter__(self) -> SignalInbox:
        for sig in self.signals:
            self._previous_handlers[sig] = signal.signal(sig, _ignore_in_python)
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        return self

    def __exit__(self, *exc_info: object) -> None:
        signal.set_wakeup_fd(self._previous_wakeup_fd)
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        os.close(self._read_fd)
        os.close(self._write_fd)

    def drain(self) -> list[int]:
        """Return the signal numbers delivered since the last call, in order of arrival."""
        received: list[int] = []
        while True:
            try:
                data = os.read(self._read_fd, 4096)
            except BlockingIOError:
                return received
            if not data:
                return received
            received.extend(data)
