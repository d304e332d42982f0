"""``HealthChecks``: the registry of liveness, readiness and startup checks."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from mlmiddleware._lifecycle import is_shutting_down
from mlmiddleware.health._check import CheckResult, InlineCheck, RegisteredCheck, validate_timeout
from mlmiddleware.health.loop_lag import LoopLagMonitor

__all__ = ["CheckKind", "HealthChecks", "ModelWorker", "ProbeReport", "ProbeStatus"]

CheckKind = Literal["liveness", "readiness", "startup"]
ProbeStatus = Literal["ok", "fail", "draining"]

_KINDS: tuple[CheckKind, ...] = ("liveness", "readiness", "startup")
EVENT_LOOP_CHECK = "event_loop"
STARTUP_COMPLETE_CHECK = "startup_complete"
_RESERVED_NAMES = frozenset({EVENT_LOOP_CHECK, STARTUP_COMPLETE_CHECK})
_NOT_STARTED = (
    "application startup has not finished (lifespan startup and startup hooks such as model warmup)"
)


@runtime_checkable
class ModelWorker(Protocol):
    """A model worker the probes watch, such as a ``Batcher``'s inference thread."""

    name: str
    last_progress: float
    queue_depth: int

    def liveness_error(self) -> str | None:
        """Return why the worker is stuck or dead, or ``None`` while it makes progress."""
        ...

    def readiness_error(self) -> str | None:
        """Return why the worker cannot take requests yet, or ``None`` once warmed up."""
        ...


@dataclass(frozen=True, slots=True)
class ProbeReport:
    """Outcome of one probe: the overall status and the result of every check."""

    status: ProbeStatus
    checks: dict[str, CheckResult] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        checks = {name: result.to_json() for name, result in self.checks.items()}
        return {"status": self.status, "checks": checks}


_Check = RegisteredCheck | InlineCheck


