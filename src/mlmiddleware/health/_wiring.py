"""Wire the health probes into ``instrument()``."""

from __future__ import annotations

from typing import Any

from mlmiddleware._stack import StackBuilder
from mlmiddleware.health.app import OPEN_INFERENCE_FAIL_STATUS, ProbeEndpoint
from mlmiddleware.health.checks import HealthChecks
from mlmiddleware.health.paths import HealthPaths

__all__ = ["wire_health"]


def wire_health(builder: StackBuilder, checks: Any, *, paths: HealthPaths | None) -> None:
    """Mount the probe routes, set ``builder.health`` and tie the loop monitor to lifespan.

    ``checks`` is ``True`` for a fresh ``HealthChecks`` or a ``HealthChecks`` to use.
    """
    health = _resolve_checks(checks)
    if paths is None:
        paths = HealthPaths()
    elif not isinstance(paths, HealthPaths):
        raise TypeError(f"invalid health_paths={paths!r}: pass a HealthPaths or None")
    builder.health = health
    lifecycle = builder.lifecycle

    if paths.live is not None:
        builder.add_route(paths.live, ProbeEndpoint(health, kind="liveness"), quiet=True)
    if paths.ready is not None:
        ready = ProbeEndpoint(health, kind="readiness", lifecycle=lifecycle)
        builder.add_route(paths.ready, ready, quiet=True)
    if paths.startup is not None:
        started = ProbeEndpoint(health, kind="startup", lifecycle=lifecycle)
        builder.add_route(paths.startup, started, quiet=True)
    if paths.open_inference_aliases:
        _mount_open_inference_aliases(builder, health)

    async def start_loop_monitor() -> None:
        await health.start_loop_monitor(is_active=lambda: lifecycle.startup_complete)

    builder.startup_hooks.append(start_loop_monitor)
    builder.shutdown_hooks.append(health.stop_loop_monitor)


def _mount_open_inference_aliases(builder: StackBuilder, health: HealthChecks) -> None:
    live = ProbeEndpoint(health, kind="liveness", fail_status=OPEN_INFERENCE_FAIL_STATUS)
    ready = ProbeEndpoint(
        health,
        kind="readiness",
        lifecycle=builder.lifecycle,
        fail_status=OPEN_INFERENCE_FAIL_STATUS,
    )
    builder.add_route("/v2/health/live", live, quiet=True)
    builder.add_route("/v2/health/ready", ready, quiet=True)


def _resolve_checks(checks: Any) -> HealthChecks:
    if checks is True:
        return HealthChecks()
    if isinstance(checks, HealthChecks):
        return checks
    raise TypeError(
        f"invalid health={checks!r}: pass True, a HealthChecks, or False for no probe routes"
    )
