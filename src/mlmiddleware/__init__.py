"""Production middleware for ASGI model servers.

``instrument(app)`` wraps an existing Starlette, FastAPI or bare ASGI app with JSON logs,
a request context, an access log, Prometheus metrics, health probes, a body size limit,
feedback capture and batcher lifecycle management.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mlmiddleware._context import RequestContext, get_request_context, get_request_id
from mlmiddleware._lifecycle import begin_shutdown, is_shutting_down

if TYPE_CHECKING:
    from mlmiddleware._instrument import instrument
    from mlmiddleware.batching import Batcher, QueueFull, ShuttingDown, batching_endpoint
    from mlmiddleware.feedback import (
        CallableFeedbackSink,
        JsonlFeedbackSink,
        LoggingFeedbackSink,
    )
    from mlmiddleware.health import HealthChecks, HealthPaths
    from mlmiddleware.jsonlog import JsonFormatter, JsonHandler, configure_logging
    from mlmiddleware.metrics import mark_process_dead, metrics_app, set_model_info
    from mlmiddleware.middleware.access_log import AccessLogMiddleware
    from mlmiddleware.middleware.body_limit import BodySizeLimitMiddleware
    from mlmiddleware.middleware.context import RequestContextMiddleware
    from mlmiddleware.middleware.prometheus import PrometheusMiddleware

__all__ = [
    "AccessLogMiddleware",
    "Batcher",
    "BodySizeLimitMiddleware",
    "CallableFeedbackSink",
    "HealthChecks",
    "HealthPaths",
    "JsonFormatter",
    "JsonHandler",
    "JsonlFeedbackSink",
    "LoggingFeedbackSink",
    "PrometheusMiddleware",
    "QueueFull",
    "RequestContext",
    "RequestContextMiddleware",
    "ShuttingDown",
    "batching_endpoint",
    "begin_shutdown",
    "configure_logging",
    "get_request_context",
    "get_request_id",
    "instrument",
    "is_shutting_down",
    "mark_process_dead",
    "metrics_app",
    "set_model_info",
]

__version__ = "0.1.0"

# Imported on first use, so `mlmiddleware exec` (an init process) does not pay for
# starlette and prometheus-client at every container start.
_LAZY_EXPORTS = {
    "AccessLogMiddleware": "mlmiddleware.middleware.access_log",
    "Batcher": "mlmiddleware.batching",
    "BodySizeLimitMiddleware": "mlmiddleware.middleware.body_limit",
    "CallableFeedbackSink": "mlmiddleware.feedback",
    "HealthChecks": "mlmiddleware.health",
    "HealthPaths": "mlmiddleware.health",
    "JsonFormatter": "mlmiddleware.jsonlog",
    "JsonHandler": "mlmiddleware.jsonlog",
    "JsonlFeedbackSink": "mlmiddleware.feedback",
    "LoggingFeedbackSink": "mlmiddleware.feedback",
    "PrometheusMiddleware": "mlmiddleware.middleware.prometheus",
    "QueueFull": "mlmiddleware.batching",
    "RequestContextMiddleware": "mlmiddleware.middleware.context",
    "ShuttingDown": "mlmiddleware.batching",
    "batching_endpoint": "mlmiddleware.batching",
    "configure_logging": "mlmiddleware.jsonlog",
    "instrument": "mlmiddleware._instrument",
    "mark_process_dead": "mlmiddleware.metrics",
    "metrics_app": "mlmiddleware.metrics",
    "set_model_info": "mlmiddleware.metrics",
}


def __getattr__(name: str) -> Any:
    module = _LAZY_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mlmiddleware' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
