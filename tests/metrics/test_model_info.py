"""model_info: one series per served model, replaced when the version changes."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mlmiddleware.metrics import model_info, set_model_info


def info_samples(registry: CollectorRegistry) -> list[tuple[dict[str, str], float]]:
    text = generate_latest(registry).decode()
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        if family.name == "model_info"
        for sample in family.samples
    ]


def test_model_info_set_one() -> None:
    registry = CollectorRegistry()
    set_model_info(service="ranker", model="bert", version="v1", registry=registry)

    assert info_samples(registry) == [
        ({"service": "ranker", "model": "bert", "version": "v1"}, 1.0)
    ]


def test_model_info_version_replaced() -> None:
    registry = CollectorRegistry()
    set_model_info(service="ranker", model="bert", version="v1", registry=registry)
    set_model_info(service="ranker", model="bert", version="v2", registry=registry)

    assert info_samples(registry) == [
        ({"service": "ranker", "model": "bert", "version": "v2"}, 1.0)
    ]


def test_model_info_other_model_kept() -> None:
    registry = CollectorRegistry()
    set_model_info(service="ranker", model="bert", version="v1", registry=registry)
    set_model_info(service="ranker", model="t5", version="v9", registry=registry)

    versions = {labels["model"]: labels["version"] for labels, _ in info_samples(registry)}
    assert versions == {"bert": "v1", "t5": "v9"}


def test_model_info_gauge_per_registry() -> None:
    first = CollectorRegistry()
    second = CollectorRegistry()

    assert model_info(first) is model_info(first)
    assert model_info(first) is not model_info(second)
