"""Metric families created once per ``CollectorRegistry`` and shared by all its users.

prometheus-client raises "Duplicated timeseries" when a family is registered twice in one
registry, yet several middleware instances, batchers and apps in one process (or one
test run) need the same families. Each capability keeps a ``PerRegistry`` of its own.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry

__all__ = ["PerRegistry"]

T = TypeVar("T")


class PerRegistry(Generic[T]):
    """A value per registry, built on first use; entries go away with their registry."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: weakref.WeakKeyDictionary[CollectorRegistry, T] = weakref.WeakKeyDictionary()

    def get(
        self, registry: CollectorRegistry | None, create: Callable[[CollectorRegistry], T]
    ) -> T:
        """Return the value of ``registry`` (``None`` means the global one), creating it once."""
        target = REGISTRY if registry is None else registry
        with self._lock:
            value = self._values.get(target)
            if value is None:
                value = create(target)
                self._values[target] = value
            return value

    def peek(self, registry: CollectorRegistry | None) -> T | None:
        """Return the value of ``registry`` if one was built, without building it."""
        target = REGISTRY if registry is None else registry
        with self._lock:
            return self._values.get(target)
