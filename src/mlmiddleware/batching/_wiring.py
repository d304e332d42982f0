"""Wire batchers into ``instrument()``: metrics, health, start with warmup, and drain."""

from __future__ import annotations

from typing import Any

from mlmiddleware._stack import StackBuilder
from mlmiddleware.batching.batcher import Batcher

__all__ = ["wire_batchers"]


def wire_batchers(builder: StackBuilder, batchers: list[Any]) -> None:
    """Bind each batcher to the app and run it for the app's lifespan.

    Startup hooks start each batcher and run its warmup, so readiness turns on only once
    every model is warm. Shutdown hooks drain them in reverse order after readiness has
    turned off, so every accepted item still gets its result.
    """
    names: set[str] = set()
    for batcher in batchers:
        if not isinstance(batcher, Batcher):
            raise TypeError(
                f"invalid batcher {batcher!r} in batchers=: pass mlmiddleware.batching.Batcher "
                "objects"
            )
        if batcher.name in names:
            raise ValueError(
                f"two batchers are named {batcher.name!r}: give each a unique name= "
                "(it is the model label of the batching metrics)"
            )
        names.add(batcher.name)

        batcher.bind(
            registry=builder.registry,
            service=builder.service,
            model_version=builder.model_version,
        )
        builder.startup_hooks.append(batcher.start)
        if builder.health is not None:
            builder.health.add_worker(batcher)

    for batcher in reversed(batchers):
        builder.shutdown_hooks.append(batcher.stop)
