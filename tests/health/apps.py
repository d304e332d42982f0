"""Apps served by real uvicorn processes in the health tests."""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

import mlmiddleware
from mlmiddleware.health import HealthChecks

logger = logging.getLogger("tests.health.apps")

# Switched by the /toggle route so tests can fail and recover a check in the server.
flags = {"db": True, "worker_stuck": False}
calls = {"slow": 0}


class FakeWorker:
    name = "model"
    last_progress = 0.0
    queue_depth = 0

    def liveness_error(self) -> str | None:
        return (
            "batch running for 45.0 s, over stuck_after_s=30.0" if flags["worker_stuck"] else None
        )

    def readiness_error(self) -> str | None:
        return None


def db_check() -> bool:
    return flags["db"]


async def slow_check() -> bool:
    calls["slow"] += 1
    await asyncio.sleep(0.2)
    return True


async def predict(request: Request) -> Response:
    return PlainTextResponse("prediction")


async def toggle(request: Request) -> Response:
    for name in flags:
        if name in request.query_params:
            flags[name] = request.query_params[name] == "1"
    return JSONResponse(flags)


async def drain(request: Request) -> Response:
    mlmiddleware.begin_shutdown()
    return PlainTextResponse("draining")


async def slow_calls(request: Request) -> Response:
    return JSONResponse(calls)


async def block(request: Request) -> Response:
    seconds = float(request.query_params["seconds"])
    logger.info("Blocking the event loop for %s s", seconds)
    time.sleep(seconds)  # noqa: ASYNC251 - blocks the event loop on purpose
    return PlainTextResponse("unblocked")


routes = [
    Route("/predict", predict, methods=["GET", "POST"]),
    Route("/toggle", toggle, methods=["POST"]),
    Route("/drain", drain, methods=["POST"]),
    Route("/calls", slow_calls),
    Route("/block", block),
]

checks = HealthChecks(cache_seconds=0)
checks.add("db", db_check)
checks.add_worker(FakeWorker())
app = mlmiddleware.instrument(Starlette(routes=routes), service="health-test", health=checks)

storm_checks = HealthChecks(cache_seconds=60)
storm_checks.add("slow", slow_check)
storm_app = mlmiddleware.instrument(Starlette(routes=routes), health=storm_checks)

lag_checks = HealthChecks(max_loop_lag_seconds=0.5, loop_lag_window_seconds=30.0)
lag_app = mlmiddleware.instrument(Starlette(routes=routes), health=lag_checks)
