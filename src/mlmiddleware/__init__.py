"""Production middleware for ASGI model servers.

``instrument(app)`` wraps an existing Starlette, FastAPI or bare ASGI app with JSON logs,
a request context, an access log, Prometheus metrics, health probes, a body size limit,
feedback capture and batcher lifecycle management.
"""

from mlmiddleware._context import RequestContext, get_request_context, get_request_id
from mlmiddleware._lifecycle import begin_shutdown, is_shutting_down
from mlmiddleware.feedback import CallableFeedbackSink, JsonlFeedbackSink, LoggingFeedbackSink
from mlmiddleware.health import HealthChecks, HealthPaths
from mlmiddleware.instrument import instrument
from mlmiddleware.jsonlog import JsonFormatter, JsonHandler, configure_logging
from mlmiddleware.middleware.access_log import AccessLogMiddleware
from mlmiddleware.middleware.body_limit import BodySizeLimitMiddleware
from mlmiddleware.middleware.context import RequestContextMiddleware

__all__ = [
    "AccessLogMiddleware",
    "BodySizeLimitMiddleware",
    "CallableFeedbackSink",
    "HealthChecks",
    "HealthPaths",
    "JsonFormatter",
    "JsonHandler",
    "JsonlFeedbackSink",
    "LoggingFeedbackSink",
    "RequestContext",
    "RequestContextMiddleware",
    "begin_shutdown",
    "configure_logging",
    "get_request_context",
    "get_request_id",
    "instrument",
    "is_shutting_down",
]

__version__ = "0.1.0"
