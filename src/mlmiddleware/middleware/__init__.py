"""Pure ASGI middleware, one class per module."""

from mlmiddleware.middleware.access_log import AccessLogMiddleware
from mlmiddleware.middleware.body_limit import BodySizeLimitMiddleware
from mlmiddleware.middleware.context import RequestContextMiddleware
from mlmiddleware.middleware.prometheus import PrometheusMiddleware

__all__ = [
    "AccessLogMiddleware",
    "BodySizeLimitMiddleware",
    "PrometheusMiddleware",
    "RequestContextMiddleware",
]
