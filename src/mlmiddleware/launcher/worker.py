"""One uvicorn worker process of ``mlmiddleware run``, started by the supervisor.

Run as ``python -m mlmiddleware.launcher.worker SETTINGS_JSON``. The worker serves the
app on the listening socket it inherited and drains on SIGTERM or SIGINT. It writes ``R``
to a notify pipe when startup is complete and ``H`` once a second afterwards, the liveness
heartbeat that the supervisor watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Generator
from dataclasses import dataclass
from types import FrameType
from typing import Any

import uvicorn

from mlmiddleware._lifecycle import begin_shutdown
from mlmiddleware.jsonlog import configure_logging
from mlmiddleware.launcher.reaper import set_parent_death_signal
from mlmiddleware.launcher.signals import signal_name

__all__ = ["DrainingServer", "WorkerSettings", "main"]

logger = logging.getLogger("mlmiddleware.launcher")

READY = b"R"
HEARTBEAT = b"H"
# Share of the graceful timeout that in-flight requests get; the rest is left for
# lifespan shutdown (batcher drain, feedback flush) before the supervisor's SIGKILL.
_REQUEST_SHARE_OF_GRACEFUL_TIMEOUT = 0.8
# Signals a worker logs and ignores unless the app installs its own handler for them,
# so a forwarded SIGHUP or SIGUSR1 does not kill a worker that has no use for it.
_TOLERATED_SIGNALS: tuple[int, ...] = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
_STOP_SIGNALS: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


@dataclass(frozen=True)
class WorkerSettings:
    """Settings that the supervisor passes to a worker, as JSON on its command line."""

    app: str
    factory: bool
    listen_fd: int
    notify_fd: int
    drain_seconds: float
    graceful_timeout: float
    log_level: str
    parent_pid: int
    index: int

    def to_json(self) -> str:
        """Encode the settings for the worker's command line."""
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> WorkerSettings:
        """Decode settings written by ``to_json``."""
        data: dict[str, Any] = json.loads(text)
        return cls(**data)


class DrainingServer(uvicorn.Server):
    """A uvicorn server that fails readiness first and stops accepting only after a drain.

    The first SIGTERM or SIGINT calls ``begin_shutdown()`` (readiness turns 503 while all
    routes keep serving) and schedules uvicorn's graceful shutdown ``drain_seconds`` later.
    A second SIGTERM or SIGINT, or a SIGQUIT, forces a fast stop: uvicorn stops waiting for
    in-flight requests and skips lifespan shutdown. Unlike ``uvicorn.Server``, it does not
    re-raise the signal after a graceful shutdown, so a clean drain exits with status 0.
    """

    def __init__(self, config: uvicorn.Config, *, drain_seconds: float, notify_fd: int) -> None:
        super().__init__(config)
        self.drain_seconds = drain_seconds
        self.notify_fd = notify_fd
        self._stop_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        previous: dict[int, Any] = {}
        for sig in _STOP_SIGNALS:
            previous[sig] = signal.signal(sig, self.handle_exit)
        for sig in _TOLERATED_SIGNALS:
            previous[sig] = signal.signal(sig, self._log_tolerated)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Logging and begin_shutdown() take locks, so they run on the event loop rather
        # than inside the signal handler, which may interrupt a logging call.
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._on_stop_signal, sig)
        else:
            self._on_stop_signal(sig)

    def _on_stop_signal(self, sig: int) -> None:
        if sig == signal.SIGQUIT or self._stop_at is not None:
            logger.warning("Received %s during shutdown, forcing a fast stop", signal_name(sig))
            self.force_exit = True
            self.should_exit = True
            return

        begin_shutdown()
        self._stop_at = time.monotonic() + self.drain_seconds
        logger.info(
            "Received %s, draining for %.1f s before closing the listener",
            signal_name(sig),
            self.drain_seconds,
            extra={"signal": signal_name(sig), "drain_seconds": self.drain_seconds},
        )
        if self.drain_seconds <= 0:
            self.should_exit = True

    def _log_tolerated(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(
                logger.info, "Received %s; no handler installed, ignoring it", signal_name(sig)
            )

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._notify(READY)

    async def on_tick(self, counter: int) -> bool:
        if self._stop_at is not None and time.monotonic() >= self._stop_at:
            self.should_exit = True
        if counter % 10 == 0:
            self._notify(HEARTBEAT)
        return await super().on_tick(counter)

    def _notify(self, message: bytes) -> None:
        with contextlib.suppress(BlockingIOError, BrokenPipeError):
            os.write(self.notify_fd, message)


def run_worker(settings: WorkerSettings) -> int:
    """Serve the app on the inherited socket until a stop signal; return the exit status."""
    configure_logging(settings.log_level.upper(), static_fields={"worker": settings.index})
    set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != settings.parent_pid:
        logger.error("Launcher pid %d exited before worker startup, exiting", settings.parent_pid)
        return 1

    os.set_blocking(settings.notify_fd, False)
    listener = socket.socket(fileno=settings.listen_fd)
    config = uvicorn.Config(
        settings.app,
        factory=settings.factory,
        log_config=None,
        log_level=settings.log_level.lower(),
        # AccessLogMiddleware of instrument() writes the access log as JSON.
        access_log=False,
        timeout_graceful_shutdown=max(
            int(settings.graceful_timeout * _REQUEST_SHARE_OF_GRACEFUL_TIMEOUT), 1
        ),
    )
    server = DrainingServer(
        config, drain_seconds=settings.drain_seconds, notify_fd=settings.notify_fd
    )
    logger.info("Worker %d starting, pid=%d", settings.index, os.getpid())
    server.run(sockets=[listener])
    if not server.started:
        # uvicorn returns here without raising when the app cannot be imported.
        return 3
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the worker process."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m mlmiddleware.launcher.worker SETTINGS_JSON", file=sys.stderr)
        return 2
    return run_worker(WorkerSettings.from_json(args[0]))


if __name__ == "__main__":
    sys.exit(main())
