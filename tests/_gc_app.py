"""An instrumented app whose own startup allocates objects, for the heap-freezing tests.

``FREEZE_GC=0`` in the environment turns ``freeze_gc`` off, and ``STARTUP_OBJECTS`` sets how
many objects the startup allocates. Import it only in the server process: ``instrument()``
configures logging for the whole process.
"""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mlmiddleware import instrument

STARTUP_OBJECTS = int(os.environ["STARTUP_OBJECTS"])

# Filled by the app's own startup, as a model loader would be.
model: list[list[int]] = []


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    # Lists are always tracked by the garbage collector, unlike dicts of plain ints.
    model.extend([index] for index in range(STARTUP_OBJECTS))
    yield


async def heap(request: Request) -> Response:
    return JSONResponse(
        {"frozen": gc.get_freeze_count(), "tracked": len(gc.get_objects()), "model": len(model)}
    )


app = instrument(
    Starlette(routes=[Route("/heap", heap)], lifespan=lifespan),
    service="gc-test",
    registry=CollectorRegistry(),
    freeze_gc=os.environ.get("FREEZE_GC", "1") != "0",
)
