"""PrometheusMiddleware behind a real uvicorn server: chunked bodies and disconnects."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import uvicorn
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from mlmiddleware.middleware.prometheus import PrometheusMiddleware


async def upload(request: Request) -> Response:
    body = await request.body()
    return Response(str(len(body)))


async def stream(request: Request) -> Response:
    count = int(request.query_params.get("count", "3"))

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(count):
            yield b"z" * 1000
            await asyncio.sleep(0.02)

    return StreamingResponse(chunks())


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def wait_for(
    registry: CollectorRegistry, expected: float, name: str, **labels: str
) -> float | None:
    """Poll until a sample equals ``expected``, because the server records after replying."""
    deadline = time.monotonic() + 20
    found = value(registry, name, **labels)
    while found != expected and time.monotonic() < deadline:
        time.sleep(0.05)
        found = value(registry, name, **labels)
    return found


@pytest.fixture
def served() -> Iterator[tuple[str, CollectorRegistry]]:
    registry = CollectorRegistry()
    routes = [Route("/upload", upload, methods=["POST"]), Route("/stream", stream)]
    app = PrometheusMiddleware(Starlette(routes=routes), registry=registry)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", registry
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


def test_chunked_upload_bytes(served: tuple[str, CollectorRegistry]) -> None:
    base, registry = served

    def body() -> Iterator[bytes]:
        yield b"a" * 3000
        yield b"b" * 1234

    # A generator body is sent with Transfer-Encoding: chunked and no Content-Length.
    response = httpx.post(f"{base}/upload", content=body(), timeout=20)

    assert response.text == "4234"
    # The response size is recorded last, so once it is there every sample is.
    assert (
        wait_for(registry, 4, "http_response_size_bytes_sum", method="POST", route="/upload") == 4
    )
    assert value(registry, "http_request_size_bytes_sum", method="POST", route="/upload") == 4234


def test_streaming_response_bytes(served: tuple[str, CollectorRegistry]) -> None:
    base, registry = served
    response = httpx.get(f"{base}/stream?count=4", timeout=20)

    assert len(response.content) == 4000
    size = wait_for(registry, 4000, "http_response_size_bytes_sum", method="GET", route="/stream")
    assert size == 4000
    labels = {"method": "GET", "route": "/stream", "status": "200"}
    assert value(registry, "http_requests_total", **labels) == 1


def test_client_disconnect_499(served: tuple[str, CollectorRegistry]) -> None:
    base, registry = served
    with httpx.stream("GET", f"{base}/stream?count=2000", timeout=20) as response:
        next(response.iter_bytes())

    labels = {"method": "GET", "route": "/stream", "status": "499"}
    assert wait_for(registry, 1, "http_requests_total", **labels) == 1
    assert value(registry, "http_requests_in_progress", method="GET", route="/stream") == 0
