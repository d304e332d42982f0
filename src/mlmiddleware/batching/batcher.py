"""``Batcher``: queue items from many callers and run them through the model in batches.

The event loop only enqueues items and resolves futures. A dedicated worker thread owns
the model: it forms each batch from the queue the moment it is free, so the next batch
collects while the current one runs, and a lone item at low load starts at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from mlmiddleware._context import get_request_id
from mlmiddleware.batching._execution import (
    BatchRunner,
    Outcome,
    default_collate,
    default_uncollate,
)
from mlmiddleware.batching._metrics import BatcherMetrics
from mlmiddleware.batching.errors import (
    InvalidItem,
    NotStarted,
    QueueFull,
    ShuttingDown,
    WorkerDied,
)

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["Batcher"]

logger = logging.getLogger("mlmiddleware.batching")

_QUEUED, _RUNNING, _DONE = 0, 1, 2


class _State(enum.Enum):
    NEW = "not started"
    WARMING = "warming up"
    READY = "ready"
    STOPPING = "stopping"
    DEAD = "worker thread died"


class _Item:
    """One queued item: its value, the future of its caller and its place in the lifecycle."""

    __slots__ = ("cost", "enqueued_at", "future", "request_id", "state", "value")

    def __init__(
        self, value: Any, cost: float, future: asyncio.Future[Any], request_id: str | None
    ) -> None:
        self.value = value
        self.cost = cost
        self.future = future
        self.request_id = request_id
        self.enqueued_at = time.monotonic()
        self.state = _QUEUED


class Batcher:
    """Dynamic batcher for one model.

    ``await submit(item)`` returns the result of that item. ``predict(batch)`` receives
    ``collate(items)`` (a list by default) and returns a value that ``uncollate`` splits into
    one result per item (``list(output)`` by default).

    Batch formation: when the worker is free it takes every queued item, up to
    ``max_batch_size`` items and ``max_batch_cost`` total ``cost``. With
    ``dispatch_when_idle=True`` (the default) it does so at once. With ``False`` it waits
    until the batch is full or ``max_wait_ms`` have passed since its first item. Because
    one worker thread runs the batches, items queued while a batch runs always join the
    next batch, so ``max_wait_ms`` only matters when ``dispatch_when_idle=False``.

    ``timeout_s`` bounds the wait of each ``submit`` call (queue and model time). A timed
    out or cancelled item leaves the queue if it has not been dispatched yet.
    """

    def __init__(
        self,
        predict: Callable[[Any], Any],
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        max_queue_size: int = 1024,
        timeout_s: float = 30.0,
        name: str = "model",
        collate: Callable[[list[Any]], Any] | None = None,
        uncollate: Callable[[Any], Sequence[Any]] | None = None,
        warmup: Sequence[Any] | None = None,
        warmup_batch_sizes: Sequence[int] | None = None,
        stuck_after_s: float = 60.0,
        dispatch_when_idle: bool = True,
        cost: Callable[[Any], float] | None = None,
        max_batch_cost: float | None = None,
        isolate_errors: bool = True,
        registry: CollectorRegistry | None = None,
        capture: Any = None,
        capture_rate: float = 0.1,
    ) -> None:
        _check_positive(max_batch_size=max_batch_size, max_queue_size=max_queue_size)
        _check_positive(timeout_s=timeout_s, stuck_after_s=stuck_after_s)
        if max_wait_ms < 0:
            raise ValueError(f"invalid max_wait_ms={max_wait_ms!r}: use a duration >= 0")
        if max_batch_cost is not None and cost is None:
            raise ValueError("max_batch_cost is set but cost is None: pass cost=fn(item) too")
        if not 0.0 <= capture_rate <= 1.0:
            raise ValueError(f"invalid capture_rate={capture_rate!r}: use a fraction from 0 to 1")

        self.name = name
        self.max_batch_size = max_batch_size
        self.max_wait_ms = max_wait_ms
        self.max_queue_size = max_queue_size
        self.timeout_s = timeout_s
        self.stuck_after_s = stuck_after_s
        self.dispatch_when_idle = dispatch_when_idle
        self.cost = cost
        self.max_batch_cost = max_batch_cost
        self.capture = capture
        self.capture_rate = capture_rate
        self.registry = registry
        self.service: str | None = None
        self.model_version: str | None = None
        self.warmup = list(warmup) if warmup is not None else None
        self.warmup_batch_sizes = _warmup_sizes(warmup_batch_sizes, max_batch_size)
        self._runner = BatchRunner(
            name=name,
            predict=predict,
            collate=collate or default_collate,
            uncollate=uncollate or default_uncollate,
            isolate_errors=isolate_errors,
        )

        self._cond = threading.Condition()
        self._queue: deque[_Item] = deque()
        self._state = _State.NEW
        self._metrics: BatcherMetrics | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._exited: asyncio.Future[None] | None = None
        self._worker_waiting = False
        self._stopping = False
        self._worker_error: BaseException | None = None
        self._running_since: float | None = None
        self._running: list[_Item] = []
        self._last_progress = time.monotonic()
        self._heartbeat_s = min(1.0, stuck_after_s / 4)

    # -- health protocol -------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        """Items waiting in the queue, not counting the batch being run."""
        return len(self._queue)

    @property
    def last_progress(self) -> float:
        """``time.monotonic()`` of the last finished batch or idle heartbeat of the worker."""
        return self._last_progress

    def liveness_error(self) -> str | None:
        """Return why the worker is not making progress, or ``None`` when it is healthy."""
        if self._worker_error is not None:
            error = self._worker_error
            return f"worker thread died: {type(error).__name__}: {error}"

        running_since = self._running_since
        if running_since is not None:
            running_s = time.monotonic() - running_since
            if running_s > self.stuck_after_s:
                return (
                    f"batch running for {running_s:.1f} s, "
                    f"longer than stuck_after_s={self.stuck_after_s}"
                )
        return None

    def readiness_error(self) -> str | None:
        """Return why the batcher cannot take traffic, or ``None`` when it is ready."""
        if self._state is not _State.READY:
            return str(self._state.value)
        return self.liveness_error()

    # -- lifecycle -------------------------------------------------------------------

    def bind(
        self,
        *,
        registry: CollectorRegistry | None = None,
        service: str | None = None,
        model_version: str | None = None,
    ) -> None:
        """Set the metrics registry (unless one was given) and the service labels."""
        if self._state is not _State.NEW:
            raise RuntimeError(f"batcher {self.name!r} is running: bind it before start()")
        if self.registry is None:
            self.registry = registry
        self.service = service if service is not None else self.service
        self.model_version = model_version if model_version is not None else self.model_version
        self._metrics = None

    async def start(self) -> None:
        """Start the worker thread, run the warmup batches and turn readiness on."""
        if self._state is not _State.NEW:
            raise RuntimeError(f"batcher {self.name!r} is already started: call start() once")

        loop = asyncio.get_running_loop()
        if self.capture is not None:
            self.capture = _queued_capture(self.capture, self.registry)
        if self._metrics is None:
            self._metrics = BatcherMetrics(
                model=self.name, registry=self.registry, queue_depth=lambda: len(self._queue)
            )
        self._loop = loop
        self._worker_error = None
        self._stopping = False
        self._exited = loop.create_future()
        warmed: asyncio.Future[None] = loop.create_future()
        self._state = _State.WARMING
        self._thread = threading.Thread(
            target=self._work, args=(warmed,), name=f"mlmiddleware-batcher-{self.name}", daemon=True
        )
        self._thread.start()

        try:
            await warmed
        except BaseException:
            await self._wait_exited()
            self._state = _State.NEW
            raise
        if self._state is not _State.WARMING:
            # stop() ran during the warmup, and the worker has exited or is exiting.
            return
        self._state = _State.READY
        logger.info("Batcher %s ready (max_batch_size=%d)", self.name, self.max_batch_size)

    async def stop(self) -> None:
        """Reject new items, finish every queued item, then stop the worker thread."""
        if self._state is _State.NEW:
            return
        if self._state is not _State.DEAD:
            self._state = _State.STOPPING
        logger.info("Batcher %s stopping, draining %d queued items", self.name, len(self._queue))

        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        await self._wait_exited()
        self._state = _State.NEW
        if self.capture is not None:
            await self._flush_capture()
        logger.info("Batcher %s stopped", self.name)

    async def _flush_capture(self) -> None:
        # Closing the sink is left to its owner (instrument(feedback=...)), which may
        # share it with other batchers; the drained batches' records must be stored first.
        try:
            await asyncio.to_thread(self.capture.flush, self.timeout_s)
        except Exception as exc:
            logger.error(
                "Batcher %s: captured predictions were not all stored at stop: %s: %s",
                self.name,
                type(exc).__name__,
                exc,
            )

    async def __aenter__(self) -> Batcher:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _wait_exited(self) -> None:
        if self._exited is not None:
            await asyncio.shield(self._exited)
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    # -- submission (event loop) -----------------------------------------------------

    async def submit(self, item: Any) -> Any:
        """Queue ``item``, wait for its batch, and return its result.

        Raises ``QueueFull``, ``ShuttingDown``, ``NotStarted``, ``WorkerDied`` or
        ``InvalidItem`` before queueing, ``TimeoutError`` after ``timeout_s``, and whatever
        the model raised on this item.
        """
        results = await self.submit_many([item])
        return results[0]

    async def submit_many(self, items: Sequence[Any]) -> list[Any]:
        """Queue ``items`` as separate items (all or none) and return their results in order.

        Each item can share a batch with items of other callers, and a request with more
        items than ``max_batch_size`` spreads over several batches. The first failure is
        raised, and the other items of the call are then withdrawn.
        """
        queued = self._enqueue(items)
        if not queued:
            return []
        assert self._loop is not None and self._metrics is not None
        timer = self._loop.call_later(self.timeout_s, self._expire, queued)

        try:
            if len(queued) == 1:
                return [await queued[0].future]
            return list(await asyncio.gather(*(entry.future for entry in queued)))
        finally:
            timer.cancel()
            self._settle(queued)

    def _enqueue(self, values: Sequence[Any]) -> list[_Item]:
        self._check_accepting(len(values))
        costs = [self._cost_of(value) for value in values]
        loop = self._loop
        assert loop is not None and self._metrics is not None
        request_id = get_request_id()

        with self._cond:
            if len(self._queue) + len(values) > self.max_queue_size:
                self._metrics.count("rejected", len(values))
                raise QueueFull(
                    f"batcher {self.name!r} queue is full ({len(self._queue)} of "
                    f"max_queue_size={self.max_queue_size} items queued, {len(values)} more "
                    "requested): retry later or add replicas"
                )
            queued = [
                _Item(value, cost, loop.create_future(), request_id)
                for value, cost in zip(values, costs, strict=True)
            ]
            self._queue.extend(queued)
            if self._worker_waiting:
                self._cond.notify()
        return queued

    def _check_accepting(self, count: int) -> None:
        state = self._state
        if state is _State.READY:
            return

        if self._metrics is not None:
            self._metrics.count("rejected", count)
        if state is _State.STOPPING:
            raise ShuttingDown(f"batcher {self.name!r} is shutting down: retry on another replica")
        if state is _State.DEAD:
            raise WorkerDied(f"batcher {self.name!r}: {self.liveness_error()}: restart the process")
        raise NotStarted(
            f"batcher {self.name!r} is {state.value}: call 'await batcher.start()' first, "
            "or pass it to instrument(app, batchers=[...])"
        )

    def _cost_of(self, value: Any) -> float:
        if self.cost is None:
            return 0.0
        try:
            cost = float(self.cost(value))
        except Exception as exc:
            raise InvalidItem(f"cost() failed on the item: {type(exc).__name__}: {exc}") from exc

        if self.max_batch_cost is not None and cost > self.max_batch_cost:
            raise InvalidItem(
                f"item cost {cost:g} exceeds max_batch_cost={self.max_batch_cost:g}: "
                "split or shorten the item"
            )
        return cost

    def _expire(self, queued: list[_Item]) -> None:
        error = TimeoutError(
            f"batcher {self.name!r}: no result within timeout_s={self.timeout_s:g}: the model is "
            "overloaded or slow. Retry later, add replicas or raise timeout_s"
        )
        for entry in queued:
            if not entry.future.done():
                self._withdraw(entry)
                entry.future.set_exception(error)

    def _withdraw(self, entry: _Item) -> None:
        with self._cond:
            if entry.state == _QUEUED:
                self._queue.remove(entry)
                entry.state = _DONE

    def _settle(self, queued: list[_Item]) -> None:
        # Count every item of the call once, and withdraw those a failure or a
        # cancellation left behind so that they never reach the model.
        assert self._metrics is not None
        for entry in queued:
            if entry.state == _QUEUED:
                self._withdraw(entry)
            future = entry.future
            if not future.done():
                future.cancel()

            if future.cancelled():
                outcome = "cancelled"
            elif future.exception() is None:
                outcome = "ok"
            elif isinstance(future.exception(), TimeoutError):
                outcome = "timeout"
            else:
                outcome = "error"
            self._metrics.count(outcome)

    # -- worker thread ---------------------------------------------------------------

    def _work(self, warmed: asyncio.Future[None]) -> None:
        try:
            self._run_warmup()
        except BaseException as exc:
            logger.error("Batcher %s warmup failed: %s: %s", self.name, type(exc).__name__, exc)
            self._post(_resolve, warmed, exc)
            self._post(_resolve, self._exited, None)
            return
        self._post(_resolve, warmed, None)

        try:
            self._serve()
        except BaseException as exc:
            self._die(exc)
        finally:
            self._post(_resolve, self._exited, None)

    def _run_warmup(self) -> None:
        if not self.warmup:
            return

        started = time.monotonic()
        for size in self.warmup_batch_sizes:
            values = [self.warmup[index % len(self.warmup)] for index in range(size)]
            self._runner.run(values)
        logger.info(
            "Batcher %s warmed up with batch sizes %s in %.2f s",
            self.name,
            list(self.warmup_batch_sizes),
            time.monotonic() - started,
        )

    def _serve(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._execute(batch)

    def _next_batch(self) -> list[_Item] | None:
        with self._cond:
            while not self._batch_due():
                if not self._queue and self._stopping:
                    return None
                self._worker_waiting = True
                self._cond.wait(self._wait_timeout())
                self._worker_waiting = False
                self._last_progress = time.monotonic()

            batch = self._take()
            self._running = batch
            self._running_since = time.monotonic()
            return batch

    def _batch_due(self) -> bool:
        if not self._queue:
            return False
        if self.dispatch_when_idle or self._stopping:
            return True
        if len(self._queue) >= self.max_batch_size:
            return True
        return time.monotonic() >= self._queue[0].enqueued_at + self.max_wait_ms / 1000

    def _wait_timeout(self) -> float:
        if not self._queue:
            return self._heartbeat_s
        deadline = self._queue[0].enqueued_at + self.max_wait_ms / 1000
        return min(self._heartbeat_s, max(deadline - time.monotonic(), 0.0))

    def _take(self) -> list[_Item]:
        queue = self._queue
        batch: list[_Item] = []
        total_cost = 0.0
        while queue and len(batch) < self.max_batch_size:
            cost = queue[0].cost
            if (
                self.max_batch_cost is not None
                and batch
                and total_cost + cost > self.max_batch_cost
            ):
                break
            entry = queue.popleft()
            entry.state = _RUNNING
            batch.append(entry)
            total_cost += cost
        return batch

    def _execute(self, batch: list[_Item]) -> None:
        assert self._metrics is not None
        started = self._running_since or time.monotonic()
        for entry in batch:
            self._metrics.queue_wait.observe(started - entry.enqueued_at)

        values = [entry.value for entry in batch]
        outcomes = self._runner.run_isolated(values, [entry.request_id for entry in batch])

        finished = time.monotonic()
        self._metrics.observe_batch(len(batch), finished - started)
        self._running = []
        self._running_since = None
        self._last_progress = finished
        self._post(_deliver, batch, outcomes)

    def _die(self, exc: BaseException) -> None:
        self._worker_error = exc
        self._state = _State.DEAD
        self._running_since = None
        logger.error("Batcher %s worker thread died", self.name, exc_info=exc)

        with self._cond:
            stranded = self._running + list(self._queue)
            self._running = []
            self._queue.clear()
        error = WorkerDied(
            f"batcher {self.name!r}: worker thread died: {type(exc).__name__}: {exc}"
        )
        self._post(_deliver, stranded, [(False, error)] * len(stranded))

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        # The loop can close between the check and the call. No caller waits then.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(callback, *args)


def _queued_capture(capture: Any, registry: CollectorRegistry | None) -> Any:
    """Put a bounded queue and a writer thread in front of a raw feedback sink.

    The endpoint writes captured predictions on the event loop, so a sink that writes to
    a file or the network directly would stall it. The same sink passed to
    ``instrument(feedback=...)`` shares this queue and writer thread.
    """
    from mlmiddleware.feedback.capture import as_capture

    queued = as_capture(capture, registry=registry)
    queued.start()
    return queued


def _resolve(future: asyncio.Future[None] | None, error: BaseException | None) -> None:
    if future is None or future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _deliver(batch: list[_Item], outcomes: list[Outcome]) -> None:
    for entry, (succeeded, value) in zip(batch, outcomes, strict=True):
        entry.state = _DONE
        future = entry.future
        if future.done():
            continue
        if succeeded:
            future.set_result(value)
        else:
            future.set_exception(value)


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ValueError(f"invalid {name}={value!r}: use a value > 0")


def _warmup_sizes(sizes: Sequence[int] | None, max_batch_size: int) -> tuple[int, ...]:
    if sizes is None:
        powers = [
            2**power for power in range(max_batch_size.bit_length()) if 2**power < max_batch_size
        ]
        return (*powers, max_batch_size)

    for size in sizes:
        if not 1 <= size <= max_batch_size:
            raise ValueError(
                f"invalid warmup batch size {size!r}: "
                f"use sizes from 1 to max_batch_size={max_batch_size}"
            )
    return tuple(sizes)
