"""Apps served by real uvicorn processes in the foundation tests."""

from __future__ import annotations

import asyncio
import logging

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

import mlmiddleware

logger = logging.getLogger("tests.app")


async def hello(request: Request) -> Response:
    logger.info("hello handler")
    return PlainTextResponse("hello")


async def item(request: Request) -> Response:
    return JSONResponse({"id": request.path_params["item_id"]})


async def listed(request: Request) -> Response:
    return JSONResponse({"id": request.path_params["id"]})


async def echo(request: Request) -> Response:
    body = await request.body()
    return Response(body, media_type="application/octet-stream")


async def stream(request: Request) -> Response:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(int(request.query_params.get("n", "5"))):
            yield b"x" * 1000
            await asyncio.sleep(float(request.query_params.get("delay", "0")))

    return StreamingResponse(chunks())


async def boom(request: Request) -> Response:
    raise RuntimeError("handler failed on purpose")


def slow_background() -> None:
    logger.info("background task ran")


async def with_background(request: Request) -> Response:
    return PlainTextResponse("ok", background=BackgroundTask(slow_background))


async def probe(request: Request) -> Response:
    return PlainTextResponse("ok")


inner = Starlette(routes=[Route("/list/{id}", listed)])

app_routes = [
    Route("/hello", hello, methods=["GET", "HEAD"]),
    Route("/items/{item_id}", item),
    Route("/echo", echo, methods=["POST"]),
    Route("/stream", stream),
    Route("/boom", boom),
    Route("/background", with_background),
    Route("/custom-probe", probe),
    Mount("/api/v1", app=inner),
]

app = mlmiddleware.instrument(
    Starlette(routes=app_routes), service="foundation-test", model_version="test-v1"
)
