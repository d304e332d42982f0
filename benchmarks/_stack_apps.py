"""Apps for the whole-stack benchmarks, one factory per variant.

Every variant serves the same two routes: ``GET /hello/{name}`` returns ``hello`` as
text, and ``POST /echo`` parses a JSON object and returns it. Factories build a fresh
app, so ``uvicorn --factory _stack_apps:<factory>`` and the in-process measurement use
the same code. The instrumented variants get a registry of their own, because the
in-process measurement builds both of them in one process.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from mlmiddleware._types import ASGIApp

HELLO_PATH = "/hello/world"
ECHO_PATH = "/echo"


def echo_body() -> bytes:
    """Return a JSON object of 1,024 bytes, the body that the echo route receives."""
    head = b'{"model":"embedder","inputs":"'
    tail = b'"}'
    return head + b"x" * (1024 - len(head) - len(tail)) + tail


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


async def echo(request: Request) -> Response:
    return JSONResponse(await request.json())


def _starlette_routes() -> list[Route]:
    return [Route("/hello/{name}", hello), Route(ECHO_PATH, echo, methods=["POST"])]


def _fastapi() -> FastAPI:
    app = FastAPI()

    @app.get("/hello/{name}", response_class=PlainTextResponse)
    async def fastapi_hello(name: str) -> str:
        return "hello"

    @app.post(ECHO_PATH)
    async def fastapi_echo(payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    return app


def _instrument(app: ASGIApp, **options: Any) -> ASGIApp:
    from prometheus_client import CollectorRegistry

    from mlmiddleware import instrument

    # Without options every capability is at its default: request context, JSON access log
    # on stderr, metrics, the 10 MiB body limit and the health probes.
    return instrument(app, service="bench", registry=CollectorRegistry(), **options)


def starlette_bare() -> ASGIApp:
    """Starlette alone: the baseline of the Starlette variants."""
    return Starlette(routes=_starlette_routes())


def starlette_instrumented() -> ASGIApp:
    """Starlette wrapped by ``instrument()`` with everything on."""
    return _instrument(Starlette(routes=_starlette_routes()))


def starlette_peer() -> ASGIApp:
    """Starlette with the stack a user assembles from other packages.

    asgi-correlation-id sets the request id, starlette-exporter records metrics with
    route templates as labels, and uvicorn's access log is formatted as JSON by
    python-json-logger with the request id added by ``CorrelationIdFilter``. The server
    must therefore run with uvicorn's access log on, and the in-process measurement
    leaves the access log line out.
    """
    from asgi_correlation_id import CorrelationIdFilter, CorrelationIdMiddleware
    from pythonjsonlogger.json import JsonFormatter
    from starlette_exporter import PrometheusMiddleware, handle_metrics

    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(CorrelationIdFilter())
    handler.setFormatter(
        JsonFormatter(
            "{asctime}{levelname}{name}{message}{correlation_id}", style="{", timestamp=True
        )
    )
    access = logging.getLogger("uvicorn.access")
    access.handlers[:] = [handler]
    access.propagate = False

    routes = [*_starlette_routes(), Route("/metrics", handle_metrics)]
    middleware = [
        Middleware(CorrelationIdMiddleware),
        Middleware(PrometheusMiddleware, group_paths=True),
    ]
    return Starlette(routes=routes, middleware=middleware)


def fastapi_bare() -> ASGIApp:
    """FastAPI alone: the baseline of the FastAPI variants."""
    return _fastapi()


def fastapi_instrumented() -> ASGIApp:
    """FastAPI wrapped by ``instrument()`` with everything on."""
    return _instrument(_fastapi())


def starlette_no_access_log() -> ASGIApp:
    """Starlette under ``instrument()`` without the access log."""
    return _instrument(Starlette(routes=_starlette_routes()), access_log=False)


def starlette_no_metrics() -> ASGIApp:
    """Starlette under ``instrument()`` without metrics."""
    return _instrument(Starlette(routes=_starlette_routes()), metrics=False)


def starlette_context_only() -> ASGIApp:
    """Starlette under ``instrument()`` with request context, body limit and routing only."""
    return _instrument(
        Starlette(routes=_starlette_routes()), access_log=False, metrics=False, health=False
    )


# In-process only: instrument() with parts switched off, to show where its cost goes.
# Variant -> factory name; the baseline is bare Starlette.
PARTS: dict[str, str] = {
    "starlette+instrument without access log": "starlette_no_access_log",
    "starlette+instrument without metrics": "starlette_no_metrics",
    "starlette+instrument, context and body limit only": "starlette_context_only",
}

# Variant -> (factory name, baseline variant, whether uvicorn writes the access log).
VARIANTS: dict[str, tuple[str, str, bool]] = {
    "starlette": ("starlette_bare", "starlette", False),
    "starlette+instrument": ("starlette_instrumented", "starlette", False),
    "starlette+peer stack": ("starlette_peer", "starlette", True),
    "fastapi": ("fastapi_bare", "fastapi", False),
    "fastapi+instrument": ("fastapi_instrumented", "fastapi", False),
}
