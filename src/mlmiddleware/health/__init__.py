"""Kubernetes health probes: ``/livez``, ``/readyz``, ``/startupz`` and draining.

``instrument(app, health=checks)`` mounts the probe routes. Liveness covers the web
server (event-loop lag) and every model worker's progress. Readiness turns on once
application startup has finished and turns off the moment ``begin_shutdown()`` is
called.
"""

from mlmiddleware._lifecycle import begin_shutdown, is_shutting_down
from mlmiddleware.health._check import CheckResult
from mlmiddleware.health.app import ProbeEndpoint
from mlmiddleware.health.checks import CheckKind, HealthChecks, ModelWorker, ProbeReport
from mlmiddleware.health.loop_lag import LoopLagMonitor
from mlmiddleware.health.paths import HealthPaths

__all__ = [
    "CheckKind",
    "CheckResult",
    "HealthChecks",
    "HealthPaths",
    "LoopLagMonitor",
    "ModelWorker",
    "ProbeEndpoint",
    "ProbeReport",
    "begin_shutdown",
    "is_shutting_down",
]
