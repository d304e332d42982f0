"""Hello-world Starlette apps for the HTTP overhead benchmark, one factory per variant.

Each factory builds a fresh app. The mlmiddleware and instrumentator variants get a
registry of their own, because both use the name ``http_requests_total`` and the
in-process measurement builds every variant in one process. prometheus-fastapi-instrumentator
8.1 silently skips a metric whose name is already registered, which would understate its
cost.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from mlmiddleware._types import ASGIApp


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


def _routes() -> list[Route]:
    return [Route("/hello/{name}", hello)]


def bare_app() -> ASGIApp:
    """Starlette without metrics: the baseline."""
    return Starlette(routes=_routes())


def mlmiddleware_app() -> ASGIApp:
    """Starlette wrapped in ``mlmiddleware``'s ``PrometheusMiddleware``."""
    from prometheus_client import CollectorRegistry

    from mlmiddleware.middleware.prometheus import PrometheusMiddleware

    return PrometheusMiddleware(Starlette(routes=_routes()), registry=CollectorRegistry())


def starlette_exporter_app() -> ASGIApp:
    """Starlette with starlette-exporter's middleware, route templates as labels."""
    from starlette_exporter import PrometheusMiddleware

    return Starlette(
        routes=_routes(), middleware=[Middleware(PrometheusMiddleware, group_paths=True)]
    )


def instrumentator_app() -> ASGIApp:
    """Starlette with prometheus-fastapi-instrumentator's default metrics."""
    from prometheus_client import CollectorRegistry
    from prometheus_fastapi_instrumentator import Instrumentator

    app = Starlette(routes=_routes())
    Instrumentator(registry=CollectorRegistry()).instrument(app)
    return app


# Variant name -> factory name, as ``uvicorn --factory _apps:<factory>`` takes it.
VARIANTS = {
    "bare": "bare_app",
    "mlmiddleware": "mlmiddleware_app",
    "starlette_exporter": "starlette_exporter_app",
    "instrumentator": "instrumentator_app",
}
