"""App served by ``uvicorn --workers 3`` in the multi-process metrics test."""

from __future__ import annotations

import os
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from mlmiddleware import instrument


async def work(request: Request) -> Response:
    # Blocks this worker's event loop on purpose, so concurrent connections are accepted
    # by the other workers and the counts come from several processes.
    time.sleep(0.05)  # noqa: ASYNC251
    return PlainTextResponse(str(os.getpid()))


app = instrument(
    Starlette(routes=[Route("/work", work)]),
    service="multiproc-test",
    model_version="v1",
    json_logs=False,
    access_log=False,
    health=False,
)
