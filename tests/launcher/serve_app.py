"""Starlette app that the run-mode tests serve through ``mlmiddleware run``.

The launcher imports it in its workers as ``serve_app:app`` with this directory as the
working directory. ``LAUNCHER_TEST_EVENTS`` names a file where each worker appends
``startup PID`` and ``shutdown PID`` lines from the app's lifespan, and ``request PID``
when ``/slow`` or ``/double`` begins.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from mlmiddleware import instrument
from mlmiddleware.batching import Batcher

if os.environ.get("LAUNCHER_TEST_IMPORT_SECONDS"):
    # A slow model load at import time, for the startup timeout.
    time.sleep(float(os.environ["LAUNCHER_TEST_IMPORT_SECONDS"]))

SLOW_SECONDS = float(os.environ.get("LAUNCHER_TEST_SLOW_SECONDS", "3"))
BATCH_SECONDS = float(os.environ.get("LAUNCHER_TEST_BATCH_SECONDS", "0.5"))


def _record(event: str) -> None:
    path = os.environ.get("LAUNCHER_TEST_EVENTS")
    if path:
        with open(path, "a", encoding="utf-8") as events:
            events.write(f"{event} {os.getpid()}\n")


def _double(batch: list[int]) -> list[int]:
    # A slow model, so that requests queue up behind the running batch.
    time.sleep(BATCH_SECONDS)
    return [value * 2 for value in batch]


batcher = Batcher(_double, max_batch_size=4, name="double", timeout_s=60.0)


async def slow(request: Request) -> Response:
    _record("request")
    await asyncio.sleep(SLOW_SECONDS)
    return PlainTextResponse("done")


async def double(request: Request) -> Response:
    value = int(request.query_params["x"])
    _record("request")
    return JSONResponse({"y": await batcher.submit(value), "pid": os.getpid()})


async def block(request: Request) -> Response:
    # Blocks the event loop, as a model call run on the loop would, so heartbeats stop.
    time.sleep(float(request.query_params["seconds"]))  # noqa: ASYNC251
    return PlainTextResponse("unblocked")


async def pid(request: Request) -> Response:
    return PlainTextResponse(str(os.getpid()))


async def log_line(request: Request) -> Response:
    size = int(request.query_params["size"])
    tag = request.query_params["tag"]
    # One print of a long line; the launcher relays it whole even past PIPE_BUF.
    print(tag + "x" * size, flush=True)
    return PlainTextResponse("logged")


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    _record("startup")
    yield
    _record("shutdown")


app = instrument(
    Starlette(
        routes=[
            Route("/slow", slow),
            Route("/double", double),
            Route("/pid", pid),
            Route("/block", block),
            Route("/log", log_line),
        ],
        lifespan=lifespan,
    ),
    service="launcher-test",
    batchers=[batcher],
)
