"""instrument(): the wrapped stack for Starlette, FastAPI and bare ASGI apps."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from mlmiddleware import instrument
from mlmiddleware._lifecycle import AppLifecycle, is_shutting_down
from mlmiddleware._lifespan import LifespanMiddleware


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def starlette_app() -> Starlette:
    async def hello(request: Request) -> Response:
        return PlainTextResponse("hello")

    async def upload(request: Request) -> Response:
        return PlainTextResponse(str(len(await request.body())))

    return Starlette(routes=[Route("/hello", hello), Route("/upload", upload, methods=["POST"])])


def fastapi_app() -> FastAPI:
    app = FastAPI()

    @app.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    return app


async def bare_app(scope: Any, receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"bare"})


def wrap(app: Any, **options: Any) -> Any:
    return instrument(app, registry=CollectorRegistry(), json_logs=False, **options)


async def get(app: Any, path: str, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.request(kwargs.pop("method", "GET"), path, **kwargs)


@pytest.mark.anyio
@pytest.mark.parametrize("factory", [starlette_app, fastapi_app, lambda: bare_app])
async def test_instrument_wraps_any_app(factory: Any) -> None:
    app = wrap(factory())

    response = await get(app, "/hello")

    assert response.status_code == 200
    assert len(response.headers["x-request-id"]) == 32


def test_instrument_options_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        instrument(starlette_app(), "service")  # type: ignore[misc]


@pytest.mark.parametrize("value", [-1, 1.5, "10"])
def test_instrument_rejects_bad_body_limit(value: Any) -> None:
    with pytest.raises(ValueError, match="max_body_bytes"):
        wrap(starlette_app(), max_body_bytes=value)


def test_instrument_rejects_relative_metrics_path() -> None:
    with pytest.raises(ValueError, match="metrics_path"):
        wrap(starlette_app(), metrics_path="metrics")


@pytest.mark.anyio
async def test_instrument_body_limit_error_has_request_id() -> None:
    app = wrap(starlette_app(), max_body_bytes=10)

    response = await get(app, "/upload", method="POST", content=b"x" * 11)

    assert response.status_code == 413
    assert response.json()["error"]["request_id"] == response.headers["x-request-id"]


@pytest.mark.anyio
async def test_instrument_no_body_limit() -> None:
    app = wrap(starlette_app(), max_body_bytes=None)

    response = await get(app, "/upload", method="POST", content=b"x" * 100_000)

    assert response.text == "100000"


class LifespanDriver:
    """Play the server's side of the ASGI lifespan protocol."""

    def __init__(self) -> None:
        self.to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def receive(self) -> dict[str, Any]:
        return await self.to_app.get()

    async def send(self, message: dict[str, Any]) -> None:
        await self.from_app.put(message)

    async def run(self, app: Any) -> list[str]:
        task = asyncio.create_task(app({"type": "lifespan"}, self.receive, self.send))
        await self.to_app.put({"type": "lifespan.startup"})
        replies = [(await asyncio.wait_for(self.from_app.get(), 10))["type"]]
        if replies[0] == "lifespan.startup.complete":
            await self.to_app.put({"type": "lifespan.shutdown"})
            replies.append((await asyncio.wait_for(self.from_app.get(), 10))["type"])
            await asyncio.wait_for(task, 10)
        else:
            # A server exits after a failed startup without sending lifespan.shutdown.
            task.cancel()
        return replies


def hooked(app: Any, events: list[str], *, fail: bool = False) -> tuple[Any, AppLifecycle]:
    lifecycle = AppLifecycle()

    async def start() -> None:
        events.append("hook startup")
        if fail:
            raise RuntimeError("model failed to load")

    async def stop() -> None:
        events.append("hook shutdown")
        assert is_shutting_down()

    wrapped = LifespanMiddleware(
        app, lifecycle=lifecycle, startup_hooks=[start], shutdown_hooks=[stop]
    )
    return wrapped, lifecycle


@pytest.mark.anyio
async def test_lifespan_hooks_around_app_lifespan() -> None:
    events: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        events.append("app startup")
        await send({"type": "lifespan.startup.complete"})
        await receive()
        events.append("app shutdown")
        await send({"type": "lifespan.shutdown.complete"})

    wrapped, lifecycle = hooked(app, events)
    replies = await LifespanDriver().run(wrapped)

    assert replies == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert events == ["app startup", "hook startup", "hook shutdown", "app shutdown"]
    assert lifecycle.startup_complete


@pytest.mark.anyio
async def test_lifespan_hooks_for_bare_app() -> None:
    events: list[str] = []
    wrapped, lifecycle = hooked(bare_app, events)

    replies = await LifespanDriver().run(wrapped)

    assert replies == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert events == ["hook startup", "hook shutdown"]
    assert lifecycle.startup_complete


@pytest.mark.anyio
async def test_lifespan_failed_hook_fails_startup() -> None:
    events: list[str] = []
    wrapped, lifecycle = hooked(starlette_app(), events, fail=True)

    replies = await LifespanDriver().run(wrapped)

    assert replies == ["lifespan.startup.failed"]
    assert not lifecycle.startup_complete


@pytest.mark.anyio
async def test_lifespan_hooks_for_app_ignoring_lifespan() -> None:
    events: list[str] = []

    async def ignoring(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return

    wrapped, lifecycle = hooked(ignoring, events)
    replies = await LifespanDriver().run(wrapped)

    assert replies == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert events == ["hook startup", "hook shutdown"]
    assert lifecycle.startup_complete


def failing_app(factory: Any) -> Any:
    app = factory()

    async def boom(request: Request) -> Response:
        raise RuntimeError("handler failed")

    app.add_route("/boom", boom)
    return app


@pytest.mark.anyio
@pytest.mark.parametrize("factory", [starlette_app, fastapi_app])
async def test_instrument_json_500_for_framework_apps(factory: Any) -> None:
    app = wrap(failing_app(factory))

    response = await get(app, "/boom")

    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["type"] == "internal_error"
    assert response.json()["error"]["request_id"] == response.headers["x-request-id"]
    assert "handler failed" not in response.text


@pytest.mark.anyio
async def test_instrument_keeps_app_error_handler() -> None:
    app = failing_app(starlette_app)

    async def own_handler(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("own handler", status_code=500)

    app.add_exception_handler(Exception, own_handler)
    response = await get(wrap(app), "/boom")

    assert response.text == "own handler"
