"""Cheap ``LogRecord`` construction for records written on every request.

``Logger.log`` looks up the caller's frame and ``LogRecord.__init__`` derives a dozen
attributes (file name, module, process name) on each call, several microseconds that the
access log would pay per request. ``RecordMaker`` derives the constant attributes once
and fills in only the time, the thread and the fields of each record. Handlers, filters
and formatters see an ordinary ``LogRecord``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

__all__ = ["RecordMaker"]

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


class RecordMaker:
    """Make records for one logger and one message with per-record ``fields``."""

    def __init__(self, logger: logging.Logger, message: str, *, source: str) -> None:
        self.logger = logger
        self._template: dict[str, Any] = {
            "name": logger.name,
            "msg": message,
            "args": (),
            "pathname": source,
            "filename": os.path.basename(source),
            "module": os.path.splitext(os.path.basename(source))[0],
            "lineno": 0,
            "funcName": None,
            "exc_info": None,
            "exc_text": None,
            "stack_info": None,
            "processName": "MainProcess",
            "taskName": None,
        }
        self._thread_names: dict[int, str] = {}

    def make(
        self, level: int, fields: Mapping[str, Any], exc_info: ExcInfo | None = None
    ) -> logging.LogRecord:
        """Return a record at ``level`` whose extra attributes are ``fields``."""
        if logging.getLogRecordFactory() is not logging.LogRecord:
            # A custom factory must see every record; take the standard, slower path.
            return self.logger.makeRecord(
                self.logger.name, level, self._template["pathname"], 0,
                self._template["msg"], (), exc_info, extra=dict(fields),
            )  # fmt: skip

        record = logging.LogRecord.__new__(logging.LogRecord)
        attributes = record.__dict__
        attributes.update(self._template)

        created = time.time()
        thread = threading.get_ident()
        attributes["created"] = created
        attributes["msecs"] = (created - int(created)) * 1000.0
        attributes["relativeCreated"] = (created - logging._startTime) * 1000.0  # type: ignore[attr-defined]
        attributes["levelno"] = level
        attributes["levelname"] = logging.getLevelName(level)
        attributes["thread"] = thread
        attributes["threadName"] = self._thread_name(thread)
        attributes["process"] = os.getpid()
        attributes["exc_info"] = exc_info
        attributes.update(fields)
        return record

    def _thread_name(self, ident: int) -> str:
        name = self._thread_names.get(ident)
        if name is None:
            name = threading.current_thread().name
            self._thread_names[ident] = name
        return name
