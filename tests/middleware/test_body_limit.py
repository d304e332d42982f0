"""BodySizeLimitMiddleware: 413 on a declared or streamed body over the limit."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mlmiddleware.middleware.body_limit import BodySizeLimitMiddleware
from tests.asgi import body_of, call, http_scope, status_of

LIMIT = 100


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class ReadingApp:
    """A Starlette app that reads the whole body and records how much it saw."""

    def __init__(self) -> None:
        self.seen_bytes: list[int] = []
        self.calls = 0

        async def echo(request: Request) -> Response:
            self.calls += 1
            total = 0
            async for chunk in request.stream():
                total += len(chunk)
                self.seen_bytes.append(total)
            return Response(str(total))

        self.app = Starlette(routes=[Route("/", echo, methods=["POST"])])


def post_scope(content_length: int | None = None) -> dict[str, Any]:
    headers = [] if content_length is None else [(b"content-length", str(content_length).encode())]
    return http_scope(method="POST", headers=headers)


@pytest.mark.anyio
async def test_limit_rejects_declared_length() -> None:
    inner = ReadingApp()
    app = BodySizeLimitMiddleware(inner.app, max_body_bytes=LIMIT)

    messages = await call(app, post_scope(LIMIT + 1), [b"x" * (LIMIT + 1)])

    error = orjson.loads(body_of(messages))["error"]
    assert status_of(messages) == 413
    assert error["type"] == "payload_too_large"
    assert str(LIMIT) in error["message"]
    assert "request_id" in error
    assert inner.calls == 0


@pytest.mark.anyio
async def test_limit_rejects_streamed_body() -> None:
    inner = ReadingApp()
    app = BodySizeLimitMiddleware(inner.app, max_body_bytes=LIMIT)

    messages = await call(app, post_scope(), [b"x" * 40] * 5)

    assert status_of(messages) == 413
    assert orjson.loads(body_of(messages))["error"]["type"] == "payload_too_large"
    assert max(inner.seen_bytes) <= LIMIT


@pytest.mark.anyio
async def test_limit_sends_one_response() -> None:
    inner = ReadingApp()
    app = BodySizeLimitMiddleware(inner.app, max_body_bytes=LIMIT)

    messages = await call(app, post_scope(), [b"x" * 60] * 3)

    starts = [m for m in messages if m["type"] == "http.response.start"]
    assert len(starts) == 1


@pytest.mark.anyio
async def test_limit_allows_exact_size() -> None:
    inner = ReadingApp()
    app = BodySizeLimitMiddleware(inner.app, max_body_bytes=LIMIT)

    messages = await call(app, post_scope(), [b"x" * 50, b"x" * 50])

    assert status_of(messages) == 200
    assert body_of(messages) == str(LIMIT).encode()


@pytest.mark.anyio
async def test_limit_allows_declared_under_limit() -> None:
    inner = ReadingApp()
    app = BodySizeLimitMiddleware(inner.app, max_body_bytes=LIMIT)

    messages = await call(app, post_scope(10), [b"x" * 10])

    assert status_of(messages) == 200


@pytest.mark.anyio
async def test_limit_bare_app_sees_exception() -> None:
    seen: list[BaseException] = []

    async def bare(scope: Any, receive: Any, send: Any) -> None:
        try:
            while (await receive()).get("more_body"):
                pass
        except Exception as exc:
            seen.append(exc)
            raise

    app = BodySizeLimitMiddleware(bare, max_body_bytes=LIMIT)
    messages = await call(app, post_scope(), [b"x" * 80, b"x" * 80, b""])

    assert status_of(messages) == 413
    assert type(seen[0]).__name__ == "BodyTooLarge"


def test_limit_negative_rejected() -> None:
    with pytest.raises(ValueError, match="max_body_bytes"):
        BodySizeLimitMiddleware(ReadingApp().app, max_body_bytes=-1)
