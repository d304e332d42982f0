"""Prometheus counters of feedback capture, created once per registry."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

from mlmiddleware._registry import PerRegistry

__all__ = ["FeedbackMetrics", "feedback_metrics"]


@dataclass(frozen=True)
class FeedbackMetrics:
    """Counters of records handed to a sink and of records dropped."""

    records: Counter
    dropped: Counter


_metrics: PerRegistry[FeedbackMetrics] = PerRegistry()


def feedback_metrics(registry: CollectorRegistry | None = None) -> FeedbackMetrics:
    """Return the feedback counters of ``registry`` (default: the global one).

    Every capture in a process shares them, because registering a family twice in one
    registry raises.
    """
    return _metrics.get(registry, _create)


def _create(registry: CollectorRegistry) -> FeedbackMetrics:
    records = Counter(
        "feedback_records_total",
        "Feedback and prediction records written to the feedback sink, by kind.",
        ["kind"],
        registry=registry,
    )
    dropped = Counter(
        "feedback_records_dropped_total",
        "Records not written because the feedback queue was full or the sink failed at close.",
        registry=registry,
    )
    return FeedbackMetrics(records=records, dropped=dropped)
