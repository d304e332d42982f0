"""instrument() with metrics: the /metrics route, the metrics layer and model_info."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from mlmiddleware import instrument
from mlmiddleware._types import ASGIApp

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def hello(request: Request) -> Response:
    return PlainTextResponse(f"hello {request.path_params['name']}")


async def own(request: Request) -> Response:
    return PlainTextResponse("own")


def make_app() -> Starlette:
    return Starlette(routes=[Route("/hello/{name}", hello), Route("/own", own)])


def request_all(app: ASGIApp, *paths: str) -> list[httpx.Response]:
    async def send_all() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return [await client.get(path) for path in paths]

    return asyncio.run(send_all())


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def instrumented(**options: Any) -> ASGIApp:
    options.setdefault("json_logs", False)
    return instrument(make_app(), **options)


def test_metrics_route_served() -> None:
    registry = CollectorRegistry()
    app = instrumented(registry=registry)
    _, _, scrape = request_all(app, "/hello/ann", "/hello/bob", "/metrics")

    assert scrape.status_code == 200
    samples = parse(scrape.text)
    key = (
        "http_requests_total",
        frozenset({"method": "GET", "route": "/hello/{name}", "status": "200"}.items()),
    )
    assert samples[key] == 2


def test_metrics_path_not_counted() -> None:
    registry = CollectorRegistry()
    app = instrumented(registry=registry)
    request_all(app, "/metrics", "/livez", "/readyz", "/metrics")
    scrape = request_all(app, "/metrics")[0]

    routes = {
        dict(labels)["route"]
        for name, labels in parse(scrape.text)
        if name == "http_requests_total"
    }
    assert routes == set()


def test_metrics_path_custom() -> None:
    registry = CollectorRegistry()
    app = instrumented(registry=registry, metrics_path="/internal/prom")
    default_path, custom_path = request_all(app, "/metrics", "/internal/prom")

    assert default_path.status_code == 404
    assert custom_path.status_code == 200
    assert "http_requests_total" in custom_path.text


def test_app_routes_untouched() -> None:
    inner = make_app()
    paths_before = [route.path for route in inner.routes]  # type: ignore[attr-defined]
    app = instrument(inner, registry=CollectorRegistry(), json_logs=False)
    response = request_all(app, "/own")[0]

    assert [route.path for route in inner.routes] == paths_before  # type: ignore[attr-defined]
    assert response.status_code == 200
    assert response.text == "own"


def test_metrics_disabled() -> None:
    registry = CollectorRegistry()
    app = instrumented(registry=registry, metrics=False)
    hello_response, metrics_response = request_all(app, "/hello/ann", "/metrics")

    assert hello_response.status_code == 200
    assert metrics_response.status_code == 404
    assert generate_latest(registry) == b""


def test_custom_registry_no_leak() -> None:
    before = {family.name for family in REGISTRY.collect()}
    app = instrumented(registry=CollectorRegistry(), model_version="v1")
    request_all(app, "/hello/ann")

    after = {family.name for family in REGISTRY.collect()}
    assert after == before


def test_two_apps_one_process() -> None:
    first_registry = CollectorRegistry()
    second_registry = CollectorRegistry()
    first = instrumented(registry=first_registry)
    second = instrumented(registry=second_registry)
    request_all(first, "/hello/a")
    request_all(second, "/hello/b", "/hello/c")

    key = (
        "http_requests_total",
        frozenset({"method": "GET", "route": "/hello/{name}", "status": "200"}.items()),
    )
    assert parse(generate_latest(first_registry).decode())[key] == 1
    assert parse(generate_latest(second_registry).decode())[key] == 2


def test_model_version_everywhere() -> None:
    registry = CollectorRegistry()
    app = instrumented(registry=registry, service="ranker", model_version="2024-06-01")
    response, scrape = request_all(app, "/hello/ann", "/metrics")

    assert response.headers["x-model-version"] == "2024-06-01"
    assert scrape.headers["x-model-version"] == "2024-06-01"
    labels = frozenset({"service": "ranker", "model": "ranker", "version": "2024-06-01"}.items())
    assert parse(scrape.text)[("model_info", labels)] == 1


def test_model_version_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_VERSION", "env-7")
    monkeypatch.setenv("MODEL_NAME", "bert")
    registry = CollectorRegistry()
    app = instrumented(registry=registry, service="ranker")
    response, scrape = request_all(app, "/hello/ann", "/metrics")

    assert response.headers["x-model-version"] == "env-7"
    labels = frozenset({"service": "ranker", "model": "bert", "version": "env-7"}.items())
    assert parse(scrape.text)[("model_info", labels)] == 1


def test_model_version_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODEL_VERSION", raising=False)
    registry = CollectorRegistry()
    app = instrumented(registry=registry)
    response, scrape = request_all(app, "/hello/ann", "/metrics")

    assert "x-model-version" not in response.headers
    assert "model_info" not in {name for name, _ in parse(scrape.text)}


def test_model_version_invalid_header() -> None:
    with pytest.raises(ValueError, match="printable ASCII"):
        instrumented(registry=CollectorRegistry(), model_version="v1\r\nx-evil: 1")
