"""Prometheus metrics: the HTTP middleware's families, the ``/metrics`` app, multi-process mode."""

from mlmiddleware.metrics.app import MetricsApp, metrics_app
from mlmiddleware.metrics.http import (
    DEFAULT_DURATION_BUCKETS,
    DEFAULT_SIZE_BUCKETS,
    HttpMetrics,
    http_metrics,
)
from mlmiddleware.metrics.info import model_info, set_model_info
from mlmiddleware.metrics.multiprocess import mark_process_dead, multiprocess_dir

__all__ = [
    "DEFAULT_DURATION_BUCKETS",
    "DEFAULT_SIZE_BUCKETS",
    "HttpMetrics",
    "MetricsApp",
    "http_metrics",
    "mark_process_dead",
    "metrics_app",
    "model_info",
    "multiprocess_dir",
    "set_model_info",
]
