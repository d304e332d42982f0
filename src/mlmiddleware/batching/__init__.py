"""Dynamic batching: queue single requests, run the model on batches in a worker thread."""

from mlmiddleware.batching.batcher import Batcher
from mlmiddleware.batching.endpoint import BatchingEndpoint, batching_endpoint
from mlmiddleware.batching.errors import (
    BatcherError,
    InvalidItem,
    NotStarted,
    QueueFull,
    ResultCountError,
    ShuttingDown,
    WorkerDied,
)

__all__ = [
    "Batcher",
    "BatcherError",
    "BatchingEndpoint",
    "InvalidItem",
    "NotStarted",
    "QueueFull",
    "ResultCountError",
    "ShuttingDown",
    "WorkerDied",
    "batching_endpoint",
]
