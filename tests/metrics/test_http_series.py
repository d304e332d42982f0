"""The HTTP series backends: the scrape-time collector against prometheus-client's own metrics."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest, metrics
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from mlmiddleware.metrics.http import DEFAULT_DURATION_BUCKETS, DEFAULT_SIZE_BUCKETS, http_metrics
from mlmiddleware.metrics.http_series import (
    ClientSeriesSource,
    HttpCollector,
    SeriesSource,
    http_series_source,
)

# (method, route, status, seconds, bytes received, bytes sent, exemplar)
REQUESTS = [
    ("GET", "/items/{id}", 200, 0.003, 0, 120, None),
    ("GET", "/items/{id}", 200, 0.005, 0, 64, {"trace_id": "a" * 32}),
    ("GET", "/items/{id}", 404, 0.2, 0, 30, None),
    ("POST", "/predict", 200, 1.5, 4096, 300, None),
    ("POST", "/predict", 500, 75.0, 70_000_000, 0, None),
    ("HEAD", "/items/{id}", 200, 0.001, 0, 999, None),
]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def source_of(registry: CollectorRegistry) -> SeriesSource:
    return http_series_source(
        registry, duration_buckets=DEFAULT_DURATION_BUCKETS, size_buckets=DEFAULT_SIZE_BUCKETS
    )


def record_all(source: SeriesSource) -> None:
    for method, route, status, elapsed, received, sent, exemplar in REQUESTS:
        series = source.series(method, route)
        series.begin()
        series.end(status, elapsed, received, sent, exemplar)
    source.series("GET", "/slow").begin()


def scrape(registry: CollectorRegistry) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


@pytest.fixture
def pair() -> Iterator[tuple[CollectorRegistry, CollectorRegistry]]:
    """The same requests recorded by the collector and by prometheus-client's metrics."""
    local = CollectorRegistry()
    client = CollectorRegistry()
    http_metrics(client)
    record_all(source_of(local))
    record_all(source_of(client))
    yield local, client


def test_single_process_uses_collector() -> None:
    source = source_of(CollectorRegistry())

    assert isinstance(source, HttpCollector)


def test_registered_families_are_reused() -> None:
    registry = CollectorRegistry()
    families = http_metrics(registry)

    source = source_of(registry)

    assert isinstance(source, ClientSeriesSource)
    assert source.metrics is families


def test_one_collector_per_registry() -> None:
    registry = CollectorRegistry()

    assert source_of(registry) is source_of(registry)


def test_other_buckets_on_same_registry_rejected() -> None:
    registry = CollectorRegistry()
    source_of(registry)

    with pytest.raises(ValueError, match="same buckets"):
        http_series_source(registry, duration_buckets=(0.1, 1.0), size_buckets=DEFAULT_SIZE_BUCKETS)


def test_trailing_inf_bucket_dropped() -> None:
    registry = CollectorRegistry()
    buckets = (0.01, 0.1, 1.0, math.inf)
    source = http_series_source(
        registry, duration_buckets=buckets, size_buckets=DEFAULT_SIZE_BUCKETS
    )
    source.series("GET", "/").begin()
    source.series("GET", "/").end(200, 0.05, 0, 10, None)

    text = generate_latest(registry).decode()

    inf_buckets = [
        line
        for line in text.splitlines()
        if line.startswith("http_request_duration_seconds_bucket") and 'le="+Inf"' in line
    ]
    assert len(inf_buckets) == 1


def test_negative_bucket_rejected() -> None:
    with pytest.raises(ValueError, match="never negative"):
        http_series_source(
            CollectorRegistry(), duration_buckets=(-1.0, 1.0), size_buckets=DEFAULT_SIZE_BUCKETS
        )


def test_http_metrics_after_collector_rejected() -> None:
    registry = CollectorRegistry()
    source_of(registry)

    with pytest.raises(ValueError, match=r"call http_metrics\(\) before"):
        http_metrics(registry)


def test_name_taken_by_another_library() -> None:
    registry = CollectorRegistry()
    Counter("http_requests", "taken", registry=registry)

    with pytest.raises(ValueError, match=r"registry=CollectorRegistry\(\)"):
        source_of(registry)


def test_collector_scrape_matches_prometheus_client(
    pair: tuple[CollectorRegistry, CollectorRegistry],
) -> None:
    local, client = pair

    local_samples = scrape(local)
    client_samples = scrape(client)

    assert local_samples == client_samples
    assert len(local_samples) > 50


def test_collector_families_match_prometheus_client(
    pair: tuple[CollectorRegistry, CollectorRegistry],
) -> None:
    local, client = pair

    local_text = generate_latest(local).decode()
    client_text = generate_latest(client).decode()

    local_meta = [line for line in local_text.splitlines() if line.startswith("#")]
    client_meta = [line for line in client_text.splitlines() if line.startswith("#")]
    assert local_meta == client_meta


def test_collector_exemplar_in_openmetrics(
    pair: tuple[CollectorRegistry, CollectorRegistry],
) -> None:
    local, _ = pair

    text = generate_openmetrics(local).decode()  # type: ignore[no-untyped-call]

    exemplar_lines = [line for line in text.splitlines() if " # {" in line]
    assert len(exemplar_lines) == 1
    assert 'le="0.005"' in exemplar_lines[0]
    assert f'trace_id="{"a" * 32}"' in exemplar_lines[0]


def test_created_series_follow_prometheus_client_switch() -> None:
    registry = CollectorRegistry()
    record_all(source_of(registry))

    enabled = metrics._use_created
    metrics.disable_created_metrics()  # type: ignore[no-untyped-call]
    try:
        text_without = generate_latest(registry).decode()
        metrics.enable_created_metrics()  # type: ignore[no-untyped-call]
        text_with = generate_latest(registry).decode()
    finally:
        metrics._use_created = enabled

    assert "_created" not in text_without
    assert "_created" in text_with


def test_scrape_while_series_are_added() -> None:
    registry = CollectorRegistry()
    source = source_of(registry)
    errors: list[BaseException] = []
    done = threading.Event()

    def add_series() -> None:
        try:
            for index in range(3000):
                series = source.series("GET", f"/route/{index}")
                series.begin()
                series.end(200, 0.01, 0, 10, None)
        except BaseException as exc:  # the assert below reports it
            errors.append(exc)
        finally:
            done.set()

    writer = threading.Thread(target=add_series)
    writer.start()
    scrapes = 0
    while not done.is_set() or scrapes == 0:
        generate_latest(registry)
        scrapes += 1
    writer.join(timeout=30)

    assert errors == []
    assert len(scrape(registry)) > 3000
