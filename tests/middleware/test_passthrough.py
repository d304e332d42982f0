"""Behaviour every middleware shares: untouched non-HTTP scopes, no buffering, re-raising."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from mlmiddleware.middleware.access_log import AccessLogMiddleware
from mlmiddleware.middleware.body_limit import BodySizeLimitMiddleware
from mlmiddleware.middleware.context import RequestContextMiddleware
from mlmiddleware.middleware.prometheus import PrometheusMiddleware
from tests.asgi import http_scope

FACTORIES = {
    "context": lambda app: RequestContextMiddleware(app),
    "access_log": lambda app: AccessLogMiddleware(app),
    "body_limit": lambda app: BodySizeLimitMiddleware(app, max_body_bytes=10),
    "prometheus": lambda app: PrometheusMiddleware(app, registry=CollectorRegistry()),
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
@pytest.mark.parametrize("name", sorted(FACTORIES))
@pytest.mark.parametrize("scope_type", ["websocket", "lifespan"])
async def test_middleware_passes_scope_untouched(name: str, scope_type: str) -> None:
    seen: list[tuple[Any, Any, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, receive, send))

    async def receive() -> dict[str, Any]:
        return {"type": f"{scope_type}.connect"}

    async def send(message: Any) -> None:
        pass

    scope = {"type": scope_type, "path": "/ws", "headers": [(b"content-length", b"100")]}
    snapshot = dict(scope)

    await FACTORIES[name](app)(scope, receive, send)

    assert seen[0][0] is scope
    assert seen[0][1] is receive
    assert seen[0][2] is send
    assert scope == snapshot


@pytest.mark.anyio
@pytest.mark.parametrize("name", sorted(FACTORIES))
async def test_middleware_streams_without_buffering(name: str) -> None:
    first_chunk_seen = asyncio.Event()
    app_finished = False

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal app_finished
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        # Deadlocks (and times out) if a middleware holds the first chunk back.
        await asyncio.wait_for(first_chunk_seen.wait(), timeout=5)
        await send({"type": "http.response.body", "body": b"last", "more_body": False})
        # Work after the last byte, as a background task does: it must not delay the body.
        await asyncio.sleep(0)
        app_finished = True

    finished_before_last_byte: list[bool] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        if message.get("body") == b"first":
            first_chunk_seen.set()
        if message.get("body") == b"last":
            finished_before_last_byte.append(app_finished)

    await FACTORIES[name](app)(http_scope(), receive, send)

    assert first_chunk_seen.is_set()
    assert finished_before_last_byte == [False]


@pytest.mark.anyio
@pytest.mark.parametrize("name", sorted(FACTORIES))
async def test_middleware_reraises_app_exception(name: str) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise LookupError("raised by the app")

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        pass

    with pytest.raises(LookupError, match="raised by the app"):
        await FACTORIES[name](app)(http_scope(), receive, send)
