"""The HTTP metric families, created once per ``CollectorRegistry``.

Several apps, tests and middleware instances in one process share the families of a
registry instead of registering them again, which would raise "Duplicated timeseries".
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from mlmiddleware._registry import PerRegistry

__all__ = [
    "DEFAULT_DURATION_BUCKETS",
    "DEFAULT_SIZE_BUCKETS",
    "HTTP_LABELS",
    "HTTP_STATUS_LABELS",
    "HttpMetrics",
    "check_buckets",
    "check_same_buckets",
    "existing_http_metrics",
    "http_metrics",
    "registration_error",
]

# Seconds from 5 ms (a small model on CPU) to 60 s (a long generation or a large batch).
DEFAULT_DURATION_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

# Bytes, in powers of 4 from 64 B to 64 MiB: a short JSON request up to an image batch.
DEFAULT_SIZE_BUCKETS: tuple[float, ...] = tuple(float(4**exponent) for exponent in range(3, 14))

HTTP_LABELS = ("method", "route")
HTTP_STATUS_LABELS = ("method", "route", "status")

REQUESTS_HELP = "HTTP requests by method, route template and status code."
DURATION_HELP = "Time from receiving an HTTP request to sending the end of its response."
IN_PROGRESS_HELP = "HTTP requests being served."
REQUEST_SIZE_HELP = "Bytes of request body received, counted from the body messages."
RESPONSE_SIZE_HELP = "Bytes of response body sent, counted from the body messages (0 for HEAD)."


@dataclass(frozen=True)
class HttpMetrics:
    """The HTTP metric families as prometheus-client objects.

    ``PrometheusMiddleware`` updates them in multi-process mode, and on a registry where
    ``http_metrics()`` created them before the first middleware.
    """

    requests: Counter
    duration: Histogram
    in_progress: Gauge
    request_size: Histogram
    response_size: Histogram
    duration_buckets: tuple[float, ...]
    size_buckets: tuple[float, ...]


_families: PerRegistry[HttpMetrics] = PerRegistry()


def http_metrics(
    registry: CollectorRegistry | None = None,
    *,
    duration_buckets: Sequence[float] = DEFAULT_DURATION_BUCKETS,
    size_buckets: Sequence[float] = DEFAULT_SIZE_BUCKETS,
) -> HttpMetrics:
    """Return the HTTP metric families of ``registry``, registering them on first use.

    ``registry=None`` means ``prometheus_client.REGISTRY``. A registry keeps the buckets
    it was first given, so requesting them again with other buckets raises ``ValueError``.
    Called before the first ``PrometheusMiddleware`` on the registry, it makes the
    middleware update these objects. Called after it, it raises ``ValueError``, because
    the middleware then records into plain counters (see ``docs/metrics.md``).
    """
    target = REGISTRY if registry is None else registry
    duration = check_buckets("buckets", duration_buckets)
    size = check_buckets("size_buckets", size_buckets)

    # Imported here because http_series imports this module.
    from mlmiddleware.metrics.http_series import local_collector

    if _families.peek(target) is None and local_collector(target) is not None:
        raise ValueError(
            f"a PrometheusMiddleware already records the HTTP metrics of registry {target!r} "
            "in plain counters read at scrape time, so there are no metric objects to return: "
            "call http_metrics() before creating the middleware, or use another registry"
        )
    metrics = _families.get(target, lambda registry: _register(registry, duration, size))

    check_same_buckets(target, (metrics.duration_buckets, metrics.size_buckets), (duration, size))
    return metrics


def check_same_buckets(
    registry: CollectorRegistry,
    existing: tuple[tuple[float, ...], tuple[float, ...]],
    requested: tuple[tuple[float, ...], tuple[float, ...]],
) -> None:
    """Raise ``ValueError`` when ``requested`` (duration, size) buckets differ from ``existing``."""
    if existing != requested:
        raise ValueError(
            f"the HTTP metrics of registry {registry!r} already use duration buckets "
            f"{existing[0]} and size buckets {existing[1]}: pass the same buckets to every "
            "PrometheusMiddleware on one registry, or use another registry"
        )


def registration_error(registry: CollectorRegistry, exc: ValueError) -> ValueError:
    """Return the error for HTTP metric names that another library already registered."""
    return ValueError(
        f"cannot register the HTTP metrics in {registry!r} ({exc}): another library "
        "registered the same names there; pass registry=CollectorRegistry() to "
        "PrometheusMiddleware and instrument()"
    )


def existing_http_metrics(registry: CollectorRegistry | None) -> HttpMetrics | None:
    """Return the families ``http_metrics()`` registered on ``registry``, if it did."""
    return _families.peek(registry)


def check_buckets(name: str, buckets: Sequence[float]) -> tuple[float, ...]:
    """Return the finite bounds of ``buckets`` as floats, or raise ``ValueError``.

    A trailing ``+Inf``, as in prometheus-client's ``Histogram.DEFAULT_BUCKETS``, is
    dropped, because every histogram gets its ``+Inf`` bucket anyway.
    """
    bounds = tuple(float(bound) for bound in buckets)
    if bounds and bounds[-1] == math.inf:
        bounds = bounds[:-1]
    if not bounds or any(later <= earlier for earlier, later in itertools.pairwise(bounds)):
        raise ValueError(
            f"invalid {name}={buckets!r}: give one or more strictly increasing finite bounds"
        )
    if bounds[0] < 0:
        raise ValueError(
            f"invalid {name}={buckets!r}: durations and sizes are never negative, so start "
            "at 0 or above"
        )
    return bounds


def _register(
    registry: CollectorRegistry, duration: tuple[float, ...], size: tuple[float, ...]
) -> HttpMetrics:
    try:
        return HttpMetrics(
            requests=Counter(
                "http_requests",
                REQUESTS_HELP,
                HTTP_STATUS_LABELS,
                registry=registry,
            ),
            duration=Histogram(
                "http_request_duration_seconds",
                DURATION_HELP,
                HTTP_LABELS,
                unit="seconds",
                buckets=duration,
                registry=registry,
            ),
            # livesum: in multi-process mode the scrape shows the sum over live workers,
            # without a pid label, and a dead worker's requests stop counting.
            in_progress=Gauge(
                "http_requests_in_progress",
                IN_PROGRESS_HELP,
                HTTP_LABELS,
                multiprocess_mode="livesum",
                registry=registry,
            ),
            request_size=Histogram(
                "http_request_size_bytes",
                REQUEST_SIZE_HELP,
                HTTP_LABELS,
                unit="bytes",
                buckets=size,
                registry=registry,
            ),
            response_size=Histogram(
                "http_response_size_bytes",
                RESPONSE_SIZE_HELP,
                HTTP_LABELS,
                unit="bytes",
                buckets=size,
                registry=registry,
            ),
            duration_buckets=duration,
            size_buckets=size,
        )
    except ValueError as exc:
        raise registration_error(registry, exc) from exc
