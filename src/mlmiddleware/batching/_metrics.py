"""Prometheus metric families of the batchers, created once per registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from mlmiddleware._registry import PerRegistry

__all__ = ["OUTCOMES", "BatcherMetrics", "size_label"]

OUTCOMES = ("ok", "error", "rejected", "timeout", "cancelled")

# Batch sizes are observed in power-of-two buckets up to 4096. Larger batches still count,
# in the +Inf bucket.
_SIZE_BUCKETS = tuple(float(2**power) for power in range(13))

_WAIT_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
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
)

_INFERENCE_BUCKETS = (
    0.001,
    0.0025,
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


@dataclass(frozen=True)
class _Families:
    batch_size: Histogram
    inference: Histogram
    queue_wait: Histogram
    queue_depth: Gauge
    requests: Counter


# One family per registry and name, so several batchers and apps share it by label.
_families: PerRegistry[_Families] = PerRegistry()


def _families_for(registry: CollectorRegistry) -> _Families:
    return _families.get(registry, _create_families)


def _create_families(registry: CollectorRegistry) -> _Families:
    return _Families(
        batch_size=Histogram(
            "batch_size",
            "Items per executed batch.",
            ["model"],
            buckets=_SIZE_BUCKETS,
            registry=registry,
        ),
        inference=Histogram(
            "batch_inference_duration_seconds",
            "Time to collate, predict and uncollate one batch, by batch size rounded up to a "
            "power of two.",
            ["model", "batch_size"],
            buckets=_INFERENCE_BUCKETS,
            registry=registry,
        ),
        queue_wait=Histogram(
            "batch_queue_wait_seconds",
            "Time an item waited in the queue before its batch started.",
            ["model"],
            buckets=_WAIT_BUCKETS,
            registry=registry,
        ),
        queue_depth=Gauge(
            "batch_queue_depth",
            "Items waiting in the queue.",
            ["model"],
            registry=registry,
            # Summed over live workers, so an autoscaler reads one series per model and a
            # dead worker's last value drops out.
            multiprocess_mode="livesum",
        ),
        requests=Counter(
            "batch_requests",
            "Items submitted to a batcher, by outcome.",
            ["model", "outcome"],
            registry=registry,
        ),
    )


def size_label(batch_size: int) -> str:
    """Round ``batch_size`` up to a power of two, the label of the inference-time histogram."""
    return str(1 << max(batch_size - 1, 0).bit_length())


class BatcherMetrics:
    """The metric children of one batcher, bound to its model name."""

    def __init__(
        self,
        *,
        model: str,
        registry: CollectorRegistry | None,
        queue_depth: Callable[[], float],
    ) -> None:
        families = _families_for(REGISTRY if registry is None else registry)
        self.model = model
        self._inference = families.inference
        self._inference_children: dict[str, Histogram] = {}
        self.batch_size = families.batch_size.labels(model=model)
        self.queue_wait = families.queue_wait.labels(model=model)
        self.outcomes = {
            outcome: families.requests.labels(model=model, outcome=outcome) for outcome in OUTCOMES
        }
        families.queue_depth.labels(model=model).set_function(queue_depth)

    def observe_batch(self, batch_size: int, duration_s: float) -> None:
        """Record one executed batch of ``batch_size`` items that took ``duration_s``."""
        self.batch_size.observe(batch_size)

        label = size_label(batch_size)
        child = self._inference_children.get(label)
        if child is None:
            child = self._inference.labels(model=self.model, batch_size=label)
            self._inference_children[label] = child
        child.observe(duration_s)

    def count(self, outcome: str, amount: int = 1) -> None:
        """Count ``amount`` items that ended with ``outcome``."""
        self.outcomes[outcome].inc(amount)
