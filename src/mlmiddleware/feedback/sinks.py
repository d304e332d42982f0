"""The feedback sink protocol, and the sinks that write to a logger or to user code.

A sink receives finished records (``dict`` objects that ``encode_record`` can encode).
``FeedbackCapture`` calls it from one writer thread; code that calls a sink directly must
call ``flush()`` before it relies on a record being stored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

__all__ = ["CallableFeedbackSink", "FeedbackSink", "LoggingFeedbackSink"]

FEEDBACK_LOGGER = "mlmiddleware.feedback"


@runtime_checkable
class FeedbackSink(Protocol):
    """Destination of feedback and prediction records.

    ``write`` may buffer. ``flush`` stores everything written so far or raises
    ``OSError``, and the caller then writes the failed records again. The JSONL sink
    discards them on failure, so it stores each record once, but other sinks may store
    some records twice.
    ``close`` flushes and releases the destination. A sink may also define ``check()``,
    which raises ``OSError`` when the destination cannot be written now.
    """

    def write(self, record: dict[str, Any]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class LoggingFeedbackSink:
    """Write each record as one log record on the ``mlmiddleware.feedback`` logger.

    The record is attached as the ``feedback_record`` extra field, which the toolkit's
    JSON formatter (``instrument(json_logs=True)``) writes as a nested object. Use it where
    a log collector already ships every container's output.
    """

    def __init__(self, *, logger_name: str = FEEDBACK_LOGGER, level: int = logging.INFO) -> None:
        self.logger = logging.getLogger(logger_name)
        self.level = level

    def write(self, record: dict[str, Any]) -> None:
        self.logger.log(
            self.level,
            "Feedback record kind=%s request_id=%s",
            record.get("kind"),
            record.get("request_id"),
            extra={"feedback_record": record},
        )

    def flush(self) -> None:
        logger: logging.Logger | None = self.logger
        while logger is not None:
            for handler in logger.handlers:
                handler.flush()
            logger = logger.parent if logger.propagate else None

    def close(self) -> None:
        self.flush()

    def __repr__(self) -> str:
        return f"LoggingFeedbackSink(logger_name={self.logger.name!r})"


class CallableFeedbackSink:
    """Hand each record to user code, such as a Kafka or Pub/Sub producer.

    ``FeedbackCapture`` calls ``write`` with each record on its writer thread, not on the
    event loop, so it may block. ``flush`` and ``close`` are optional no-argument callables.
    """

    def __init__(
        self,
        write: Callable[[dict[str, Any]], object],
        *,
        flush: Callable[[], object] | None = None,
        close: Callable[[], object] | None = None,
    ) -> None:
        if not callable(write):
            raise TypeError(f"invalid write={write!r}: pass a callable that takes one record")
        self._write = write
        self._flush = flush
        self._close = close

    def write(self, record: dict[str, Any]) -> None:
        self._write(record)

    def flush(self) -> None:
        if self._flush is not None:
            self._flush()

    def close(self) -> None:
        self.flush()
        if self._close is not None:
            self._close()

    def __repr__(self) -> str:
        return f"CallableFeedbackSink({self._write!r})"
