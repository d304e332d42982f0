"""Batcher: batch formation, pipelining, limits, error isolation, timeouts and shutdown."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from mlmiddleware.batching import (
    Batcher,
    InvalidItem,
    NotStarted,
    QueueFull,
    ResultCountError,
    ShuttingDown,
)
from tests.batching.conftest import FakeModel, outcome_count, wait_until

pytestmark = pytest.mark.anyio


def make(model: Any, registry: CollectorRegistry, **options: Any) -> Batcher:
    return Batcher(model, registry=registry, **options)


async def test_submit_returns_own_result(registry: CollectorRegistry) -> None:
    async with make(FakeModel(), registry) as batcher:
        results = await asyncio.gather(*(batcher.submit(item) for item in range(10)))

    assert results == [item * 10 for item in range(10)]


async def test_lone_item_skips_wait_when_idle(registry: CollectorRegistry) -> None:
    # With a 10-minute window, only the idle-worker rule can dispatch the item in time.
    model = FakeModel()
    async with make(model, registry, max_wait_ms=600_000) as batcher:
        result = await asyncio.wait_for(batcher.submit(3), timeout=10)

    assert result == 30
    assert model.sizes == [1]


async def test_timer_policy_waits_for_full_batch(registry: CollectorRegistry) -> None:
    model = FakeModel()
    batcher = make(model, registry, dispatch_when_idle=False, max_wait_ms=600_000, max_batch_size=3)
    async with batcher:
        first = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0.05)
        assert not first.done()
        assert model.sizes == []

        rest = await asyncio.gather(batcher.submit(2), batcher.submit(3))

    assert await first == 10
    assert rest == [20, 30]
    assert model.sizes == [3]


async def test_timer_policy_dispatches_after_wait(registry: CollectorRegistry) -> None:
    model = FakeModel()
    async with make(model, registry, dispatch_when_idle=False, max_wait_ms=20) as batcher:
        result = await batcher.submit(4)

    assert result == 40
    assert model.sizes == [1]


async def test_pipelining_runs_one_then_four(registry: CollectorRegistry) -> None:
    model = FakeModel(gated=True)
    async with make(model, registry, max_batch_size=8, max_wait_ms=0) as batcher:
        first = asyncio.ensure_future(batcher.submit(0))
        await model.wait_running()
        others = [asyncio.ensure_future(batcher.submit(item)) for item in range(1, 5)]
        await wait_until(lambda: batcher.queue_depth == 4)
        model.gate.set()
        results = await asyncio.gather(first, *others)

    assert results == [0, 10, 20, 30, 40]
    assert model.sizes == [1, 4]


async def test_simultaneous_burst_uses_two_batches_at_most(registry: CollectorRegistry) -> None:
    model = FakeModel()
    async with make(model, registry, max_batch_size=8) as batcher:
        await asyncio.gather(*(batcher.submit(item) for item in range(5)))

    assert len(model.sizes) <= 2
    assert sum(model.sizes) == 5


async def test_batch_never_exceeds_max_items(registry: CollectorRegistry) -> None:
    model = FakeModel(gated=True)
    async with make(model, registry, max_batch_size=8) as batcher:
        blocker = asyncio.ensure_future(batcher.submit(-1))
        await model.wait_running()
        many = asyncio.ensure_future(batcher.submit_many(list(range(20))))
        await wait_until(lambda: batcher.queue_depth == 20)
        model.gate.set()
        results = await many
        await blocker

    assert results == [item * 10 for item in range(20)]
    assert model.sizes == [1, 8, 8, 4]


async def test_cost_bounds_batch(registry: CollectorRegistry) -> None:
    model = FakeModel(gated=True)
    batcher = make(model, registry, max_batch_size=32, cost=abs, max_batch_cost=10)
    async with batcher:
        blocker = asyncio.ensure_future(batcher.submit(0))
        await model.wait_running()
        pending = asyncio.ensure_future(batcher.submit_many([6, 5, 4, 3, 2]))
        await wait_until(lambda: batcher.queue_depth == 5)
        model.gate.set()
        await pending
        await blocker

    assert model.batches == [[0], [6], [5, 4], [3, 2]]


async def test_cost_over_max_rejected(registry: CollectorRegistry) -> None:
    async with make(FakeModel(), registry, cost=abs, max_batch_cost=10) as batcher:
        with pytest.raises(InvalidItem, match="exceeds max_batch_cost=10"):
            await batcher.submit(11)
        assert await batcher.submit(2) == 20


async def test_cost_error_fails_only_item(registry: CollectorRegistry) -> None:
    def cost(item: Any) -> float:
        return float(len(item))

    model = FakeModel()
    async with make(model, registry, cost=cost, max_batch_cost=100) as batcher:
        with pytest.raises(InvalidItem, match="cost\\(\\) failed"):
            await batcher.submit(5)
        assert await batcher.submit("ab") == "ab" * 10


async def test_predict_error_isolated_to_item(registry: CollectorRegistry) -> None:
    model = FakeModel(gated=True, poison=(3,))
    async with make(model, registry) as batcher:
        blocker = asyncio.ensure_future(batcher.submit(0))
        await model.wait_running()
        tasks = [asyncio.ensure_future(batcher.submit(item)) for item in range(1, 7)]
        await wait_until(lambda: batcher.queue_depth == 6)
        model.gate.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        await blocker

        after = await batcher.submit(9)

    failed = [
        item
        for item, outcome in zip(range(1, 7), outcomes, strict=True)
        if isinstance(outcome, Exception)
    ]
    assert failed == [3]
    assert isinstance(outcomes[2], ValueError)
    assert outcomes[0] == 10
    assert outcomes[5] == 60
    assert after == 90


async def test_isolation_off_fails_whole_batch(registry: CollectorRegistry) -> None:
    model = FakeModel(gated=True, poison=(3,))
    async with make(model, registry, isolate_errors=False) as batcher:
        blocker = asyncio.ensure_future(batcher.submit(0))
        await model.wait_running()
        tasks = [asyncio.ensure_future(batcher.submit(item)) for item in range(1, 5)]
        await wait_until(lambda: batcher.queue_depth == 4)
        model.gate.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        await blocker

    assert all(isinstance(outcome, ValueError) for outcome in outcomes)
    assert model.sizes == [1, 4]


async def test_collate_error_isolated_to_item(registry: CollectorRegistry) -> None:
    def collate(items: list[Any]) -> list[Any]:
        if "bad" in items:
            raise TypeError("cannot collate 'bad'")
        return items

    model = FakeModel(gated=True)
    async with make(model, registry, collate=collate) as batcher:
        blocker = asyncio.ensure_future(batcher.submit(0))
        await model.wait_running()
        tasks = [asyncio.ensure_future(batcher.submit(item)) for item in (1, "bad", 2)]
        await wait_until(lambda: batcher.queue_depth == 3)
        model.gate.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        await blocker

    assert outcomes[0] == 10
    assert isinstance(outcomes[1], TypeError)
    assert outcomes[2] == 20


async def test_wrong_result_count_fails_batch(registry: CollectorRegistry) -> None:
    async with make(lambda batch: batch[:1], registry, warmup=None) as batcher:
        with pytest.raises(ResultCountError, match="returned 1 results for a batch of 2 items"):
            await batcher.submit_many([1, 2])


async def test_queue_full_rejects(registry: CollectorRegistry) -> None:
    model = FakeModel(gated=True)
    async with make(model, registry, max_queue_size=2) as batcher:
        blocker = asyncio.ensure_future(batcher.submit(0))
        await model.wait_running()
        queued = asyncio.ensure_future(batcher.submit_many([1, 2]))
        await wait_until(lambda: batcher.queue_depth == 2)

        with pytest.raises(QueueFull, match="max_queue_size=2"):
            await batcher.submit(3)

        model.gate.set()
        assert await queued == [10, 20]
        await blocker

    assert outcome_count(registry, "rejected") == 1.0


async def test_timeout_removes_queued_item(registry: CollectorRegistry) -> None:
    model = FakeModel(gated=True)
    async with make(model, registry, timeout_s=0.2) as batcher:
        blocker = asyncio.ensure_future(batcher.submit(0))
        await model.wait_running()

        with pytest.raises(TimeoutError, match=r"timeout_s=0\.2"):
            await batcher.submit(5)
        assert batcher.queue_depth == 0

        model.gate.set()
        await asyncio.gather(blocker, return_exceptions=True)

    assert 5 not in model.seen
    assert outcome_count(registry, "timeout") >= 1.0


async def test_timeout_burst_then_next_wave(registry: CollectorRegistry) -> None:
    model = FakeModel(gated=True)
    async with make(model, registry, timeout_s=0.2, max_batch_size=4) as batcher:
        blocker = asyncio.ensure_future(batcher.submit(0))
        await model.wait_running()
        burst = await asyncio.gather(
            *(batcher.submit(item) for item in range(1, 21)), return_exceptions=True
        )
        model.gate.set()
        await asyncio.gather(blocker, return_exceptions=True)

        wave = await asyncio.gather(*(batcher.submit(item) for item in range(100, 110)))

    assert all(isinstance(outcome, TimeoutError) for outcome in burst)
    assert wave == [item * 10 for item in range(100, 110)]
    assert not set(range(1, 21)) & set(model.seen)


async def test_cancelled_item_never_reaches_model(registry: CollectorRegistry) -> None:
    model = FakeModel(gated=True)
    async with make(model, registry) as batcher:
        blocker = asyncio.ensure_future(batcher.submit(0))
        await model.wait_running()
        doomed = asyncio.ensure_future(batcher.submit(7))
        await wait_until(lambda: batcher.queue_depth == 1)

        doomed.cancel()
        await asyncio.gather(doomed, return_exceptions=True)
        assert batcher.queue_depth == 0

        model.gate.set()
        await blocker
        assert await batcher.submit(8) == 80

    assert 7 not in model.seen
    assert outcome_count(registry, "cancelled") == 1.0


async def test_stop_drains_queue(registry: CollectorRegistry) -> None:
    model = FakeModel(gated=True)
    batcher = make(model, registry)
    await batcher.start()
    blocker = asyncio.ensure_future(batcher.submit(0))
    await model.wait_running()
    queued = [asyncio.ensure_future(batcher.submit(item)) for item in (1, 2, 3)]
    await wait_until(lambda: batcher.queue_depth == 3)

    stopping = asyncio.ensure_future(batcher.stop())
    await wait_until(lambda: batcher.readiness_error() == "stopping")
    with pytest.raises(ShuttingDown):
        await batcher.submit(4)

    model.gate.set()
    await stopping
    assert await asyncio.gather(blocker, *queued) == [0, 10, 20, 30]
    assert 4 not in model.seen


async def test_submit_before_start_rejected(registry: CollectorRegistry) -> None:
    batcher = make(FakeModel(), registry)

    with pytest.raises(NotStarted, match=r"await batcher\.start"):
        await batcher.submit(1)


async def test_restart_after_stop(registry: CollectorRegistry) -> None:
    batcher = make(FakeModel(), registry)
    async with batcher:
        assert await batcher.submit(1) == 10
    async with batcher:
        assert await batcher.submit(2) == 20


async def test_loop_responsive_during_batch(registry: CollectorRegistry) -> None:
    model = FakeModel(gated=True)
    async with make(model, registry) as batcher:
        running = asyncio.ensure_future(batcher.submit(1))
        await model.wait_running()

        # The batch is blocked inside predict, yet the loop still runs other coroutines.
        ticks = 0
        for _ in range(10):
            await asyncio.sleep(0.001)
            ticks += 1

        assert ticks == 10
        assert not running.done()
        model.gate.set()
        await running


def test_invalid_options_rejected() -> None:
    with pytest.raises(ValueError, match="max_batch_size=0"):
        Batcher(FakeModel(), max_batch_size=0)
    with pytest.raises(ValueError, match="pass cost=fn"):
        Batcher(FakeModel(), max_batch_cost=10)
    with pytest.raises(ValueError, match="warmup batch size 64"):
        Batcher(FakeModel(), warmup=[1], warmup_batch_sizes=[64])
