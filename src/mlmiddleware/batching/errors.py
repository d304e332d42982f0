"""Exceptions a ``Batcher`` raises to callers, each mapped to one HTTP status by the endpoint."""

from __future__ import annotations

__all__ = [
    "BatcherError",
    "InvalidItem",
    "NotStarted",
    "QueueFull",
    "ResultCountError",
    "ShuttingDown",
    "WorkerDied",
]


class BatcherError(Exception):
    """Base class of the errors raised by ``Batcher.submit`` for reasons other than the model."""


class QueueFull(BatcherError):
    """The queue already contains ``max_queue_size`` items. Retry later (HTTP 503)."""


class ShuttingDown(BatcherError):
    """The batcher is stopping or stopped and accepts no new items (HTTP 503)."""


class NotStarted(BatcherError):
    """The batcher has not been started (or its warmup is still running) (HTTP 503)."""


class WorkerDied(BatcherError):
    """The model worker thread exited, so queued items can never run (HTTP 503)."""


class InvalidItem(BatcherError, ValueError):
    """An item was rejected before queueing, e.g. its cost exceeds ``max_batch_cost`` (HTTP 422)."""


class ResultCountError(ValueError):
    """``predict`` (or ``uncollate``) returned a different number of results than items."""
