"""wire_health and HealthPaths: routes mounted by instrument(), lifespan and bad input."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import mlmiddleware
from mlmiddleware._stack import StackBuilder
from mlmiddleware._types import ASGIApp, Message
from mlmiddleware.health import HealthChecks, HealthPaths
from mlmiddleware.health._wiring import wire_health

PROBE_PATHS = {"/livez", "/readyz", "/startupz", "/v2/health/live", "/v2/health/ready"}


async def hello(request: Any) -> PlainTextResponse:
    return PlainTextResponse("hello")


def make_app(**kwargs: Any) -> ASGIApp:
    inner = Starlette(routes=[Route("/hello", hello)])
    return mlmiddleware.instrument(inner, json_logs=False, metrics=False, **kwargs)


async def get(app: ASGIApp, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        return await client.get(path)


class Lifespan:
    """Drive an app's lifespan protocol the way a server does."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.incoming: asyncio.Queue[Message] = asyncio.Queue()
        self.outgoing: asyncio.Queue[Message] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def startup(self) -> Message:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self.task = asyncio.ensure_future(self.app(scope, self.incoming.get, self.outgoing.put))
        await self.incoming.put({"type": "lifespan.startup"})
        return await asyncio.wait_for(self.outgoing.get(), 20)

    async def shutdown(self) -> Message:
        await self.incoming.put({"type": "lifespan.shutdown"})
        message = await asyncio.wait_for(self.outgoing.get(), 20)
        assert self.task is not None
        await asyncio.wait_for(self.task, 20)
        return message


def test_wire_sets_builder_health() -> None:
    builder = StackBuilder(app=Starlette())
    checks = HealthChecks()

    wire_health(builder, checks, paths=None)

    assert builder.health is checks
    assert set(builder.routes) == PROBE_PATHS
    assert builder.quiet_paths >= PROBE_PATHS
    assert len(builder.startup_hooks) == 1
    assert len(builder.shutdown_hooks) == 1


def test_wire_true_makes_registry() -> None:
    builder = StackBuilder(app=Starlette())

    wire_health(builder, True, paths=None)

    assert isinstance(builder.health, HealthChecks)


def test_wire_custom_paths() -> None:
    builder = StackBuilder(app=Starlette())
    paths = HealthPaths(live="/health/live", ready="/health/ready", startup=None)

    wire_health(builder, True, paths=paths)

    assert set(builder.routes) == {
        "/health/live",
        "/health/ready",
        "/v2/health/live",
        "/v2/health/ready",
    }


def test_wire_without_open_inference_aliases() -> None:
    builder = StackBuilder(app=Starlette())

    wire_health(builder, True, paths=HealthPaths(open_inference_aliases=False))

    assert set(builder.routes) == {"/livez", "/readyz", "/startupz"}


@pytest.mark.parametrize("value", [1, "yes", object()])
def test_wire_rejects_bad_health(value: Any) -> None:
    with pytest.raises(TypeError, match="invalid health="):
        wire_health(StackBuilder(app=Starlette()), value, paths=None)


def test_wire_rejects_bad_paths() -> None:
    with pytest.raises(TypeError, match="invalid health_paths="):
        wire_health(StackBuilder(app=Starlette()), True, paths={"live": "/l"})


@pytest.mark.parametrize("field", ["live", "ready", "startup"])
def test_paths_reject_relative(field: str) -> None:
    with pytest.raises(ValueError, match=f"invalid HealthPaths {field}='livez'"):
        HealthPaths(**{field: "livez"})


def test_paths_keyword_only() -> None:
    with pytest.raises(TypeError):
        HealthPaths("/livez")  # type: ignore[misc]


def test_instrument_readiness_follows_lifespan() -> None:
    checks = HealthChecks()
    app = make_app(health=checks)

    async def scenario() -> dict[str, Any]:
        lifespan = Lifespan(app)
        seen: dict[str, Any] = {"before": await get(app, "/readyz")}
        seen["startup"] = await lifespan.startup()
        seen["ready"] = await get(app, "/readyz")
        seen["started"] = await get(app, "/startupz")
        seen["monitor_running"] = checks.loop_monitor.running
        seen["shutdown"] = await lifespan.shutdown()
        seen["after"] = await get(app, "/readyz")
        seen["live_after"] = await get(app, "/livez")
        seen["monitor_running_after"] = checks.loop_monitor.running
        return seen

    seen = asyncio.run(scenario())

    assert seen["before"].status_code == 503
    assert seen["before"].json()["checks"]["startup_complete"]["status"] == "fail"
    assert seen["startup"]["type"] == "lifespan.startup.complete"
    assert seen["ready"].status_code == 200
    assert seen["started"].status_code == 200
    assert seen["monitor_running"] is True
    assert seen["shutdown"]["type"] == "lifespan.shutdown.complete"
    assert seen["after"].json()["status"] == "draining"
    assert seen["live_after"].status_code == 200
    assert seen["monitor_running_after"] is False


def test_instrument_health_false_mounts_nothing() -> None:
    app = make_app(health=False)

    response = asyncio.run(get(app, "/livez"))

    assert response.status_code == 404


def test_instrument_other_routes_untouched() -> None:
    app = make_app()

    response = asyncio.run(get(app, "/hello"))

    assert response.text == "hello"


def test_instrument_custom_paths() -> None:
    app = make_app(health_paths=HealthPaths(live="/healthz"))

    moved = asyncio.run(get(app, "/healthz"))
    old = asyncio.run(get(app, "/livez"))

    assert moved.status_code == 200
    assert old.status_code == 404


def test_health_exports_begin_shutdown() -> None:
    from mlmiddleware import health

    assert health.begin_shutdown is mlmiddleware.begin_shutdown
