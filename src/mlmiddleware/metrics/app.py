"""``metrics_app``: the ASGI app that serves a registry to Prometheus."""

from __future__ import annotations

import gzip
import logging
from collections.abc import Callable
from urllib.parse import parse_qs

import anyio.to_thread
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

from mlmiddleware._errors import send_method_not_allowed
from mlmiddleware._types import Receive, Scope, Send
from mlmiddleware.metrics.multiprocess import multiprocess_dir, multiprocess_registry

__all__ = ["MetricsApp", "metrics_app"]

logger = logging.getLogger("mlmiddleware.metrics")


class MetricsApp:
    """ASGI app that serves the metrics of one registry on GET and HEAD.

    The format follows the ``Accept`` header: ``application/openmetrics-text`` gets
    OpenMetrics (with exemplars and the closing ``# EOF``), anything else the Prometheus
    text format 0.0.4. The body is gzipped when ``Accept-Encoding`` allows it. Repeated
    ``name[]`` query parameters restrict the scrape to those metric names.
    """

    def __init__(self, registry: CollectorRegistry, *, disable_compression: bool = False) -> None:
        self.registry = registry
        self.disable_compression = disable_compression

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise ValueError(
                f"metrics_app serves HTTP only, got a {scope['type']!r} scope: "
                "mount it on an HTTP route"
            )

        method: str = scope["method"]
        if method not in ("GET", "HEAD"):
            await send_method_not_allowed(send, scope, ("GET", "HEAD"))
            return

        accept, accept_encoding = _negotiation_headers(scope)
        names = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("name[]")
        body, content_type = await anyio.to_thread.run_sync(self._render, accept, names)

        headers = [
            (b"content-type", content_type.encode("latin-1")),
            (b"vary", b"Accept, Accept-Encoding"),
        ]
        if not self.disable_compression and gzip_accepted(accept_encoding):
            body = gzip.compress(body)
            headers.append((b"content-encoding", b"gzip"))
        headers.append((b"content-length", str(len(body)).encode("latin-1")))

        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    def _render(self, accept: str, names: list[str] | None) -> tuple[bytes, str]:
        encoder: Callable[[CollectorRegistry], bytes]
        encoder, content_type = choose_encoder(accept)
        registry = self.registry if names is None else self.registry.restricted_registry(names)
        return encoder(registry), content_type


def metrics_app(
    registry: CollectorRegistry | None = None, *, disable_compression: bool = False
) -> MetricsApp:
    """Build the ASGI app that serves ``registry`` (default ``prometheus_client.REGISTRY``).

    When ``PROMETHEUS_MULTIPROC_DIR`` is set, it serves the sum over every worker's files
    instead of ``registry``, because every metric a worker updates is in those files.
    """
    directory = multiprocess_dir()
    if directory is not None:
        logger.info("Serving metrics aggregated over the worker files in %s", directory)
        return MetricsApp(multiprocess_registry(directory), disable_compression=disable_compression)
    return MetricsApp(
        REGISTRY if registry is None else registry, disable_compression=disable_compression
    )


def _negotiation_headers(scope: Scope) -> tuple[str, str]:
    accept: list[str] = []
    accept_encoding: list[str] = []
    for name, value in scope.get("headers", ()):
        lowered = name.lower()
        if lowered == b"accept":
            accept.append(value.decode("latin-1"))
        elif lowered == b"accept-encoding":
            accept_encoding.append(value.decode("latin-1"))
    return ",".join(accept), ",".join(accept_encoding)
