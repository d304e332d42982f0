"""``model_info{service, model, version}``: which model a scrape target serves."""

from __future__ import annotations

import threading
import weakref

from prometheus_client import REGISTRY, CollectorRegistry, Gauge, values

__all__ = ["model_info", "set_model_info"]

_lock = threading.Lock()
_gauges: weakref.WeakKeyDictionary[CollectorRegistry, Gauge] = weakref.WeakKeyDictionary()
# The label values set per (registry, service, model), so a new version replaces the old.
_current: weakref.WeakKeyDictionary[CollectorRegistry, dict[tuple[str, str], str]] = (
    weakref.WeakKeyDictionary()
)


def model_info(registry: CollectorRegistry | None = None) -> Gauge:
    """Return the ``model_info`` gauge of ``registry``, registering it on first use."""
    target = REGISTRY if registry is None else registry
    with _lock:
        gauge = _gauges.get(target)
        if gauge is None:
            # livemax: in multi-process mode the scrape shows 1 while any live worker
            # serves the model, without a pid label.
            gauge = Gauge(
                "model_info",
                "Model served by this process; the value is always 1.",
                ("service", "model", "version"),
                multiprocess_mode="livemax",
                registry=target,
            )
            _gauges[target] = gauge
    return gauge


def set_model_info(
    *, service: str, model: str, version: str, registry: CollectorRegistry | None = None
) -> None:
    """Set ``model_info{service, model, version}`` to 1, replacing an earlier version.

    An earlier version of the same service and model is removed. In multi-process mode
    it is set to 0 first, because removing a series does not erase it from this worker's
    file.
    """
    target = REGISTRY if registry is None else registry
    gauge = model_info(target)
    with _lock:
        current = _current.setdefault(target, {})
        previous = current.get((service, model))
        current[(service, model)] = version

    if previous is not None and previous != version:
        if values.ValueClass is not values.MutexValue:
            gauge.labels(service, model, previous).set(0)
        gauge.remove(service, model, previous)
    gauge.labels(service, model, version).set(1)
