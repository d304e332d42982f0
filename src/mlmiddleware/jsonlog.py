"""JSON logs on stderr: one orjson-encoded object per line, for any library's records.

A collector (Fluent Bit, Vector, Loki, Cloud Logging) reads each line as one JSON object
with no parsing rules. Every record is written with a single ``write`` call, so lines from
several processes sharing a pipe never split while each write stays whole.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import IO, Any

import orjson

from mlmiddleware._context import current_request_context

__all__ = [
    "JsonFormatter",
    "JsonHandler",
    "add_static_fields",
    "adopt_third_party_loggers",
    "configure_logging",
    "is_configured",
    "sole_json_handler",
]

# Attributes every LogRecord has; any other attribute came from ``extra=``.
_RECORD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime", "taskName"}
)
_RESERVED_FIELDS = frozenset(
    {
        "ts",
        "level",
        "logger",
        "message",
        "pid",
        "service",
        "request_id",
        "trace_id",
        "span_id",
        "exc_type",
        "exc_message",
        "stack",
        "stack_info",
    }
)
# An ``extra=`` key that collides with a field above is kept under this prefix.
EXTRA_PREFIX = "extra_"
# Distinct attribute-name tuples remembered by the formatter; call sites are few.
_EXTRA_CACHE_SIZE = 256

_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE

_THIRD_PARTY_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.asgi")
_REPLACED_ACCESS_LOGGERS = ("uvicorn.access",)


def _fallback_str(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


class JsonFormatter(logging.Formatter):
    """Format a ``LogRecord`` as one line of JSON (see ``docs/logging.md`` for the fields)."""

    def __init__(
        self, *, service: str | None = None, static_fields: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__()
        self._static: dict[str, Any] = {}
        # Output names that an ``extra=`` key must not overwrite.
        self._taken_names = _RESERVED_FIELDS
        self._extra_cache: dict[tuple[str, ...], tuple[tuple[str, str], ...]] = {}
        if service is not None:
            self._static["service"] = service
        if static_fields:
            self.add_static_fields(static_fields)
        self._ts_second = -1
        self._ts_prefix = ""
        self._pid = os.getpid()

    def add_static_fields(self, fields: Mapping[str, Any]) -> None:
        """Add fields that every later record carries (``model_version``, a region...)."""
        for key in fields:
            if key in _RESERVED_FIELDS and key != "service":
                raise ValueError(f"invalid static field {key!r}: it is a reserved log field name")
        self._static = {**self._static, **fields}
        self._taken_names = _RESERVED_FIELDS | self._static.keys()
        self._extra_cache = {}

    def format(self, record: logging.LogRecord) -> str:
        return self.format_bytes(record)[:-1].decode("utf-8")

    def format_bytes(self, record: logging.LogRecord) -> bytes:
        """Return the record as UTF-8 JSON ending with a newline."""
        return _dumps(self.to_dict(record))

    def event_bytes(
        self, levelname: str, logger_name: str, message: str, event_fields: Mapping[str, Any]
    ) -> bytes:
        """Encode, as ``format_bytes`` would, an event that never became a ``LogRecord``.

        ``JsonHandler.write_event`` uses it for the access log's fast path.
        """
        fields = self._base_fields(time.time(), levelname, logger_name, message, self._pid)
        taken = self._taken_names
        for key, value in event_fields.items():
            fields[EXTRA_PREFIX + key if key in taken else key] = value
        return _dumps(fields)

    def to_dict(self, record: logging.LogRecord) -> dict[str, Any]:
        """Build the field dictionary of ``record`` in output order."""
        pid = record.process if record.process is not None else self._pid
        fields = self._base_fields(
            record.created, record.levelname, record.name, _message_of(record), pid
        )
        attributes = record.__dict__
        for key, name in self._extra_names(tuple(attributes)):
            fields[name] = attributes[key]

        if record.exc_info and record.exc_info[0] is not None:
            self._add_exception(fields, record)
        if record.stack_info:
            fields["stack_info"] = record.stack_info
        return fields

    def _base_fields(
        self, created: float, levelname: str, logger_name: str, message: str, pid: int
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "ts": self._timestamp(created),
            "level": levelname,
            "logger": logger_name,
            "message": message,
            "pid": pid,
        }
        if self._static:
            fields.update(self._static)

        context = current_request_context.get()
        if context is not None:
            fields["request_id"] = context.request_id
            if context.trace_id is not None:
                fields["trace_id"] = context.trace_id
                fields["span_id"] = context.span_id
        return fields

    def _extra_names(self, keys: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
        """Return ``(attribute, output name)`` for the ``extra=`` attributes among ``keys``.

        Records from one call site share their attribute names, so the result is cached
        per name tuple and the access log pays for the set arithmetic once.
        """
        names = self._extra_cache.get(keys)
        if names is None:
            taken = self._taken_names
            names = tuple(
                (key, EXTRA_PREFIX + key if key in taken else key)
                for key in keys
                if key not in _RECORD_ATTRS
            )
            if len(self._extra_cache) >= _EXTRA_CACHE_SIZE:
                self._extra_cache.clear()
            self._extra_cache[keys] = names
        return names

    def _add_exception(self, fields: dict[str, Any], record: logging.LogRecord) -> None:
        exc_type, exc_value, _ = record.exc_info  # type: ignore[misc]
        fields["exc_type"] = _qualified_name(exc_type)
        fields["exc_message"] = _fallback_str(exc_value)
        if not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)  # type: ignore[arg-type]
        fields["stack"] = record.exc_text

    def _timestamp(self, created: float) -> str:
        second = int(created)
        if second != self._ts_second:
            # strftime costs more than the rest of the record, so it runs once per second.
            self._ts_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._ts_second = second
        micros = int((created - second) * 1_000_000)
        return f"{self._ts_prefix}.{micros:06d}Z"


def _dumps(fields: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(fields, default=_fallback_str, option=_DUMPS_OPTIONS)
    except (TypeError, orjson.JSONEncodeError):
        # Values orjson rejects outright (integers over 64 bits, cycles) become strings.
        safe = {key: _encodable(value) for key, value in fields.items()}
        return orjson.dumps(safe, default=_fallback_str, option=_DUMPS_OPTIONS)


def _message_of(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:
        # A bad %-format must not lose the record: keep the template and the arguments.
        return f"{_fallback_str(record.msg)} (formatting failed, args={_fallback_str(record.args)})"


def _qualified_name(cls: type[BaseException] | None) -> str:
    if cls is None:
        return "None"
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _encodable(value: Any) -> Any:
    try:
        orjson.dumps(value, default=_fallback_str, option=_DUMPS_OPTIONS)
    except (TypeError, orjson.JSONEncodeError):
        return _fallback_str(value)
    return value


class JsonHandler(logging.Handler):
    """Write each formatted record with one ``write`` call.

    With no stream, records go to file descriptor 2 through ``os.write``, bypassing the
    buffering of ``sys.stderr`` that could split a large record into several writes. A
    stream backed by a file descriptor is written the same way; any other stream (an
    ``io.StringIO``) gets one ``write`` of the whole line.
    """

    def __init__(self, stream: IO[str] | None = None, *, formatter: JsonFormatter | None = None):
        super().__init__()
        self.stream = stream
        self.json_formatter = formatter or JsonFormatter()
        self.setFormatter(self.json_formatter)
        self._fd = 2 if stream is None else _fileno_of(stream)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._write(self.json_formatter.format_bytes(record))
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def write_event(
        self, level: int, logger_name: str, message: str, event_fields: Mapping[str, Any]
    ) -> None:
        """Write the line that ``emit`` would write for a record with these fields.

        Only valid where ``sole_json_handler`` found this handler to be the one consumer
        of such a record: no ``LogRecord`` is built, so no filter or other handler receives it.
        """
        data = self.json_formatter.event_bytes(
            logging.getLevelName(level), logger_name, message, event_fields
        )
        self.acquire()
        try:
            self._write(data)
        except Exception:
            # handleError wants a record; it only prints the traceback to stderr.
            self.handleError(logging.makeLogRecord({"msg": message, "name": logger_name}))
        finally:
            self.release()

    def handleError(self, record: logging.LogRecord) -> None:
        """Report a failed write as one JSON line, never as a bare traceback.

        ``logging.Handler.handleError`` prints ``--- Logging error ---`` and a traceback on
        stderr, which would be the only lines there that a collector cannot parse.
        """
        if not logging.raiseExceptions:
            return
        exc = sys.exc_info()[1]
        report = {
            "ts": self.json_formatter._timestamp(time.time()),
            "level": "ERROR",
            "logger": "mlmiddleware.jsonlog",
            "message": "Writing a log record failed",
            "pid": os.getpid(),
            "failed_logger": record.name,
            "exc_type": _qualified_name(type(exc)) if exc is not None else None,
            "exc_message": _fallback_str(exc) if exc is not None else None,
        }
        with contextlib.suppress(OSError):
            _write_all(2, _dumps(report))

    def _write(self, data: bytes) -> None:
        if self._fd is not None:
            _write_all(self._fd, data)
        elif self.stream is not None:
            self.stream.write(data.decode("utf-8"))
            self.stream.flush()


def sole_json_handler(logger: logging.Logger, level: int) -> JsonHandler | None:
    """Return the ``JsonHandler`` that alone would emit a ``level`` record of ``logger``.

    Returns ``None`` when the record would be dropped, filtered, or seen by any other
    handler, so that callers on a hot path can take the full ``Logger.handle`` route
    whenever the shortcut could change what is logged.
    """
    if not logger.isEnabledFor(level) or logger.filters:
        return None

    found: JsonHandler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if level < handler.level:
                continue
            if found is not None or type(handler) is not JsonHandler or handler.filters:
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    return found


def _fileno_of(stream: IO[str]) -> int | None:
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    # Text already buffered in the stream must come out before the records written past it.
    stream.flush()
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        # A blocking write returns short only when a signal interrupts it.
        written = os.write(fd, view)
        view = view[written:]


class _State:
    handler: JsonHandler | None = None
    hooks_installed = False


_state = _State()
_configure_lock = threading.Lock()


def configure_logging(
    level: int | str = "INFO",
    *,
    service: str | None = None,
    stream: IO[str] | None = None,
    static_fields: Mapping[str, Any] | None = None,
) -> JsonHandler:
    """Send every log record in the process to stderr as one JSON line.

    Replaces the root logger's handlers with one ``JsonHandler``, routes uvicorn's own
    loggers through it, silences uvicorn's plain-text access log (``AccessLogMiddleware``
    replaces it) and turns uncaught exceptions in the main thread, other threads and
    asyncio tasks into JSON records. Calling it again reconfigures in place, so it is
    idempotent: there is always exactly one JSON handler.
    """
    numeric_level = _parse_level(level)
    formatter = JsonFormatter(service=service, static_fields=static_fields)
    handler = JsonHandler(stream, formatter=formatter)

    with _configure_lock:
        root = logging.getLogger()
        for old in list(root.handlers):
            root.removeHandler(old)
        root.addHandler(handler)
        root.setLevel(numeric_level)
        _state.handler = handler
        adopt_third_party_loggers()
        logging.captureWarnings(True)
        if not _state.hooks_installed:
            _install_exception_hooks()
            _state.hooks_installed = True
    return handler


def is_configured() -> bool:
    """Return ``True`` when ``configure_logging()`` has installed its handler on the root."""
    handler = _state.handler
    return handler is not None and handler in logging.getLogger().handlers


def add_static_fields(fields: Mapping[str, Any]) -> None:
    """Add fields to every later record of the configured handler."""
    if _state.handler is None:
        raise RuntimeError("logging is not configured: call configure_logging() first")
    _state.handler.json_formatter.add_static_fields(fields)


def adopt_third_party_loggers() -> None:
    """Route uvicorn's loggers through the root handler and mute its access logger.

    uvicorn installs handlers of its own when it applies its logging config, which can
    happen after ``configure_logging()``. The lifespan startup of an instrumented app
    therefore calls this again.
    """
    for name in _THIRD_PARTY_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        # dictConfig(disable_existing_loggers=True) elsewhere would silence it for good.
        logger.disabled = False
    for name in _REPLACED_ACCESS_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.addHandler(logging.NullHandler())
        logger.propagate = False


def _parse_level(level: int | str) -> int:
    if isinstance(level, int):
        return level
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(
            f"invalid log level {level!r}: use DEBUG, INFO, WARNING, ERROR or CRITICAL"
        )
    return numeric


def _install_exception_hooks() -> None:
    logger = logging.getLogger("mlmiddleware.uncaught")

    def handle_exception(
        exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
    ) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc, tb)
            return
        logger.critical("Uncaught exception", exc_info=(exc_type, exc, tb))

    def handle_thread_exception(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit or args.exc_value is None:
            return
        thread = args.thread.name if args.thread is not None else None
        logger.error(
            "Uncaught exception in thread %s",
            thread,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
            extra={"thread_name": thread},
        )

    def handle_unraisable(args: Any) -> None:
        message = args.err_msg or "Exception ignored"
        logger.error(
            "%s: %r",
            message,
            args.object,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        )

    sys.excepthook = handle_exception
    threading.excepthook = handle_thread_exception
    sys.unraisablehook = handle_unraisable
    # asyncio's default exception handler already logs through the "asyncio" logger with
    # exc_info, so "Task exception was never retrieved" becomes one JSON record as it is.
