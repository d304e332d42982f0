"""``PrometheusMiddleware``: request count, latency, in-flight and body sizes per route."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from mlmiddleware._context import get_request_context
from mlmiddleware._routes import RouteResolver, route_path
from mlmiddleware._types import ASGIApp, Message, Receive, Scope, Send
from mlmiddleware.metrics.http import DEFAULT_DURATION_BUCKETS, DEFAULT_SIZE_BUCKETS
from mlmiddleware.metrics.http_series import http_series_source

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["DEFAULT_EXCLUDE_PATHS", "KNOWN_METHODS", "OTHER_METHOD", "PrometheusMiddleware"]

# The toolkit's scrape and probe routes: counting them would mostly measure Prometheus and
# the kubelet.
DEFAULT_EXCLUDE_PATHS: frozenset[str] = frozenset(
    {"/metrics", "/livez", "/readyz", "/startupz", "/v2/health/live", "/v2/health/ready"}
)

KNOWN_METHODS: frozenset[str] = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
# Label value shared by every method outside ``KNOWN_METHODS``, so clients cannot add
# label values by sending made-up methods.
OTHER_METHOD = "OTHER"

# Status recorded when the client disconnects before the response completes, as nginx does.
CLIENT_CLOSED_STATUS = 499


class PrometheusMiddleware:
    """Record Prometheus metrics for every HTTP request, labelled by route template.

    Metrics (see ``docs/metrics.md``): ``http_requests_total{method, route, status}``,
    ``http_request_duration_seconds{method, route}``,
    ``http_requests_in_progress{method, route}``, ``http_request_size_bytes{method, route}``
    and ``http_response_size_bytes{method, route}``.

    The route is resolved before the app runs, so responses sent by inner middleware are
    labelled too. ``exclude_paths`` are compared with both the path (relative to
    ``root_path``) and the route template. A client disconnect seen before the response
    completes is recorded as status 499. An exception raised before the response
    completes is recorded as 500 and re-raised. With ``exemplars=True`` the duration
    observation carries the request's ``trace_id``, shown when the scrape requests
    OpenMetrics.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        registry: CollectorRegistry | None = None,
        buckets: Sequence[float] = DEFAULT_DURATION_BUCKETS,
        size_buckets: Sequence[float] = DEFAULT_SIZE_BUCKETS,
        exclude_paths: Iterable[str] = DEFAULT_EXCLUDE_PATHS,
        exemplars: bool = False,
        route_resolver: RouteResolver | None = None,
    ) -> None:
        self.app = app
        self.series_source = http_series_source(
            registry, duration_buckets=buckets, size_buckets=size_buckets
        )
        self.exclude_paths = frozenset(exclude_paths)
        self.exemplars = exemplars
        self.route_resolver = route_resolver if route_resolver is not None else RouteResolver(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        route = self.route_resolver.resolve(scope)
        if self.exclude_paths and self._is_excluded(scope, route):
            await self.app(scope, receive, send)
            return

        method: str = scope["method"]
        if method not in KNOWN_METHODS:
            method = OTHER_METHOD
        series = self.series_source.series(method, route)

        # Everything below runs per request, so it stays in one frame with plain locals.
        status = 0
        received = 0
        sent = 0
        complete = False
        disconnected = False

        async def receive_counting() -> Message:
            nonlocal received, disconnected
            message = await receive()
            message_type = message["type"]
            if message_type == "http.request":
                received += len(message.get("body", b""))
            elif message_type == "http.disconnect":
                disconnected = True
            return message

        async def send_counting(message: Message) -> None:
            nonlocal status, sent, complete
            message_type = message["type"]
            if message_type == "http.response.body":
                sent += len(message.get("body", b""))
                complete = not message.get("more_body", False)
            elif message_type == "http.response.start":
                status = message["status"]
            elif message_type == "http.response.pathsend":
                sent += _file_size(message["path"])
                complete = True
            await send(message)

        series.begin()
        start = time.perf_counter()
        failed = True
        try:
            await self.app(scope, receive_counting, send_counting)
            failed = False
        finally:
            elapsed = time.perf_counter() - start
            # NOTE: a disconnect counts only once the app reads ``http.disconnect`` from
            # ``receive``. uvicorn drops sends after a disconnect without an error, so an
            # app that never reads is recorded with the status it sent.
            if not complete and disconnected:
                status = CLIENT_CLOSED_STATUS
            elif (failed and not complete) or status == 0:
                # An app that returns without starting a response gets a 500 from the server.
                status = 500
            exemplar = self._exemplar() if self.exemplars else None
            series.end(status, elapsed, received, sent, exemplar)

    def _exemplar(self) -> dict[str, str] | None:
        context = get_request_context()
        if context is None or not context.trace_id:
            return None
        return {"trace_id": context.trace_id}

    def _is_excluded(self, scope: Scope, route: str) -> bool:
        if route in self.exclude_paths:
            return True
        return route_path(scope) in self.exclude_paths


def _file_size(path: str) -> int:
    """Return the size of a file sent with the ASGI pathsend extension, 0 if it is gone."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
