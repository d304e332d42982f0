"""Batching metrics: names, labels, power-of-two size labels, and shared registries."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mlmiddleware.batching import Batcher
from mlmiddleware.batching._metrics import size_label
from tests.batching.conftest import FakeModel, outcome_count, wait_until

pytestmark = pytest.mark.anyio


def samples(registry: CollectorRegistry) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = generate_latest(registry).decode()
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


@pytest.mark.parametrize(
    ("batch_size", "label"), [(1, "1"), (2, "2"), (3, "4"), (5, "8"), (8, "8"), (33, "64")]
)
def test_size_label_rounds_up(batch_size: int, label: str) -> None:
    assert size_label(batch_size) == label


async def test_metrics_exported(registry: CollectorRegistry) -> None:
    model = FakeModel(gated=True)
    async with Batcher(model, registry=registry, name="embed") as batcher:
        blocker = asyncio.ensure_future(batcher.submit(0))
        await model.wait_running()
        queued = asyncio.ensure_future(batcher.submit_many([1, 2, 3, 4, 5]))
        await wait_until(lambda: batcher.queue_depth == 5)
        depth = registry.get_sample_value("batch_queue_depth", {"model": "embed"})
        model.gate.set()
        await queued
        await blocker

    found = samples(registry)
    assert depth == 5.0
    assert ({"model": "embed", "le": "8.0"}, 2.0) in found["batch_size_bucket"]
    assert ({"model": "embed", "le": "4.0"}, 1.0) in found["batch_size_bucket"]
    assert (
        registry.get_sample_value(
            "batch_inference_duration_seconds_count", {"model": "embed", "batch_size": "8"}
        )
        == 1.0
    )
    assert (
        registry.get_sample_value(
            "batch_inference_duration_seconds_count", {"model": "embed", "batch_size": "1"}
        )
        == 1.0
    )
    assert registry.get_sample_value("batch_queue_wait_seconds_count", {"model": "embed"}) == 6.0
    assert outcome_count(registry, "ok", "embed") == 6.0


async def test_outcome_error_counted(registry: CollectorRegistry) -> None:
    async with Batcher(FakeModel(poison=(1,)), registry=registry) as batcher:
        with pytest.raises(ValueError):
            await batcher.submit(1)

    assert outcome_count(registry, "error") == 1.0


async def test_batchers_share_registry(registry: CollectorRegistry) -> None:
    first = Batcher(FakeModel(), registry=registry, name="first")
    second = Batcher(FakeModel(), registry=registry, name="second")
    other_registry = CollectorRegistry()
    third = Batcher(FakeModel(), registry=other_registry, name="first")

    async with first, second, third:
        await asyncio.gather(first.submit(1), second.submit(2), third.submit(3))

    for name in ("first", "second"):
        assert outcome_count(registry, "ok", name) == 1.0
    assert outcome_count(other_registry, "ok", "first") == 1.0