class HealthChecks:
    """Registry of health checks, evaluated by the probe routes.

    ``cache_seconds`` is how long a check's result is reused: concurrent probes that miss
    the cache share one run. The built-in ``event_loop`` liveness check fails while the
    event loop lags more than ``max_loop_lag_seconds``, and for ``loop_lag_window_seconds``
    after that (see ``LoopLagMonitor``). Readiness also runs the startup checks, because a
    pod that has not started is not ready either.
    """

    def __init__(
        self,
        *,
        cache_seconds: float = 1.0,
        max_loop_lag_seconds: float = 2.0,
        loop_lag_window_seconds: float = 10.0,
    ) -> None:
        if isinstance(cache_seconds, bool) or not isinstance(cache_seconds, int | float):
            raise ValueError(f"invalid cache_seconds={cache_seconds!r}: use seconds >= 0")
        if not math.isfinite(cache_seconds) or cache_seconds < 0:
            raise ValueError(f"invalid cache_seconds={cache_seconds!r}: use seconds >= 0")
        self.cache_seconds = float(cache_seconds)
        self.max_loop_lag_seconds = max_loop_lag_seconds
        self.loop_lag_window_seconds = loop_lag_window_seconds
        # Build a monitor now so that invalid lag settings fail here, not at server startup.
        self.loop_monitor = self._new_loop_monitor(None)
        self._checks: dict[CheckKind, list[_Check]] = {kind: [] for kind in _KINDS}
        self._names: set[str] = set()
        self._workers: list[ModelWorker] = []

    def add(
        self,
        name: str,
        check: Callable[[], Any],
        *,
        kind: CheckKind = "readiness",
        timeout: float = 1.0,
        critical: bool = True,
    ) -> None:
        """Register ``check`` under ``name`` for the probe of ``kind``.

        ``check`` is a sync or async callable without arguments that returns ``True``
        (healthy) or ``False``, or raises. Sync checks run in a thread, off the event loop.
        A run longer than ``timeout`` seconds fails. A check with ``critical=False`` is
        reported in the probe body but never changes the probe's status.
        """
        self._claim_name(name)
        if kind not in _KINDS:
            raise ValueError(f"invalid kind={kind!r} for check {name!r}: use one of {_KINDS}")
        if not callable(check):
            raise TypeError(f"check {name!r} is {check!r}: pass a callable without arguments")
        timeout = validate_timeout(name, timeout)

        registered = RegisteredCheck(
            name,
            check,
            kind=kind,
            timeout=timeout,
            critical=bool(critical),
            cache_seconds=self.cache_seconds,
        )
        self._checks[kind].append(registered)
        self._names.add(name)

    def add_worker(self, worker: ModelWorker) -> None:
        """Watch ``worker``: its liveness error fails liveness, its readiness error readiness.

        Both show up in the probe bodies as ``worker:<name>``.
        """
        if not isinstance(worker, ModelWorker):
            raise TypeError(
                f"worker {worker!r} does not follow the ModelWorker protocol: it needs name, "
                "last_progress, queue_depth, liveness_error() and readiness_error()"
            )
        name = f"worker:{worker.name}"
        self._claim_name(name)

        self._checks["liveness"].append(InlineCheck(name, worker.liveness_error, kind="liveness"))
        self._checks["readiness"].append(
            InlineCheck(name, worker.readiness_error, kind="readiness")
        )
        self._names.add(name)
        self._workers.append(worker)

    @property
    def workers(self) -> Sequence[ModelWorker]:
        return tuple(self._workers)

    async def start_loop_monitor(self, *, is_active: Callable[[], bool] | None = None) -> None:
        """Start the event-loop lag monitor on the running loop (a lifespan startup hook)."""
        if self.loop_monitor.running:
            return
        self.loop_monitor = self._new_loop_monitor(is_active)
        await self.loop_monitor.start()

    async def stop_loop_monitor(self) -> None:
        """Stop the event-loop lag monitor (a lifespan shutdown hook)."""
        await self.loop_monitor.stop()

    async def run(self, kind: CheckKind, *, startup_complete: bool = True) -> ProbeReport:
        """Evaluate the probe of ``kind``.

        Readiness reports ``draining`` as soon as shutdown has begun, without running any
        check. Readiness and startup fail until ``startup_complete``.
        """
        if kind == "readiness" and is_shutting_down():
            return ProbeReport("draining")

        checks = self._checks_for(kind)
        results = await asyncio.gather(*(check.result() for check in checks))
        report = {check.name: result for check, result in zip(checks, results, strict=True)}
        healthy = all(
            result.ok for check, result in zip(checks, results, strict=True) if check.critical
        )

        if kind != "liveness":
            report[STARTUP_COMPLETE_CHECK] = CheckResult(
                "ok" if startup_complete else "fail",
                0.0,
                None if startup_complete else _NOT_STARTED,
            )
            healthy = healthy and startup_complete
        return ProbeReport("ok" if healthy else "fail", report)

    def _checks_for(self, kind: CheckKind) -> list[_Check]:
        if kind == "liveness":
            checks = list(self._checks["liveness"])
            if self.loop_monitor.running:
                checks.insert(0, self._event_loop_check)
            return checks
        if kind == "readiness":
            return self._checks["startup"] + self._checks["readiness"]
        return list(self._checks["startup"])

    def _claim_name(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"invalid check name {name!r}: use a non-empty string")
        if name in _RESERVED_NAMES:
            raise ValueError(f"check name {name!r} is reserved for a built-in check: rename it")
        if name in self._names:
            raise ValueError(f"check name {name!r} is registered twice: give each a unique name")

    def _new_loop_monitor(self, is_active: Callable[[], bool] | None) -> LoopLagMonitor:
        monitor = LoopLagMonitor(
            max_lag_seconds=self.max_loop_lag_seconds,
            window_seconds=self.loop_lag_window_seconds,
            is_active=is_active,
        )
        self._event_loop_check = InlineCheck(EVENT_LOOP_CHECK, monitor.lag_error, kind="liveness")
        return monitor
