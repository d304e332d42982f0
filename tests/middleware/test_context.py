"""RequestContextMiddleware: request ids, trace ids and their propagation."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import anyio
import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from mlmiddleware import get_request_context, get_request_id
from mlmiddleware.jsonlog import JsonFormatter
from mlmiddleware.middleware.context import RequestContextMiddleware, parse_traceparent
from tests.asgi import body_of, call, headers_of, http_scope, status_of

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []
        self.formatter_ = JsonFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(orjson.loads(self.formatter_.format_bytes(record)))


@pytest.fixture
def captured() -> Any:
    handler = ListHandler()
    logger = logging.getLogger("tests.context")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)


def echo_app() -> Starlette:
    async def show(request: Request) -> Response:
        context = get_request_context()
        assert context is not None
        return JSONResponse(
            {
                "request_id": context.request_id,
                "trace_id": context.trace_id,
                "span_id": context.span_id,
                "state": request.state.request_id,
            }
        )

    return Starlette(routes=[Route("/", show)])


async def get(app: Any, headers: dict[str, Any] | None = None, path: str = "/") -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(path, headers=headers)


@pytest.mark.anyio
async def test_context_keeps_valid_request_id() -> None:
    app = RequestContextMiddleware(echo_app())

    response = await get(app, {"X-Request-ID": "abc.DEF_123-x"})

    assert response.json()["request_id"] == "abc.DEF_123-x"
    assert response.json()["state"] == "abc.DEF_123-x"
    assert response.headers["x-request-id"] == "abc.DEF_123-x"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "value",
    ["a" * 129, "has space", "semi;colon", "new\nline", "ünïcode", "<script>", "a/b"],
)
async def test_context_replaces_invalid_request_id(value: str, captured: Any) -> None:
    app = RequestContextMiddleware(echo_app())

    response = await get(app, {"X-Request-ID": value.encode("utf-8")})

    generated = response.json()["request_id"]
    assert generated != value
    assert len(generated) == 32
    assert response.headers["x-request-id"] == generated
    assert value not in response.text


@pytest.mark.anyio
async def test_context_accepts_128_char_id() -> None:
    app = RequestContextMiddleware(echo_app())

    response = await get(app, {"X-Request-ID": "a" * 128})

    assert response.json()["request_id"] == "a" * 128


@pytest.mark.anyio
async def test_context_generates_id_when_absent() -> None:
    app = RequestContextMiddleware(echo_app())

    first = (await get(app)).json()["request_id"]
    second = (await get(app)).json()["request_id"]

    assert first != second


@pytest.mark.anyio
async def test_context_custom_header_name() -> None:
    app = RequestContextMiddleware(echo_app(), header_name="X-Correlation-ID")

    response = await get(app, {"X-Correlation-ID": "corr-1"})

    assert response.json()["request_id"] == "corr-1"
    assert response.headers["x-correlation-id"] == "corr-1"


@pytest.mark.anyio
async def test_context_parses_traceparent() -> None:
    app = RequestContextMiddleware(echo_app())

    response = await get(app, {"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-01"})

    assert response.json()["trace_id"] == TRACE_ID
    assert response.json()["span_id"] == SPAN_ID


@pytest.mark.parametrize(
    "value",
    [
        f"ff-{TRACE_ID}-{SPAN_ID}-01",
        f"00-{'0' * 32}-{SPAN_ID}-01",
        f"00-{TRACE_ID}-{'0' * 16}-01",
        f"00-{TRACE_ID.upper()}-{SPAN_ID}-01",
        f"00-{TRACE_ID[:-1]}-{SPAN_ID}-01",
        f"00-{TRACE_ID}-{SPAN_ID}-01-extra",
        "garbage",
        "",
    ],
)
def test_traceparent_invalid_ignored(value: str) -> None:
    assert parse_traceparent(value) is None


def test_traceparent_future_version_allows_fields() -> None:
    assert parse_traceparent(f"01-{TRACE_ID}-{SPAN_ID}-01-more") == (TRACE_ID, SPAN_ID)


@pytest.mark.anyio
async def test_context_reset_after_request() -> None:
    app = RequestContextMiddleware(echo_app())

    await get(app)

    assert get_request_id() is None


@pytest.mark.anyio
async def test_context_reaches_threads_tasks_background(captured: Any) -> None:
    logger = logging.getLogger("tests.context")

    def in_thread() -> None:
        logger.info("from to_thread")

    def in_threadpool() -> None:
        logger.info("from run_in_threadpool")

    async def in_task() -> None:
        logger.info("from create_task")

    def in_background() -> None:
        logger.info("from background task")

    async def handler(request: Request) -> Response:
        logger.info("from handler")
        await anyio.to_thread.run_sync(in_thread)
        await run_in_threadpool(in_threadpool)
        await asyncio.create_task(in_task())
        return PlainTextResponse("ok", background=BackgroundTask(in_background))

    app = RequestContextMiddleware(Starlette(routes=[Route("/", handler)]))
    response = await get(app, {"X-Request-ID": "propagated-1"})

    ids = {line["message"]: line.get("request_id") for line in captured.lines}
    assert response.status_code == 200
    assert ids["from handler"] == "propagated-1"
    assert ids["from to_thread"] == "propagated-1"
    assert ids["from run_in_threadpool"] == "propagated-1"
    assert ids["from create_task"] == "propagated-1"
    assert ids["from background task"] == "propagated-1"


@pytest.mark.anyio
async def test_context_header_on_starlette_500() -> None:
    async def boom(request: Request) -> Response:
        raise RuntimeError("failed")

    app = RequestContextMiddleware(Starlette(routes=[Route("/", boom)]))

    response = await get(app, {"X-Request-ID": "err-1"})

    assert response.status_code == 500
    assert response.headers["x-request-id"] == "err-1"


@pytest.mark.anyio
async def test_context_json_500_for_bare_app() -> None:
    async def bare(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("bare app failed")

    app = RequestContextMiddleware(bare)
    messages: list[Any] = []

    async def send(message: Any) -> None:
        messages.append(message)

    scope = http_scope(headers=[(b"x-request-id", b"bare-1")])
    with pytest.raises(RuntimeError, match="bare app failed"):
        await app(scope, _empty_receive, send)

    error = orjson.loads(body_of(messages))["error"]
    assert status_of(messages) == 500
    assert headers_of(messages)[b"x-request-id"] == b"bare-1"
    assert error["type"] == "internal_error"
    assert error["request_id"] == "bare-1"
    assert "Traceback" not in error["message"]


@pytest.mark.anyio
async def test_context_replaces_app_request_id_header() -> None:
    async def bare(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"x-request-id", b"app")]}
        )
        await send({"type": "http.response.body", "body": b""})

    messages = await call(
        RequestContextMiddleware(bare), http_scope(headers=[(b"x-request-id", b"ours")])
    )

    start = next(m for m in messages if m["type"] == "http.response.start")
    assert [v for k, v in start["headers"] if k == b"x-request-id"] == [b"ours"]


async def _empty_receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
