"""PrometheusMiddleware: labels, status codes, byte counts and exclusions.

Requests are driven through the ASGI interface directly, so client disconnects and
failing apps are deterministic. Every value is read back by parsing a scrape with the
Prometheus text parser.
"""

from __future__ import annotations

import asyncio
import random
import string
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

from mlmiddleware._context import RequestContext, current_request_context
from mlmiddleware._types import ASGIApp, Message, Receive, Scope, Send
from mlmiddleware.metrics.app import metrics_app
from mlmiddleware.middleware.prometheus import PrometheusMiddleware
from tests.asgi import http_scope

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(registry: CollectorRegistry) -> Samples:
    text = generate_latest(registry).decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def label_values(samples: Samples, name: str, label: str) -> set[str]:
    return {dict(key)[label] for sample_name, key in samples if sample_name == name}


async def call(
    app: ASGIApp,
    method: str = "GET",
    path: str = "/",
    *,
    body: Sequence[bytes] = (b"",),
    headers: Iterable[tuple[bytes, bytes]] = (),
    root_path: str = "",
    disconnect_first: bool = False,
) -> list[Message]:
    """Send one request through ``app`` and return the messages it sent."""
    scope: Scope = http_scope(path, method=method, headers=headers, root_path=root_path)
    incoming: list[Message] = []
    if not disconnect_first:
        for index, chunk in enumerate(body):
            incoming.append(
                {"type": "http.request", "body": chunk, "more_body": index < len(body) - 1}
            )
    sent: list[Message] = []

    async def receive() -> Message:
        if incoming:
            return incoming.pop(0)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def item(request: Request) -> Response:
    return PlainTextResponse(f"item {request.path_params['item_id']}")


async def ok(request: Request) -> Response:
    return PlainTextResponse("ok")


async def echo(request: Request) -> Response:
    return Response(await request.body())


async def stream(request: Request) -> Response:
    async def chunks() -> Any:
        for _ in range(5):
            yield b"x" * 1000

    return StreamingResponse(chunks())


async def boom(request: Request) -> Response:
    raise RuntimeError("model failed")


def make_app() -> Starlette:
    sub = Starlette(routes=[Route("/list/{id}", ok)])
    return Starlette(
        routes=[
            Route("/items/{item_id}", item, methods=["GET", "HEAD", "FOO"]),
            Route("/echo", echo, methods=["POST"]),
            Route("/stream", stream),
            Route("/boom", boom),
            Route("/metrics", ok),
            Mount("/api/v1", sub),
        ]
    )


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def test_counter_route_template(registry: CollectorRegistry) -> None:
    app = PrometheusMiddleware(make_app(), registry=registry)
    run(call(app, path="/items/1"))
    run(call(app, path="/items/2"))

    samples = scrape(registry)
    assert (
        value(samples, "http_requests_total", method="GET", route="/items/{item_id}", status="200")
        == 2
    )
    assert label_values(samples, "http_requests_total", "route") == {"/items/{item_id}"}
    assert (
        value(
            samples, "http_request_duration_seconds_count", method="GET", route="/items/{item_id}"
        )
        == 2
    )


def test_route_through_mount(registry: CollectorRegistry) -> None:
    app = PrometheusMiddleware(make_app(), registry=registry)
    run(call(app, path="/api/v1/list/7"))

    samples = scrape(registry)
    assert (
        value(samples, "http_requests_total", method="GET", route="/api/v1/list/{id}", status="200")
        == 1
    )


def test_route_under_root_path(registry: CollectorRegistry) -> None:
    app = PrometheusMiddleware(make_app(), registry=registry)
    sent = run(call(app, path="/items/3", root_path="/svc"))

    assert sent[0]["status"] == 200
    samples = scrape(registry)
    assert (
        value(samples, "http_requests_total", method="GET", route="/items/{item_id}", status="200")
        == 1
    )


