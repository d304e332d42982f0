"""Deterministic fake models for the batching tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

EVENT_TIMEOUT_S = 20.0


class FakeModel:
    """A ``predict`` that records each batch, can block on a gate, and fails on marked items.

    ``predict`` returns ``item * 10`` for each item. An item in ``poison`` makes the whole
    batch raise ``ValueError``, as a real model does when one input is malformed.
    """

    def __init__(self, *, gated: bool = False, poison: tuple[Any, ...] = ()) -> None:
        self.batches: list[list[Any]] = []
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self.running = threading.Event()
        self.poison = set(poison)
        self._lock = threading.Lock()

    def __call__(self, batch: list[Any]) -> list[Any]:
        with self._lock:
            self.batches.append(list(batch))
        self.running.set()
        if not self.gate.wait(EVENT_TIMEOUT_S):
            raise RuntimeError("test gate was never opened")
        self.running.clear()

        bad = [item for item in batch if item in self.poison]
        if bad:
            raise ValueError(f"cannot predict item {bad[0]!r}")
        return [item * 10 for item in batch]

    @property
    def sizes(self) -> list[int]:
        return [len(batch) for batch in self.batches]

    @property
    def seen(self) -> list[Any]:
        return [item for batch in self.batches for item in batch]

    async def wait_running(self) -> None:
        """Wait until a batch is inside ``predict`` (blocked on the gate if gated)."""
        ok = await asyncio.to_thread(self.running.wait, EVENT_TIMEOUT_S)
        assert ok, "the model never started a batch"


async def wait_until(condition: Callable[[], bool], timeout_s: float = EVENT_TIMEOUT_S) -> None:
    """Poll ``condition`` on the event loop; fail the test if it stays false."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, "condition still false after the timeout"
        await asyncio.sleep(0.005)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def outcome_count(registry: CollectorRegistry, outcome: str, model: str = "model") -> float | None:
    """Read ``batch_requests_total`` for one model and outcome."""
    return registry.get_sample_value("batch_requests_total", {"model": model, "outcome": outcome})
