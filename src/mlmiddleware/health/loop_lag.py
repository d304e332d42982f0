"""Event-loop lag monitor: the built-in ``event_loop`` liveness check.

A task on the server's event loop sleeps ``interval_seconds`` again and again and
measures how late each wake-up is. A wake-up later than ``max_lag_seconds`` means
something blocked the loop (sync inference or CPU work in an ``async def`` route), and
liveness then fails for ``window_seconds`` after the loop unblocks. While the loop is
blocked nothing on it can respond, so the kubelet's probe times out and counts as failed
anyway. The window makes the stall visible to the next probes too, so stalls that repeat
faster than the window keep liveness failing and get the container restarted, while a
single stall costs one or two failed probes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable

__all__ = ["LoopLagMonitor"]

logger = logging.getLogger("mlmiddleware.health")


class LoopLagMonitor:
    """Measure event-loop lag from a sleeping task's late wake-ups.

    ``is_active`` (default: always) returns whether lag counts yet. The health wiring passes
    "application startup has finished", so a startup hook that blocks the loop (a model
    warmup on the loop) does not fail liveness once the server is up.
    """

    def __init__(
        self,
        *,
        max_lag_seconds: float,
        window_seconds: float,
        interval_seconds: float = 0.1,
        is_active: Callable[[], bool] | None = None,
    ) -> None:
        _require_positive("max_lag_seconds", max_lag_seconds)
        _require_positive("window_seconds", window_seconds)
        _require_positive("interval_seconds", interval_seconds)
        self.max_lag_seconds = float(max_lag_seconds)
        self.window_seconds = float(window_seconds)
        self.interval_seconds = float(interval_seconds)
        self._is_active = is_active or _always
        self._task: asyncio.Task[None] | None = None
        # Monotonic time by which the sleeping task should wake, and whether that sleep counts.
        self._deadline = 0.0
        self._deadline_counts = False
        self._last_block_end: float | None = None
        self._last_block_seconds = 0.0
        self.last_lag_seconds = 0.0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start measuring on the running event loop; a second call does nothing."""
        if self.running:
            return
        self._deadline = time.monotonic() + self.interval_seconds
        self._task = asyncio.get_running_loop().create_task(self._measure())
        logger.info(
            "Event-loop lag monitor started (max lag %.3f s, window %.1f s)",
            self.max_lag_seconds,
            self.window_seconds,
        )

    async def stop(self) -> None:
        """Stop measuring and wait for the task to end."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def lag_error(self) -> str | None:
        """Return why liveness fails on loop lag, or ``None`` while the loop is responsive."""
        now = time.monotonic()

        # The probe can run before the monitor task wakes up after a block, so an overdue
        # wake-up counts as lag too.
        overdue = now - self._deadline
        if self._deadline_counts and overdue > self.max_lag_seconds:
            return (
                f"event loop blocked for {overdue:.3f} s, over the {self.max_lag_seconds!r} s limit"
            )

        block_end = self._last_block_end
        if block_end is not None and now - block_end <= self.window_seconds:
            return (
                f"event loop was blocked for {self._last_block_seconds:.3f} s "
                f"{now - block_end:.1f} s ago, over the {self.max_lag_seconds!r} s limit"
            )
        return None

    async def _measure(self) -> None:
        while True:
            counts = self._is_active()
            self._deadline = time.monotonic() + self.interval_seconds
            self._deadline_counts = counts
            await asyncio.sleep(self.interval_seconds)

            woke = time.monotonic()
            lag = max(woke - self._deadline, 0.0)
            self.last_lag_seconds = lag
            if counts and lag > self.max_lag_seconds:
                self._last_block_end = woke
                self._last_block_seconds = lag


def _always() -> bool:
    return True


def _require_positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"invalid {name}={value!r}: use seconds > 0")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"invalid {name}={value!r}: use seconds > 0")