def test_route_inner_middleware_response(registry: CollectorRegistry) -> None:
    inner = make_app()

    async def rate_limiter(scope: Scope, receive: Receive, send: Send) -> None:
        # Rejects before the routed app runs, as a rate limiter does.
        await send({"type": "http.response.start", "status": 429, "headers": []})
        await send({"type": "http.response.body", "body": b"slow down"})

    rate_limiter.app = inner  # type: ignore[attr-defined]
    app = PrometheusMiddleware(rate_limiter, registry=registry)
    run(call(app, path="/items/9"))

    samples = scrape(registry)
    assert (
        value(samples, "http_requests_total", method="GET", route="/items/{item_id}", status="429")
        == 1
    )


def test_random_paths_one_label(registry: CollectorRegistry) -> None:
    app = PrometheusMiddleware(make_app(), registry=registry)
    run(call(app, path="/items/1"))
    before = label_values(scrape(registry), "http_requests_total", "route")

    async def many() -> None:
        rng = random.Random(7)
        for _ in range(10_000):
            path = "/" + "".join(rng.choices(string.ascii_lowercase, k=12))
            await call(app, path=path)

    run(many())

    samples = scrape(registry)
    added = label_values(samples, "http_requests_total", "route") - before
    assert len(added) <= 1
    assert (
        value(samples, "http_requests_total", method="GET", route="<unmatched>", status="404")
        == 10_000
    )


def test_unknown_method_other(registry: CollectorRegistry) -> None:
    app = PrometheusMiddleware(make_app(), registry=registry)
    run(call(app, "FOO", "/items/1"))
    run(call(app, "BREW", "/items/1"))

    samples = scrape(registry)
    assert label_values(samples, "http_requests_total", "method") == {"OTHER"}
    assert (
        value(
            samples, "http_requests_total", method="OTHER", route="/items/{item_id}", status="200"
        )
        == 1
    )
    assert (
        value(
            samples, "http_requests_total", method="OTHER", route="/items/{item_id}", status="405"
        )
        == 1
    )


def test_exception_counts_500(registry: CollectorRegistry) -> None:
    app = PrometheusMiddleware(make_app(), registry=registry)
    with pytest.raises(RuntimeError, match="model failed"):
        run(call(app, path="/boom"))

    samples = scrape(registry)
    assert value(samples, "http_requests_total", method="GET", route="/boom", status="500") == 1
    assert value(samples, "http_requests_in_progress", method="GET", route="/boom") == 0


def test_app_without_response_500(registry: CollectorRegistry) -> None:
    async def silent(scope: Scope, receive: Receive, send: Send) -> None:
        return None

    app = PrometheusMiddleware(silent, registry=registry)
    run(call(app, path="/x"))

    samples = scrape(registry)
    assert (
        value(samples, "http_requests_total", method="GET", route="<unmatched>", status="500") == 1
    )


def test_disconnect_counts_499(registry: CollectorRegistry) -> None:
    async def waits_for_body(scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"late"})

    app = PrometheusMiddleware(waits_for_body, registry=registry)
    sent = run(call(app, "POST", "/predict", disconnect_first=True))

    assert sent == []
    samples = scrape(registry)
    assert (
        value(samples, "http_requests_total", method="POST", route="<unmatched>", status="499") == 1
    )
    assert value(samples, "http_requests_in_progress", method="POST", route="<unmatched>") == 0


