"""JSON log formatter, handler and configure_logging."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from mlmiddleware import jsonlog
from mlmiddleware._context import RequestContext, current_request_context
from mlmiddleware.jsonlog import JsonFormatter, JsonHandler, configure_logging

ROOT = Path(__file__).resolve().parent.parent


def make_record(msg: str = "hello %s", args: Any = ("world",), **extra: Any) -> logging.LogRecord:
    logger = logging.getLogger("tests.jsonlog")
    return logger.makeRecord(logger.name, logging.INFO, __file__, 1, msg, args, None, extra=extra)


def format_record(record: logging.LogRecord, **options: Any) -> dict[str, Any]:
    line = JsonFormatter(**options).format_bytes(record)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    parsed: dict[str, Any] = orjson.loads(line)
    return parsed


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    hooks = (sys.excepthook, sys.unraisablehook)
    import threading

    thread_hook = threading.excepthook
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    sys.excepthook, sys.unraisablehook = hooks
    threading.excepthook = thread_hook
    jsonlog._state.handler = None
    jsonlog._state.hooks_installed = False
    logging.captureWarnings(False)


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), **env},
        timeout=60,
        check=False,
    )


def parse_lines(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in data.splitlines() if line.strip()]


def test_formatter_base_fields() -> None:
    record = make_record()
    record.created = 1_700_000_000.123456

    fields = format_record(record)

    assert fields["ts"] == "2023-11-14T22:13:20.123456Z"
    assert fields["level"] == "INFO"
    assert fields["logger"] == "tests.jsonlog"
    assert fields["message"] == "hello world"
    assert fields["pid"] == os.getpid()


def test_formatter_ts_is_rfc3339_utc() -> None:
    fields = format_record(make_record())

    parsed = datetime.strptime(fields["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert abs(parsed.timestamp() - datetime.now(timezone.utc).timestamp()) < 60


def test_formatter_service_and_static_fields() -> None:
    fields = format_record(make_record(), service="svc", static_fields={"region": "eu"})

    assert fields["service"] == "svc"
    assert fields["region"] == "eu"


def test_formatter_reserved_static_field_rejected() -> None:
    with pytest.raises(ValueError, match="level"):
        JsonFormatter(static_fields={"level": "x"})


def test_formatter_request_context_fields() -> None:
    token = current_request_context.set(RequestContext("rid-1", "a" * 32, "b" * 16))
    try:
        fields = format_record(make_record())
    finally:
        current_request_context.reset(token)

    assert fields["request_id"] == "rid-1"
    assert fields["trace_id"] == "a" * 32
    assert fields["span_id"] == "b" * 16


def test_formatter_no_context_fields_outside_request() -> None:
    fields = format_record(make_record())

    assert "request_id" not in fields
    assert "trace_id" not in fields


def test_formatter_extra_at_top_level() -> None:
    fields = format_record(make_record(user="ann", count=3, ratio=0.5, tags=["a"]))

    assert fields["user"] == "ann"
    assert fields["count"] == 3
    assert fields["ratio"] == 0.5
    assert fields["tags"] == ["a"]


def test_formatter_colliding_extra_kept_with_prefix() -> None:
    fields = format_record(make_record(level="mine", ts="t", pid="p"), service="svc")

    assert fields["level"] == "INFO"
    assert fields["extra_level"] == "mine"
    assert fields["extra_ts"] == "t"
    assert fields["extra_pid"] == "p"


def test_formatter_unencodable_values_become_str() -> None:
    class Odd:
        def __str__(self) -> str:
            return "odd-value"

    fields = format_record(make_record(odd=Odd(), huge=2**80, data={1: "int key"}))

    assert fields["odd"] == "odd-value"
    assert fields["huge"] == str(2**80)
    assert fields["data"] == {"1": "int key"}


def test_formatter_cyclic_value_does_not_raise() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)

    fields = format_record(make_record(cyclic=cyclic))

    assert isinstance(fields["cyclic"], str)


def test_formatter_bad_format_args_keep_record() -> None:
    fields = format_record(make_record("%d items", ("not a number",)))

    assert "%d items" in fields["message"]


def test_formatter_exception_fields() -> None:
    try:
        raise ValueError("bad value")
    except ValueError:
        record = make_record()
        record.exc_info = sys.exc_info()

    fields = format_record(record)

    assert fields["exc_type"] == "ValueError"
    assert fields["exc_message"] == "bad value"
    assert fields["stack"].startswith("Traceback (most recent call last):")
    assert "bad value" in fields["stack"]


@pytest.mark.parametrize(
    "message",
    [
        "two\nlines",
        "carriage\rreturn",
        "ansi \x1b[31mred\x1b[0m",
        "nul \x00 byte",
        'forged"}\n{"level":"CRITICAL","message":"fake',
        "line sep \u2028 para \u2029",
    ],
)
def test_formatter_message_stays_one_line(message: str) -> None:
    line = JsonFormatter().format_bytes(make_record("%s", (message,)))

    assert line.count(b"\n") == 1
    assert b"\r" not in line
    assert b"\x1b" not in line
    assert orjson.loads(line)["message"] == message


def test_handler_single_write_for_large_record(monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[bytes] = []
    monkeypatch.setattr(
        jsonlog.os, "write", lambda fd, data: writes.append(bytes(data)) or len(data)
    )
    handler = JsonHandler()

    handler.handle(make_record("%s", ("z" * 100_000,)))

    assert len(writes) == 1
    assert orjson.loads(writes[0])["message"] == "z" * 100_000


def test_handler_retries_short_write(monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[bytes] = []

    def short_write(fd: int, data: Any) -> int:
        chunk = bytes(data[:1000])
        writes.append(chunk)
        return len(chunk)

    monkeypatch.setattr(jsonlog.os, "write", short_write)
    JsonHandler().handle(make_record("%s", ("q" * 5000,)))

    assert orjson.loads(b"".join(writes))["message"] == "q" * 5000


def test_configure_is_idempotent(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    configure_logging("DEBUG", stream=stream, service="svc")

    ours = [h for h in logging.getLogger().handlers if isinstance(h, JsonHandler)]
    logging.getLogger("tests.jsonlog").debug("once")

    assert len(ours) == 1
    assert logging.getLogger().level == logging.DEBUG
    assert len(parse_lines(stream.getvalue().encode())) == 1


def test_configure_rejects_unknown_level(restore_logging: None) -> None:
    with pytest.raises(ValueError, match="LOUD"):
        configure_logging("LOUD")


def test_configure_routes_uvicorn_loggers(restore_logging: None) -> None:
    uvicorn_logger = logging.getLogger("uvicorn.error")
    uvicorn_logger.addHandler(logging.StreamHandler(io.StringIO()))
    uvicorn_logger.disabled = True
    uvicorn_logger.setLevel(logging.NOTSET)
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)

    logging.getLogger("uvicorn.error").info("Started server process [1]")
    logging.getLogger("uvicorn.access").info('127.0.0.1 - "GET / HTTP/1.1" 200')

    lines = parse_lines(stream.getvalue().encode())
    assert [line["logger"] for line in lines] == ["uvicorn.error"]


def test_uncaught_main_thread_exception_is_json() -> None:
    result = run_python(
        """
        from mlmiddleware.jsonlog import configure_logging
        configure_logging()
        raise RuntimeError("main thread failure")
        """
    )

    lines = parse_lines(result.stderr)
    assert result.returncode == 1
    assert len(lines) == 1
    assert lines[0]["exc_type"] == "RuntimeError"
    assert lines[0]["exc_message"] == "main thread failure"


def test_uncaught_thread_exception_is_json() -> None:
    result = run_python(
        """
        import threading
        from mlmiddleware.jsonlog import configure_logging
        configure_logging()
        thread = threading.Thread(target=lambda: 1 / 0, name="worker-7")
        thread.start()
        thread.join()
        """
    )

    lines = parse_lines(result.stderr)
    assert len(lines) == 1
    assert lines[0]["exc_type"] == "ZeroDivisionError"
    assert lines[0]["thread_name"] == "worker-7"


def test_uncaught_task_exception_is_json() -> None:
    result = run_python(
        """
        import asyncio, gc
        from mlmiddleware.jsonlog import configure_logging
        configure_logging()

        async def fail():
            raise KeyError("task failure")

        async def main():
            asyncio.get_running_loop().create_task(fail())
            await asyncio.sleep(0.05)

        asyncio.run(main())
        gc.collect()
        """
    )

    lines = parse_lines(result.stderr)
    assert len(lines) == 1
    assert lines[0]["logger"] == "asyncio"
    assert lines[0]["exc_type"] == "KeyError"


def test_processes_sharing_stderr_never_split_lines(tmp_path: Path) -> None:
    code = """
        import logging, sys
        from mlmiddleware.jsonlog import configure_logging
        configure_logging()
        log = logging.getLogger("writer")
        for i in range(200):
            log.info("%s", sys.argv[1] * 20_000, extra={"i": i})
        """
    out = tmp_path / "stderr.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    with open(out, "ab") as shared:
        writers = [
            subprocess.Popen(
                [sys.executable, "-c", textwrap.dedent(code), letter], stderr=shared, env=env
            )
            for letter in "abcd"
        ]
        for writer in writers:
            assert writer.wait(timeout=60) == 0

    lines = parse_lines(out.read_bytes())
    assert len(lines) == 800
    assert all(len(set(line["message"])) == 1 for line in lines)


def test_formatter_extra_colliding_with_static_field() -> None:
    formatter = JsonFormatter()
    record = make_record(region="from-extra")
    before = orjson.loads(formatter.format_bytes(record))

    formatter.add_static_fields({"region": "eu"})
    after = orjson.loads(formatter.format_bytes(record))

    assert before["region"] == "from-extra"
    assert after["region"] == "eu"
    assert after["extra_region"] == "from-extra"


def test_sole_handler_found_for_json_only(restore_logging: None) -> None:
    handler = configure_logging("INFO", stream=io.StringIO())

    assert jsonlog.sole_json_handler(logging.getLogger("tests.sole"), logging.INFO) is handler


def test_sole_handler_none_with_other_handler(restore_logging: None) -> None:
    configure_logging("INFO", stream=io.StringIO())
    logger = logging.getLogger("tests.sole.other")
    other = logging.StreamHandler(io.StringIO())
    logger.addHandler(other)
    try:
        assert jsonlog.sole_json_handler(logger, logging.INFO) is None
    finally:
        logger.removeHandler(other)


def test_sole_handler_none_with_filter(restore_logging: None) -> None:
    configure_logging("INFO", stream=io.StringIO())
    logger = logging.getLogger("tests.sole.filtered")
    drop_all = logging.Filter("nothing-matches")
    logger.addFilter(drop_all)
    try:
        assert jsonlog.sole_json_handler(logger, logging.INFO) is None
    finally:
        logger.removeFilter(drop_all)


def test_sole_handler_none_below_level(restore_logging: None) -> None:
    configure_logging("WARNING", stream=io.StringIO())

    assert jsonlog.sole_json_handler(logging.getLogger("tests.sole"), logging.INFO) is None


def test_write_event_matches_emit(restore_logging: None) -> None:
    stream = io.StringIO()
    handler = configure_logging("INFO", stream=stream, service="svc")
    fields = {"status": 200, "route": "/x", "level": "clash"}
    logger = logging.getLogger("tests.event")

    handler.write_event(logging.INFO, logger.name, "http.request", fields)
    logger.info("http.request", extra=fields)

    direct, through_logging = parse_lines(stream.getvalue().encode())
    del direct["ts"], through_logging["ts"]
    assert direct == through_logging


def test_handler_reports_write_failure_as_json(capfd: pytest.CaptureFixture[str]) -> None:
    class BrokenStream(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError("stream is gone")

    JsonHandler(BrokenStream()).handle(make_record())

    lines = [line for line in capfd.readouterr().err.splitlines() if line]
    report = orjson.loads(lines[0])
    assert len(lines) == 1
    assert report["message"] == "Writing a log record failed"
    assert report["exc_type"] == "OSError"
    assert report["failed_logger"] == "tests.jsonlog"
