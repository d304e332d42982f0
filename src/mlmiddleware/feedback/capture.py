"""``FeedbackCapture``: a bounded in-memory queue in front of a sink, drained by one thread.

Request handlers never touch a file: ``write()`` only appends to the queue, and a writer
thread hands records to the sink in batches, flushing once per batch. When the sink
fails (disk full, directory unwritable), the records without a waiting client stay in
the queue and are retried every ``retry_interval`` seconds, so they count against
``max_queue`` instead of being dropped.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import os
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import anyio.to_thread

from mlmiddleware.feedback._metrics import feedback_metrics
from mlmiddleware.feedback.sinks import FeedbackSink

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = [
    "CaptureClosedError",
    "FeedbackCapture",
    "QueueFullError",
    "SinkError",
    "as_capture",
]

logger = logging.getLogger("mlmiddleware.feedback")

QueuePolicy = Literal["drop", "block"]

# While the sink keeps failing, the ERROR is repeated at most this often (seconds).
_REPEAT_ERROR_INTERVAL = 60.0


class QueueFullError(Exception):
    """Raised when records do not fit in the queue (after ``block_timeout`` with ``block``)."""


class SinkError(Exception):
    """Raised to a waiting writer when the sink failed to store its records."""


class CaptureClosedError(Exception):
    """Raised when records are written after ``close()``."""


@dataclass(slots=True)
class _Entry:
    # ``records`` is empty for a flush marker; ``waiter`` is set when a caller waits.
    records: list[dict[str, Any]]
    waiter: concurrent.futures.Future[None] | None


class FeedbackCapture:
    """Queue records for a sink and write them from a background thread.

    ``policy`` decides what a full queue does to a new record: ``"drop"`` drops it at once
    and ``"block"`` waits up to ``block_timeout`` seconds for space, then drops it. Both
    count dropped records in ``feedback_records_dropped_total``. ``write()`` never waits
    when it is called on a thread that runs an asyncio event loop, whatever the policy,
    so a sampled prediction cannot stall the server. ``write_and_wait()`` waits off the loop.
    """

    def __init__(
        self,
        sink: FeedbackSink,
        *,
        max_queue: int = 10_000,
        policy: QueuePolicy = "drop",
        block_timeout: float = 1.0,
        batch_size: int = 512,
        retry_interval: float = 1.0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        _check_options(max_queue, policy, block_timeout, batch_size, retry_interval)
        for method in ("write", "flush", "close"):
            if not callable(getattr(sink, method, None)):
                raise TypeError(
                    f"invalid feedback sink {sink!r}: it has no {method}() method; pass a "
                    "JsonlFeedbackSink, LoggingFeedbackSink or CallableFeedbackSink"
                )

        self.sink = sink
        self.max_queue = max_queue
        self.policy = policy
        self.block_timeout = block_timeout
        self.batch_size = batch_size
        self.retry_interval = retry_interval
        self._metrics = feedback_metrics(registry)
        self._cond = threading.Condition()
        self._entries: deque[_Entry] = deque()
        self._queued_records = 0
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._closing = False
        self._healthy = True
        self._last_error: str | None = None
        self._last_error_logged = 0.0

    @property
    def healthy(self) -> bool:
        """``False`` while the sink fails to write or its ``check()`` fails."""
        return self._healthy

    @property
    def last_error(self) -> str | None:
        """The last sink error as ``"OSError: [Errno 28] ...: '/path'"``, or ``None``."""
        return self._last_error

    @property
    def queued_records(self) -> int:
        """Records waiting in memory, including those kept after a failed write."""
        return self._queued_records

    def start(self) -> None:
        """Start the writer thread (idempotent) after probing the sink once."""
        with self._cond:
            if self._thread is not None and self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._thread = threading.Thread(
                target=self._run, name="mlmiddleware-feedback-writer", daemon=True
            )

        self._probe()
        self._thread.start()
        # The thread is a daemon, so records still queued at interpreter exit are flushed here.
        atexit.register(_close_at_exit, weakref.ref(self))
        logger.info("Feedback writer started for %r (pid %d)", self.sink, os.getpid())

    def write(self, record: dict[str, Any]) -> None:
        """Queue ``record`` without waiting for it to be stored; drop it if the queue is full."""
        wait = self.policy == "block" and not _on_event_loop_thread()
        self._offer(_Entry([record], None), self.block_timeout if wait else 0.0)

    async def write_and_wait(self, records: list[dict[str, Any]]) -> None:
        """Queue ``records`` and return once the sink has flushed them.

        Raises ``QueueFullError`` when they do not fit (waiting up to ``block_timeout``
        off the event loop with ``policy="block"``), ``SinkError`` when the sink failed,
        and ``CaptureClosedError`` after ``close()``.
        """
        waiter: concurrent.futures.Future[None] = concurrent.futures.Future()
        entry = _Entry(list(records), waiter)

        blocking = self.policy == "block"
        accepted = self._offer(entry, 0.0, count_drop=not blocking)
        if not accepted and blocking and not self._closing:
            accepted = await anyio.to_thread.run_sync(self._offer, entry, self.block_timeout)
        if not accepted:
            if self._closing:
                raise CaptureClosedError("feedback capture is closed")
            raise QueueFullError(f"feedback queue is full ({self.max_queue} records): retry later")
        await _wait_future(waiter)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every record queued before this call is stored.

        Raises ``TimeoutError`` after ``timeout`` seconds and ``SinkError`` when the sink
        failed; records without a waiting client stay queued for the next retry.
        """
        if self._closing:
            return
        self.start()
        waiter: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._cond:
            self._entries.append(_Entry([], waiter))
            self._cond.notify_all()
        try:
            waiter.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(
                f"feedback flush timed out after {timeout} s with "
                f"{self._queued_records} records queued"
            ) from None

    def close(self, timeout: float | None = None) -> None:
        """Write every queued record, stop the writer thread and close the sink.

        Records still unwritten when the sink keeps failing are dropped, counted and
        logged at ERROR.
        """
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify_all()
            thread = self._thread if self._pid == os.getpid() else None

        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                logger.error(
                    "Feedback writer for %r did not finish within %s s; %d records not written",
                    self.sink,
                    timeout,
                    self._queued_records,
                )
        else:
            self._run()

        try:
            self.sink.close()
        except Exception as exc:
            logger.error("Closing feedback sink %r failed: %s", self.sink, exc, exc_info=True)
        logger.info("Feedback writer stopped for %r (pid %d)", self.sink, os.getpid())

    def check_ready(self) -> bool:
        """Readiness check: raise ``SinkError`` naming the error while the sink fails."""
        if self._healthy:
            return True
        raise SinkError(f"feedback sink {self.sink!r} cannot write: {self._last_error}")

    def _offer(self, entry: _Entry, timeout: float, *, count_drop: bool = True) -> bool:
        count = len(entry.records)
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._closing and self._queued_records + count > self.max_queue:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or count > self.max_queue:
                    break
                self._cond.wait(remaining)

            if self._closing or self._queued_records + count > self.max_queue:
                if count_drop:
                    self._metrics.dropped.inc(count)
                return False
            self._entries.append(entry)
            self._queued_records += count
            self._cond.notify_all()

        if self._thread is None or self._pid != os.getpid():
            self.start()
        return True

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if not batch:
                self._probe()
                continue
            closing = self._closing
            if self._write_batch(batch):
                continue
            if closing:
                # The attempt after close() began failed too, so the queue cannot drain.
                self._give_up()
                return
            if self._closing:
                continue
            with self._cond:
                self._cond.wait_for(lambda: self._closing, timeout=self.retry_interval)

    def _next_batch(self) -> list[_Entry] | None:
        """Take up to ``batch_size`` records: ``[]`` means probe the sink, ``None`` exit."""
        with self._cond:
            while not self._entries and not self._closing:
                if self._healthy:
                    self._cond.wait()
                    continue
                self._cond.wait(self.retry_interval)
                if not self._entries and not self._closing:
                    return []
            if not self._entries:
                return None

            batch: list[_Entry] = []
            count = 0
            while self._entries:
                size = len(self._entries[0].records)
                if batch and count + size > self.batch_size:
                    break
                entry = self._entries.popleft()
                batch.append(entry)
                count += len(entry.records)
            return batch

    def _write_batch(self, batch: list[_Entry]) -> bool:
        """Hand ``batch`` to the sink and flush; on failure keep or fail its entries."""
        written: list[_Entry] = []
        try:
            for entry in batch:
                if self._write_entry(entry):
                    written.append(entry)
            self.sink.flush()
        except Exception as exc:
            self._on_failure(batch, exc)
            return False

        self._on_success(written)
        return True

    def _write_entry(self, entry: _Entry) -> bool:
        """Write one entry's records; ``False`` if a record could not be encoded."""
        for index, record in enumerate(entry.records):
            try:
                self.sink.write(record)
            except (TypeError, ValueError) as exc:
                self._metrics.dropped.inc(len(entry.records) - index)
                logger.error(
                    "Feedback record %s (request_id %s) could not be written and is dropped: %s",
                    record.get("id"),
                    record.get("request_id"),
                    exc,
                )
                self._finish_entry(entry, SinkError(f"record could not be encoded: {exc}"))
                return False
        return True

    def _on_success(self, written: list[_Entry]) -> None:
        kinds: dict[str, int] = {}
        for entry in written:
            for record in entry.records:
                kind = str(record.get("kind") or "unknown")
                kinds[kind] = kinds.get(kind, 0) + 1
            self._finish_entry(entry, None)
        for kind, count in kinds.items():
            self._metrics.records.labels(kind=kind).inc(count)

        if not self._healthy:
            self._healthy = True
            logger.info("Feedback sink %r is writable again", self.sink)

    def _on_failure(self, batch: list[_Entry], exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {exc}"
        retried: list[_Entry] = []
        for entry in batch:
            if entry.waiter is None and entry.records:
                retried.append(entry)
            else:
                self._finish_entry(entry, SinkError(error))

        with self._cond:
            self._entries.extendleft(reversed(retried))
            self._cond.notify_all()
        self._mark_failed(error)

    def _finish_entry(self, entry: _Entry, error: BaseException | None) -> None:
        with self._cond:
            self._queued_records -= len(entry.records)
            self._cond.notify_all()
        if entry.waiter is None:
            return

        try:
            if error is None:
                entry.waiter.set_result(None)
            else:
                entry.waiter.set_exception(error)
        except concurrent.futures.InvalidStateError:
            # The waiting request was cancelled; its records are stored anyway.
            pass

    def _mark_failed(self, error: str) -> None:
        now = time.monotonic()
        changed = error != self._last_error or self._healthy
        self._healthy = False
        self._last_error = error
        if changed or now - self._last_error_logged >= _REPEAT_ERROR_INTERVAL:
            self._last_error_logged = now
            logger.error(
                "Feedback sink %r failed: %s; %d records kept in memory, retrying every %s s",
                self.sink,
                error,
                self._queued_records,
                self.retry_interval,
            )

    def _probe(self) -> None:
        check = getattr(self.sink, "check", None)
        if check is None:
            return
        try:
            check()
        except OSError as exc:
            self._mark_failed(f"{type(exc).__name__}: {exc}")
            return
        if not self._healthy and not self._entries:
            self._healthy = True
            logger.info("Feedback sink %r is writable again", self.sink)

    def _give_up(self) -> None:
        with self._cond:
            entries = list(self._entries)
            self._entries.clear()
        lost = sum(len(entry.records) for entry in entries)
        for entry in entries:
            self._finish_entry(entry, SinkError(self._last_error or "feedback capture closed"))
        if lost:
            self._metrics.dropped.inc(lost)
            logger.error(
                "Feedback sink %r still fails at close (%s); dropped %d unwritten records",
                self.sink,
                self._last_error,
                lost,
            )

    def __repr__(self) -> str:
        return f"FeedbackCapture({self.sink!r}, policy={self.policy!r})"


def as_capture(sink: FeedbackSink, *, registry: CollectorRegistry | None = None) -> FeedbackCapture:
    """Return ``sink`` if it is a ``FeedbackCapture``, else the one capture that wraps it.

    ``instrument(feedback=sink)`` and ``Batcher(capture=sink)`` both call it, so one sink
    passed to both gets one queue and one writer thread.
    """
    if isinstance(sink, FeedbackCapture):
        return sink
    with _captures_lock:
        try:
            capture = _captures.get(sink)
        except TypeError:
            return FeedbackCapture(sink, registry=registry)
        if capture is None:
            capture = FeedbackCapture(sink, registry=registry)
            _captures[sink] = capture
        return capture


_captures_lock = threading.Lock()
_captures: weakref.WeakKeyDictionary[Any, FeedbackCapture] = weakref.WeakKeyDictionary()


def _check_options(
    max_queue: int,
    policy: str,
    block_timeout: float,
    batch_size: int,
    retry_interval: float,
) -> None:
    if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 1:
        raise ValueError(f"invalid max_queue={max_queue!r}: use a record count >= 1")
    if policy not in ("drop", "block"):
        raise ValueError(f"invalid policy={policy!r}: use 'drop' or 'block'")
    if not block_timeout >= 0:
        raise ValueError(f"invalid block_timeout={block_timeout!r}: use seconds >= 0")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"invalid batch_size={batch_size!r}: use a record count >= 1")
    if not retry_interval > 0:
        raise ValueError(f"invalid retry_interval={retry_interval!r}: use seconds > 0")


def _on_event_loop_thread() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def _wait_future(waiter: concurrent.futures.Future[None]) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        # Not asyncio (trio through anyio): wait in a worker thread instead.
        await anyio.to_thread.run_sync(waiter.result)
        return
    await asyncio.wrap_future(waiter)


def _close_at_exit(reference: weakref.ref[FeedbackCapture]) -> None:
    capture = reference()
    if capture is not None:
        capture.close(timeout=10.0)