def test_disconnect_mid_stream_499(registry: CollectorRegistry) -> None:
    async def streams_until_gone(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        await receive()
        await receive()

    app = PrometheusMiddleware(streams_until_gone, registry=registry)
    run(call(app, path="/s"))

    samples = scrape(registry)
    assert (
        value(samples, "http_requests_total", method="GET", route="<unmatched>", status="499") == 1
    )
    assert value(samples, "http_response_size_bytes_sum", method="GET", route="<unmatched>") == 4


def test_disconnect_after_response_keeps_status(registry: CollectorRegistry) -> None:
    async def reads_after_response(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        await receive()

    app = PrometheusMiddleware(reads_after_response, registry=registry)
    run(call(app, "POST", "/s"))

    samples = scrape(registry)
    assert (
        value(samples, "http_requests_total", method="POST", route="<unmatched>", status="201") == 1
    )


def test_in_progress_during_request(registry: CollectorRegistry) -> None:
    seen: list[float | None] = []

    async def probe(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(
            value(scrape(registry), "http_requests_in_progress", method="GET", route="<unmatched>")
        )
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app = PrometheusMiddleware(probe, registry=registry)
    run(call(app, path="/p"))

    assert seen == [1.0]
    assert (
        value(scrape(registry), "http_requests_in_progress", method="GET", route="<unmatched>") == 0
    )


def test_request_bytes_from_chunks(registry: CollectorRegistry) -> None:
    app = PrometheusMiddleware(make_app(), registry=registry)
    # The Content-Length header is wrong on purpose: the count must come from the body.
    sent = run(
        call(
            app,
            "POST",
            "/echo",
            body=[b"a" * 100, b"b" * 50, b""],
            headers=[(b"content-length", b"9")],
        )
    )

    assert sent[-1]["body"] == b"a" * 100 + b"b" * 50
    samples = scrape(registry)
    assert value(samples, "http_request_size_bytes_sum", method="POST", route="/echo") == 150
    assert value(samples, "http_response_size_bytes_sum", method="POST", route="/echo") == 150


def test_response_bytes_streaming(registry: CollectorRegistry) -> None:
    app = PrometheusMiddleware(make_app(), registry=registry)
    run(call(app, path="/stream"))

    samples = scrape(registry)
    assert value(samples, "http_response_size_bytes_sum", method="GET", route="/stream") == 5000
    assert value(samples, "http_response_size_bytes_count", method="GET", route="/stream") == 1


def test_response_bytes_head_zero(registry: CollectorRegistry) -> None:
    async def sends_body_on_head(scope: Scope, receive: Receive, send: Send) -> None:
        # Servers drop a HEAD response's body, so it must not be counted.
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"y" * 300})

    app = PrometheusMiddleware(sends_body_on_head, registry=registry)
    run(call(app, "HEAD", "/h"))

    samples = scrape(registry)
    assert value(samples, "http_response_size_bytes_sum", method="HEAD", route="<unmatched>") == 0
    assert (
        value(samples, "http_requests_total", method="HEAD", route="<unmatched>", status="200") == 1
    )


def test_exclude_default_paths(registry: CollectorRegistry) -> None:
    app = PrometheusMiddleware(make_app(), registry=registry)
    run(call(app, path="/metrics"))
    run(call(app, path="/livez"))
    run(call(app, path="/livez", root_path="/svc"))

    routes = label_values(scrape(registry), "http_requests_total", "route")
    assert routes == set()


def test_exclude_custom_paths(registry: CollectorRegistry) -> None:
    app = PrometheusMiddleware(make_app(), registry=registry, exclude_paths=["/items/{item_id}"])
    run(call(app, path="/items/1"))
    run(call(app, path="/metrics"))

    routes = label_values(scrape(registry), "http_requests_total", "route")
    assert routes == {"/metrics"}


def test_websocket_lifespan_pass_through(registry: CollectorRegistry) -> None:
    calls: list[tuple[Scope, Receive, Send]] = []

    async def recorder(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append((scope, receive, send))

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        return None

    app = PrometheusMiddleware(recorder, registry=registry)
    websocket_scope: Scope = {"type": "websocket", "path": "/ws", "headers": []}
    lifespan_scope: Scope = {"type": "lifespan"}
    run(app(websocket_scope, receive, send))
    run(app(lifespan_scope, receive, send))

    assert calls[0][0] is websocket_scope
    assert calls[0][1] is receive
    assert calls[0][2] is send
    assert calls[1][0] is lifespan_scope
    assert "mlmiddleware.route" not in websocket_scope
    assert scrape(registry) == {}


def test_buckets_configurable(registry: CollectorRegistry) -> None:
    app = PrometheusMiddleware(make_app(), registry=registry, buckets=(0.1, 1.0))
    run(call(app, path="/items/1"))

    samples = scrape(registry)
    bounds = {
        dict(labels)["le"]
        for name, labels in samples
        if name == "http_request_duration_seconds_bucket"
    }
    assert bounds == {"0.1", "1.0", "+Inf"}


def test_buckets_mismatch_raises(registry: CollectorRegistry) -> None:
    PrometheusMiddleware(make_app(), registry=registry, buckets=(0.1, 1.0))

    with pytest.raises(ValueError, match="same buckets"):
        PrometheusMiddleware(make_app(), registry=registry, buckets=(0.5, 1.0))


def test_buckets_invalid_raises(registry: CollectorRegistry) -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        PrometheusMiddleware(make_app(), registry=registry, buckets=(1.0, 0.5))


def test_registry_shared_no_duplicate(registry: CollectorRegistry) -> None:
    first = PrometheusMiddleware(make_app(), registry=registry)
    second = PrometheusMiddleware(make_app(), registry=registry)
    run(call(first, path="/items/1"))
    run(call(second, path="/items/2"))

    samples = scrape(registry)
    assert (
        value(samples, "http_requests_total", method="GET", route="/items/{item_id}", status="200")
        == 2
    )


def test_custom_registry_no_leak(registry: CollectorRegistry) -> None:
    before = generate_latest(REGISTRY)
    app = PrometheusMiddleware(make_app(), registry=registry)
    run(call(app, path="/items/1"))

    names = {family.name for family in text_string_to_metric_families(before.decode())}
    after = {
        family.name for family in text_string_to_metric_families(generate_latest(REGISTRY).decode())
    }
    assert after == names
    assert "http_requests" not in after


def test_registry_conflict_message() -> None:
    from prometheus_client import Counter

    registry = CollectorRegistry()
    Counter("http_requests", "Registered first by another library.", registry=registry)

    with pytest.raises(ValueError, match="pass registry=CollectorRegistry"):
        PrometheusMiddleware(make_app(), registry=registry)


def test_exemplar_trace_id(registry: CollectorRegistry) -> None:
    from prometheus_client.openmetrics.parser import (
        text_string_to_metric_families as parse_openmetrics,
    )

    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"

    async def with_context() -> None:
        token = current_request_context.set(RequestContext("req-1", trace_id, "00f067aa0ba902b7"))
        try:
            await call(
                PrometheusMiddleware(make_app(), registry=registry, exemplars=True), path="/items/1"
            )
        finally:
            current_request_context.reset(token)

    run(with_context())
    scrape_messages = run(
        call(
            metrics_app(registry),
            headers=[(b"accept", b"application/openmetrics-text; version=1.0.0")],
        )
    )

    text = scrape_messages[-1]["body"].decode()
    exemplars = [
        sample.exemplar
        for family in parse_openmetrics(text)
        for sample in family.samples
        if sample.name == "http_request_duration_seconds_bucket" and sample.exemplar is not None
    ]
    assert len(exemplars) == 1
    assert exemplars[0].labels == {"trace_id": trace_id}


def test_exemplars_off_by_default(registry: CollectorRegistry) -> None:
    async def with_context() -> None:
        token = current_request_context.set(RequestContext("req-1", "a" * 32, "b" * 16))
        try:
            await call(PrometheusMiddleware(make_app(), registry=registry), path="/items/1")
        finally:
            current_request_context.reset(token)

    run(with_context())
    sent = run(call(metrics_app(registry), headers=[(b"accept", b"application/openmetrics-text")]))

    assert b"trace_id" not in sent[-1]["body"]
