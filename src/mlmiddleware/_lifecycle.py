"""Process-wide shutdown state and the per-app startup flag that readiness reads."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

__all__ = ["AppLifecycle", "begin_shutdown", "is_shutting_down", "on_shutdown_begun"]

logger = logging.getLogger("mlmiddleware.lifecycle")

_lock = threading.Lock()
_shutting_down = threading.Event()
_listeners: list[Callable[[], None]] = []


def begin_shutdown() -> None:
    """Start draining every instrumented app in this process.

    Readiness turns to 503 ``draining`` at once while every other route keeps serving.
    The launcher calls it in each worker on SIGTERM, and lifespan shutdown calls it too,
    so it is idempotent and safe to call from a signal handler's thread.
    """
    with _lock:
        if _shutting_down.is_set():
            return
        _shutting_down.set()
        listeners = list(_listeners)

    logger.info("Shutdown begun, readiness now fails")
    for listener in listeners:
        listener()


def is_shutting_down() -> bool:
    """Return ``True`` once ``begin_shutdown()`` has been called in this process."""
    return _shutting_down.is_set()


def on_shutdown_begun(listener: Callable[[], None]) -> None:
    """Call ``listener`` (without arguments) when shutdown begins, or now if it has."""
    with _lock:
        if not _shutting_down.is_set():
            _listeners.append(listener)
            return
    listener()


def _reset_for_tests() -> None:
    with _lock:
        _shutting_down.clear()
        _listeners.clear()


class AppLifecycle:
    """Startup state of one instrumented app: set once lifespan startup has finished."""

    __slots__ = ("startup_complete",)

    def __init__(self) -> None:
        self.startup_complete = False
