"""Per-route HTTP series: the values ``PrometheusMiddleware`` updates on every request.

Two backends share one interface, ``begin()`` when a request starts and ``end(...)``
when it finishes:

- ``LocalRouteSeries``, for a single process: plain integers and floats updated on the
  event loop, turned into metric families by ``HttpCollector`` only when Prometheus
  scrapes. prometheus-client still writes the exposition. The nine locked updates of
  prometheus-client's own objects cost about 5 us per request on the 2-core benchmark
  machine (``docs/metrics.md``, "Cost").
- ``ClientRouteSeries``, for multi-process mode: the values must reach the worker files
  in ``PROMETHEUS_MULTIPROC_DIR``, so it updates prometheus-client's own metric children.

``http_series_source`` picks the backend for a registry. The series of one registry are
shared by all the middleware instances on it.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from prometheus_client import REGISTRY, CollectorRegistry, metrics, values
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar, Sample
from prometheus_client.utils import floatToGoString

from mlmiddleware._registry import PerRegistry
from mlmiddleware.metrics.http import (
    DURATION_HELP,
    IN_PROGRESS_HELP,
    REQUEST_SIZE_HELP,
    REQUESTS_HELP,
    RESPONSE_SIZE_HELP,
    HttpMetrics,
    check_buckets,
    check_same_buckets,
    existing_http_metrics,
    http_metrics,
    registration_error,
)

__all__ = [
    "ClientRouteSeries",
    "HttpCollector",
    "LocalRouteSeries",
    "RouteSeries",
    "SeriesSource",
    "http_series_source",
    "local_collector",
]


class RouteSeries(Protocol):
    """Interface of the values recorded for one (method, route) pair."""

    def begin(self) -> None:
        """Count a request as in progress."""

    def end(
        self,
        status: int,
        elapsed: float,
        received: int,
        sent: int,
        exemplar: dict[str, str] | None,
    ) -> None:
        """Record a finished request and count it out of progress."""


class SeriesSource(Protocol):
    """Source of the series of one registry, one per (method, route) pair."""

    def series(self, method: str, route: str) -> RouteSeries:
        """Return the series of ``(method, route)``, creating it on first use."""


class LocalRouteSeries:
    """The values of one (method, route) pair, kept as plain Python numbers.

    Bucket counts are per bucket, not cumulative, and the last slot is ``+Inf``. The
    collector adds them up at scrape time.
    """

    __slots__ = (
        "created",
        "duration_bounds",
        "duration_counts",
        "duration_exemplars",
        "duration_sum",
        "in_progress",
        "is_head",
        "method",
        "request_counts",
        "request_sum",
        "response_counts",
        "response_sum",
        "route",
        "size_bounds",
        "statuses",
    )

    def __init__(
        self,
        method: str,
        route: str,
        duration_bounds: tuple[float, ...],
        size_bounds: tuple[float, ...],
    ) -> None:
        self.method = method
        self.route = route
        # Servers drop the body of a HEAD response, so none of it counts as sent.
        self.is_head = method == "HEAD"
        self.duration_bounds = duration_bounds
        self.size_bounds = size_bounds
        self.created = time.time()
        self.in_progress = 0
        # Status code -> [requests, created timestamp].
        self.statuses: dict[int, list[float]] = {}
        self.duration_counts = [0] * (len(duration_bounds) + 1)
        self.duration_exemplars: list[Exemplar | None] = [None] * (len(duration_bounds) + 1)
        self.duration_sum = 0.0
        self.request_counts = [0] * (len(size_bounds) + 1)
        self.request_sum = 0.0
        self.response_counts = [0] * (len(size_bounds) + 1)
        self.response_sum = 0.0

    def begin(self) -> None:
        self.in_progress += 1

    def end(
        self,
        status: int,
        elapsed: float,
        received: int,
        sent: int,
        exemplar: dict[str, str] | None,
    ) -> None:
        # NOTE: no lock: one event loop thread per process is the writer these series are
        # built for. CPython 3.11 to 3.13 happen to run each ``+=`` below without a thread
        # switch, but no Python version promises it, and a free-threaded build loses counts.
        self.in_progress -= 1
        counter = self.statuses.get(status)
        if counter is None:
            counter = self.statuses.setdefault(status, [0, time.time()])
        counter[0] += 1

        index = bisect_left(self.duration_bounds, elapsed)
        self.duration_counts[index] += 1
        self.duration_sum += elapsed
        if exemplar:
            self.duration_exemplars[index] = Exemplar(exemplar, elapsed, time.time())

        self.request_counts[bisect_left(self.size_bounds, received)] += 1
        self.request_sum += received
        if self.is_head:
            sent = 0
        self.response_counts[bisect_left(self.size_bounds, sent)] += 1
        self.response_sum += sent


class HttpCollector(Collector):
    """Collector of the HTTP metric families, built from the ``LocalRouteSeries`` of a registry."""

    def __init__(self, duration_bounds: tuple[float, ...], size_bounds: tuple[float, ...]) -> None:
        self.duration_buckets = duration_bounds
        self.size_buckets = size_bounds
        self._duration_le = [*map(floatToGoString, duration_bounds), "+Inf"]
        self._size_le = [*map(floatToGoString, size_bounds), "+Inf"]
        self._series: dict[tuple[str, str], LocalRouteSeries] = {}

    def series(self, method: str, route: str) -> LocalRouteSeries:
        key = (method, route)
        found = self._series.get(key)
        if found is None:
            found = LocalRouteSeries(method, route, self.duration_buckets, self.size_buckets)
            found = self._series.setdefault(key, found)
        return found

    def describe(self) -> list[Metric]:
        """Name the families without samples, so the registry can detect duplicates."""
        return list(_empty_families())

    def collect(self) -> Iterator[Metric]:
        requests, duration, in_progress, request_size, response_size = _empty_families()
        # The private flag behind prometheus-client's disable_created_metrics(). If a later
        # release drops it, the _created series stay on, as they are by default.
        with_created = bool(getattr(metrics, "_use_created", True))

        # The event loop may add series while a scrape runs in a thread, so take a copy:
        # list() copies the dictionary without giving up the GIL.
        for series in list(self._series.values()):
            labels = {"method": series.method, "route": series.route}
            in_progress.samples.append(Sample(in_progress.name, labels, series.in_progress))
            for status, (count, status_created) in list(series.statuses.items()):
                status_labels = {**labels, "status": str(status)}
                requests.samples.append(Sample(requests.name + "_total", status_labels, count))
                if with_created:
                    requests.samples.append(
                        Sample(requests.name + "_created", status_labels, status_created)
                    )

            created = series.created if with_created else None
            _add_histogram(
                duration,
                labels,
                self._duration_le,
                series.duration_counts,
                series.duration_sum,
                created,
                series.duration_exemplars,
            )
            _add_histogram(
                request_size,
                labels,
                self._size_le,
                series.request_counts,
                series.request_sum,
                created,
            )
            _add_histogram(
                response_size,
                labels,
                self._size_le,
                series.response_counts,
                series.response_sum,
                created,
            )

        yield from (requests, duration, in_progress, request_size, response_size)


class ClientRouteSeries:
    """The prometheus-client children of one (method, route) pair, for multi-process mode."""

    __slots__ = (
        "duration",
        "in_progress",
        "is_head",
        "method",
        "metrics",
        "request_size",
        "requests",
        "response_size",
        "route",
    )

    def __init__(self, metrics: HttpMetrics, method: str, route: str) -> None:
        self.metrics = metrics
        self.method = method
        self.route = route
        self.is_head = method == "HEAD"
        self.duration = metrics.duration.labels(method, route)
        self.in_progress = metrics.in_progress.labels(method, route)
        self.request_size = metrics.request_size.labels(method, route)
        self.response_size = metrics.response_size.labels(method, route)
        # Counter children by status code, filled as statuses appear.
        self.requests: dict[int, Any] = {}

    def begin(self) -> None:
        self.in_progress.inc()

    def end(
        self,
        status: int,
        elapsed: float,
        received: int,
        sent: int,
        exemplar: dict[str, str] | None,
    ) -> None:
        self.in_progress.dec()
        counter = self.requests.get(status)
        if counter is None:
            counter = self.metrics.requests.labels(self.method, self.route, str(status))
            self.requests[status] = counter
        counter.inc()

        self.duration.observe(elapsed, exemplar)
        self.request_size.observe(received)
        self.response_size.observe(0 if self.is_head else sent)


class ClientSeriesSource:
    """Series backed by the prometheus-client families of one registry."""

    def __init__(self, metrics: HttpMetrics) -> None:
        self.metrics = metrics
        self._series: dict[tuple[str, str], ClientRouteSeries] = {}

    def series(self, method: str, route: str) -> ClientRouteSeries:
        key = (method, route)
        found = self._series.get(key)
        if found is None:
            found = self._series.setdefault(key, ClientRouteSeries(self.metrics, method, route))
        return found


_collectors: PerRegistry[HttpCollector] = PerRegistry()


def http_series_source(
    registry: CollectorRegistry | None,
    *,
    duration_buckets: Sequence[float],
    size_buckets: Sequence[float],
) -> SeriesSource:
    """Return the series source of ``registry`` for one middleware.

    prometheus-client families back it in multi-process mode, and also when
    ``http_metrics()`` already registered them on this registry. Otherwise the registry's
    ``HttpCollector`` does, one per registry.
    """
    duration = check_buckets("buckets", duration_buckets)
    size = check_buckets("size_buckets", size_buckets)
    if values.ValueClass is not values.MutexValue or existing_http_metrics(registry) is not None:
        return ClientSeriesSource(
            http_metrics(registry, duration_buckets=duration, size_buckets=size)
        )

    target = REGISTRY if registry is None else registry
    collector = _collectors.get(target, lambda target: _register(target, duration, size))
    existing = (collector.duration_buckets, collector.size_buckets)
    check_same_buckets(target, existing, (duration, size))
    return collector


def local_collector(registry: CollectorRegistry | None) -> HttpCollector | None:
    """Return the ``HttpCollector`` registered on ``registry``, if a middleware made one."""
    return _collectors.peek(registry)


def _register(
    registry: CollectorRegistry, duration: tuple[float, ...], size: tuple[float, ...]
) -> HttpCollector:
    collector = HttpCollector(duration, size)
    try:
        registry.register(collector)
    except ValueError as exc:
        raise registration_error(registry, exc) from exc
    return collector


def _empty_families() -> tuple[Metric, Metric, Metric, Metric, Metric]:
    return (
        Metric("http_requests", REQUESTS_HELP, "counter"),
        Metric("http_request_duration_seconds", DURATION_HELP, "histogram", "seconds"),
        Metric("http_requests_in_progress", IN_PROGRESS_HELP, "gauge"),
        Metric("http_request_size_bytes", REQUEST_SIZE_HELP, "histogram", "bytes"),
        Metric("http_response_size_bytes", RESPONSE_SIZE_HELP, "histogram", "bytes"),
    )


def _add_histogram(
    family: Metric,
    labels: dict[str, str],
    bounds: list[str],
    counts: list[int],
    total: float,
    created: float | None,
    exemplars: list[Exemplar | None] | None = None,
) -> None:
    """Append one labelled histogram to ``family`` in prometheus-client's sample order."""
    samples = family.samples
    bucket_name = family.name + "_bucket"
    cumulative = 0
    for index, (bound, count) in enumerate(zip(bounds, list(counts), strict=True)):
        cumulative += count
        exemplar = exemplars[index] if exemplars is not None else None
        samples.append(Sample(bucket_name, {**labels, "le": bound}, cumulative, None, exemplar))
    samples.append(Sample(family.name + "_count", labels, cumulative))
    samples.append(Sample(family.name + "_sum", labels, total))
    if created is not None:
        samples.append(Sample(family.name + "_created", labels, created))
