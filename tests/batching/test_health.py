"""Batcher health protocol: readiness states, warmup, stuck and dead worker detection."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from mlmiddleware.batching import Batcher, WorkerDied
from mlmiddleware.health.checks import ModelWorker
from tests.batching.conftest import EVENT_TIMEOUT_S, FakeModel, wait_until

pytestmark = pytest.mark.anyio


class WorkerKilled(BaseException):
    """Escapes the batch error handling, as an interpreter-level failure would."""


async def test_batcher_follows_worker_protocol(registry: CollectorRegistry) -> None:
    batcher = Batcher(FakeModel(), registry=registry)

    assert isinstance(batcher, ModelWorker)


async def test_readiness_through_lifecycle(registry: CollectorRegistry) -> None:
    model = FakeModel(gated=True)
    batcher = Batcher(model, registry=registry, warmup=[1], warmup_batch_sizes=[1])
    assert batcher.readiness_error() == "not started"

    starting = asyncio.ensure_future(batcher.start())
    await model.wait_running()
    assert batcher.readiness_error() == "warming up"

    model.gate.set()
    await starting
    assert batcher.readiness_error() is None

    await batcher.stop()
    assert batcher.readiness_error() == "not started"


async def test_warmup_runs_each_batch_size(registry: CollectorRegistry) -> None:
    model = FakeModel()
    batcher = Batcher(model, registry=registry, max_batch_size=8, warmup=[1, 2, 3])
    async with batcher:
        warmup_sizes = list(model.sizes)

    assert warmup_sizes == [1, 2, 4, 8]
    assert model.batches[2] == [1, 2, 3, 1]


async def test_warmup_failure_fails_start(registry: CollectorRegistry) -> None:
    batcher = Batcher(FakeModel(poison=(1,)), registry=registry, warmup=[1])

    with pytest.raises(ValueError, match="cannot predict item 1"):
        await batcher.start()
    assert batcher.readiness_error() == "not started"


async def test_stuck_batch_fails_liveness(registry: CollectorRegistry) -> None:
    model = FakeModel(gated=True)
    async with Batcher(model, registry=registry, stuck_after_s=0.05) as batcher:
        assert batcher.liveness_error() is None
        running = asyncio.ensure_future(batcher.submit(1))
        await model.wait_running()

        await wait_until(lambda: batcher.liveness_error() is not None)
        error = batcher.liveness_error()
        assert error is not None
        assert "longer than stuck_after_s=0.05" in error

        model.gate.set()
        await running
        assert batcher.liveness_error() is None


async def test_dead_worker_fails_liveness(registry: CollectorRegistry) -> None:
    release = threading.Event()
    entered = threading.Event()

    def predict(batch: list[Any]) -> list[Any]:
        if 99 in batch:
            entered.set()
            release.wait(EVENT_TIMEOUT_S)
            raise WorkerKilled("simulated interpreter failure")
        return batch

    async with Batcher(predict, registry=registry) as batcher:
        fatal = asyncio.ensure_future(batcher.submit(99))
        assert await asyncio.to_thread(entered.wait, EVENT_TIMEOUT_S)
        stranded = asyncio.ensure_future(batcher.submit(1))
        await wait_until(lambda: batcher.queue_depth == 1)
        release.set()

        with pytest.raises(WorkerDied, match="WorkerKilled"):
            await stranded
        with pytest.raises(WorkerDied):
            await fatal

        error = batcher.liveness_error()
        assert error is not None
        assert error.startswith("worker thread died: WorkerKilled")
        assert batcher.readiness_error() == "worker thread died"
        with pytest.raises(WorkerDied):
            await batcher.submit(2)


async def test_heartbeat_advances_when_idle(registry: CollectorRegistry) -> None:
    async with Batcher(FakeModel(), registry=registry, stuck_after_s=0.2) as batcher:
        before = batcher.last_progress
        await wait_until(lambda: batcher.last_progress > before)

    assert batcher.last_progress > before
