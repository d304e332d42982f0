"""Wire Prometheus metrics into ``instrument()``."""

from __future__ import annotations

import os

from mlmiddleware._stack import StackBuilder
from mlmiddleware._types import ASGIApp
from mlmiddleware.metrics.app import metrics_app
from mlmiddleware.metrics.info import set_model_info
from mlmiddleware.middleware.prometheus import PrometheusMiddleware

__all__ = ["MODEL_NAME_ENV", "wire_metrics"]

# Fills the ``model`` label of ``model_info``. When it is unset, the service name is used.
MODEL_NAME_ENV = "MODEL_NAME"


def wire_metrics(builder: StackBuilder, *, path: str) -> None:
    """Mount the metrics app at ``path``, add the metrics middleware and set ``model_info``."""
    builder.add_route(path, metrics_app(builder.registry), quiet=True)

    def metrics_layer(inner: ASGIApp) -> ASGIApp:
        # Runs at assembly time, once every capability has added its quiet paths.
        return PrometheusMiddleware(
            inner,
            registry=builder.registry,
            exclude_paths=frozenset(builder.quiet_paths),
            route_resolver=builder.resolver(),
        )

    builder.metrics_layer = metrics_layer

    version = builder.model_version
    if version:
        service = builder.service or ""
        model = os.environ.get(MODEL_NAME_ENV) or service
        set_model_info(service=service, model=model, version=version, registry=builder.registry)
