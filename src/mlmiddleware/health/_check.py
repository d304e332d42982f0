"""One registered health check: its cache, single-flight run, timeout and state log."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["CheckResult", "InlineCheck", "RegisteredCheck", "validate_timeout"]

logger = logging.getLogger("mlmiddleware.health")

CheckStatus = Literal["ok", "fail"]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """Outcome of one check run, as the probe body reports it."""

    status: CheckStatus
    duration_ms: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "duration_ms": self.duration_ms, "error": self.error}


class _StateLog:
    """Log a check's transitions: one WARNING when it starts failing, one INFO on recovery."""

    __slots__ = ("_failing", "kind", "name")

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self.kind = kind
        self._failing = False

    def record(self, result: CheckResult) -> None:
        if not result.ok and not self._failing:
            self._failing = True
            logger.warning("Health check %s (%s) failed: %s", self.name, self.kind, result.error)
        elif result.ok and self._failing:
            self._failing = False
            logger.info("Health check %s (%s) recovered", self.name, self.kind)


class InlineCheck:
    """A built-in check cheap enough to run on the event loop at every probe.

    ``error_of`` returns ``None`` when healthy, else the reason. It must not block: the
    built-in checks only read state (loop lag, a model worker's progress).
    """

    def __init__(
        self, name: str, error_of: Callable[[], str | None], *, kind: str, critical: bool = True
    ) -> None:
        self.name = name
        self.kind = kind
        self.critical = critical
        self._error_of = error_of
        self._state_log = _StateLog(name, kind)

    async def result(self) -> CheckResult:
        started = time.perf_counter()
        try:
            error = self._error_of()
        except Exception as exc:
            error = _describe_exception(exc)

        result = CheckResult("ok" if error is None else "fail", _elapsed_ms(started), error)
        self._state_log.record(result)
        return result


class RegisteredCheck:
    """A user check: cached for ``cache_seconds``, run by one probe at a time, bounded in time.

    Probes that miss the cache while a run is in flight await that same run, so a probe
    storm runs the check at most once per cache interval. A sync check runs in its own
    daemon thread, so a check that hangs forever neither blocks the event loop nor keeps
    the process from exiting. While such a thread has not returned, later runs fail at
    once as timed out and start no new thread, so at most one thread per check is stuck.
    """

    def __init__(
        self,
        name: str,
        check: Callable[[], Any],
        *,
        kind: str,
        timeout: float,
        critical: bool,
        cache_seconds: float,
    ) -> None:
        self.name = name
        self.kind = kind
        self.critical = critical
        self.timeout = timeout
        self.cache_seconds = cache_seconds
        self._check = check
        self._is_async = _is_async_callable(check)
        self._state_log = _StateLog(name, kind)
        self._cached: CheckResult | None = None
        self._cached_at = 0.0
        self._in_flight: asyncio.Task[CheckResult] | None = None
        self._thread_running = False

    async def result(self) -> CheckResult:
        cached = self._cached
        if cached is not None and time.monotonic() - self._cached_at < self.cache_seconds:
            return cached

        loop = asyncio.get_running_loop()
        task = self._in_flight
        # A task of another event loop (an earlier server in the same process) is never shared.
        if task is None or task.done() or task.get_loop() is not loop:
            task = loop.create_task(self._run_and_store())
            self._in_flight = task

        # The shield keeps one disconnected probe from cancelling the run the others share.
        return await asyncio.shield(task)

    async def _run_and_store(self) -> CheckResult:
        result = await self._run()
        self._cached = result
        self._cached_at = time.monotonic()
        self._state_log.record(result)
        return result

    async def _run(self) -> CheckResult:
        started = time.perf_counter()
        if self._thread_running:
            error = f"{self._timeout_message()} (its previous call has not returned yet)"
            return CheckResult("fail", _elapsed_ms(started), error)

        call = asyncio.ensure_future(
            self._call_async() if self._is_async else self._call_in_thread()
        )
        try:
            done, _ = await asyncio.wait({call}, timeout=self.timeout)
        except asyncio.CancelledError:
            call.cancel()
            raise

        if not done:
            call.cancel()
            return CheckResult("fail", _elapsed_ms(started), self._timeout_message())

        try:
            value = call.result()
        except Exception as exc:
            return CheckResult("fail", _elapsed_ms(started), _describe_exception(exc))
        return _interpret(value, _elapsed_ms(started))

    async def _call_async(self) -> Any:
        return await self._check()

    def _call_in_thread(self) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def target() -> None:
            value: Any = None
            error: Exception | None = None
            try:
                value = self._check()
            except Exception as exc:
                error = exc
            finally:
                # Cleared before the result reaches the loop, so the next run never finds
                # a call that has already returned still marked as running.
                self._thread_running = False
            _deliver(loop, future, value, error)

        self._thread_running = True
        thread = threading.Thread(
            target=target, name=f"mlmiddleware-health-{self.name}", daemon=True
        )
        thread.start()
        return future

    def _timeout_message(self) -> str:
        return f"timed out after {float(self.timeout)!r} s"


def validate_timeout(name: str, timeout: float) -> float:
    """Return ``timeout`` as a float, or raise ``ValueError`` unless it is finite and > 0."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise ValueError(f"invalid timeout={timeout!r} for check {name!r}: use seconds > 0")
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"invalid timeout={timeout!r} for check {name!r}: use seconds > 0")
    return float(timeout)


def _deliver(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    value: Any,
    error: Exception | None,
) -> None:
    def settle() -> None:
        # The run may have timed out and cancelled the future already.
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    # A RuntimeError means the loop closed while the check ran, so no probe awaits it.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(settle)


def _interpret(value: Any, duration_ms: float) -> CheckResult:
    if value is True:
        return CheckResult("ok", duration_ms)
    if value is False:
        return CheckResult("fail", duration_ms, "check returned False")
    return CheckResult("fail", duration_ms, f"check returned {value!r}, expected True or False")


def _describe_exception(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _is_async_callable(check: Callable[[], Any]) -> bool:
    if inspect.iscoroutinefunction(check):
        return True
    call = getattr(check, "__call__", None)  # noqa: B004 - an object with an async __call__
    return inspect.iscoroutinefunction(call)


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)
