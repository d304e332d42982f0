"""Batching behind a real uvicorn server: lifespan wiring, probes, disconnects, draining."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.routing import Route

from mlmiddleware import instrument
from mlmiddleware.batching import Batcher, batching_endpoint
from tests.batching.conftest import EVENT_TIMEOUT_S, FakeModel, outcome_count
from tests.support import free_port


class ThreadedServer:
    """uvicorn in a background thread of this process, so tests can reach the fake model."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.thread.start()
        wait_for(lambda: self.server.started)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(EVENT_TIMEOUT_S)


def wait_for(condition: Any, timeout_s: float = EVENT_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition still false after the timeout"
        time.sleep(0.005)


def post_in_thread(url: str, document: Any, results: list[httpx.Response]) -> threading.Thread:
    def post() -> None:
        results.append(httpx.post(url, json=document, timeout=EVENT_TIMEOUT_S))

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread


def build_app(batcher: Batcher, registry: CollectorRegistry) -> Any:
    app = Starlette(routes=[Route("/v1/predict", batching_endpoint(batcher))])
    return instrument(app, batchers=[batcher], registry=registry, json_logs=False)


@pytest.fixture
def gated() -> Iterator[FakeModel]:
    model = FakeModel(gated=True)
    yield model
    model.gate.set()


def test_instrument_warms_before_ready(gated: FakeModel) -> None:
    registry = CollectorRegistry()
    batcher = Batcher(gated, registry=registry, max_batch_size=2, warmup=[1])
    server = ThreadedServer(build_app(batcher, registry))
    thread = threading.Thread(target=server.start, daemon=True)
    thread.start()

    # uvicorn listens only after lifespan startup, so the warmup holds back all traffic.
    wait_for(gated.running.is_set)
    assert batcher.readiness_error() == "warming up"
    assert not server.server.started

    gated.gate.set()
    thread.join(EVENT_TIMEOUT_S)
    try:
        ready = httpx.get(f"{server.url}/readyz", timeout=EVENT_TIMEOUT_S)
        response = httpx.post(f"{server.url}/v1/predict", json={"inputs": 2}, timeout=10)
    finally:
        server.stop()

    assert gated.sizes[:2] == [1, 2]
    assert ready.status_code == 200
    assert response.json() == {"outputs": 20}
    assert batcher.readiness_error() == "not started"


def test_livez_answers_during_long_batch(gated: FakeModel) -> None:
    registry = CollectorRegistry()
    batcher = Batcher(gated, registry=registry)
    server = ThreadedServer(build_app(batcher, registry))
    server.start()
    results: list[httpx.Response] = []
    try:
        worker = post_in_thread(f"{server.url}/v1/predict", {"inputs": 1}, results)
        wait_for(gated.running.is_set)

        started = time.monotonic()
        live = httpx.get(f"{server.url}/livez", timeout=EVENT_TIMEOUT_S)
        elapsed_s = time.monotonic() - started
        still_running = gated.running.is_set()
    finally:
        gated.gate.set()
        server.stop()
    worker.join(EVENT_TIMEOUT_S)

    assert live.status_code == 200
    # The model is still blocked in predict, so the probe was served during the batch.
    assert still_running
    # Bound, not a target: about 1 ms on an idle machine; 0.5 s leaves room for a loaded CI
    # box while still failing if the batch blocked the event loop until its gate opened.
    assert elapsed_s < 0.5
    assert results[0].json() == {"outputs": 10}


def test_disconnect_withdraws_queued_item(gated: FakeModel) -> None:
    registry = CollectorRegistry()
    batcher = Batcher(gated, registry=registry)
    server = ThreadedServer(build_app(batcher, registry))
    server.start()
    results: list[httpx.Response] = []
    try:
        blocker = post_in_thread(f"{server.url}/v1/predict", {"inputs": 0}, results)
        wait_for(gated.running.is_set)

        body = b'{"inputs": 7}'
        request = (
            b"POST /v1/predict HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        with socket.create_connection(("127.0.0.1", server.port)) as client:
            client.sendall(request)
            wait_for(lambda: batcher.queue_depth == 1)
        wait_for(lambda: batcher.queue_depth == 0)
    finally:
        gated.gate.set()
        blocker.join(EVENT_TIMEOUT_S)
        server.stop()

    assert 7 not in gated.seen
    assert results[0].status_code == 200
    cancelled = outcome_count(registry, "cancelled")
    assert cancelled == 1.0


def test_shutdown_finishes_accepted_items(gated: FakeModel) -> None:
    registry = CollectorRegistry()
    batcher = Batcher(gated, registry=registry)
    server = ThreadedServer(build_app(batcher, registry))
    server.start()
    results: list[httpx.Response] = []
    threads = [post_in_thread(f"{server.url}/v1/predict", {"inputs": 0}, results)]
    wait_for(gated.running.is_set)
    threads += [
        post_in_thread(f"{server.url}/v1/predict", {"inputs": item}, results) for item in (1, 2, 3)
    ]
    wait_for(lambda: batcher.queue_depth == 3)

    server.server.should_exit = True
    gated.gate.set()
    server.thread.join(EVENT_TIMEOUT_S)
    for thread in threads:
        thread.join(EVENT_TIMEOUT_S)

    assert sorted(response.json()["outputs"] for response in results) == [0, 10, 20, 30]
    assert batcher.readiness_error() == "not started"


def test_two_apps_share_default_name(gated: FakeModel) -> None:
    # Two apps in one process, each with its own registry, must not collide on metrics.
    gated.gate.set()
    for _ in range(2):
        registry = CollectorRegistry()
        batcher = Batcher(gated, registry=registry)
        app = build_app(batcher, registry)

        async def lifespan_roundtrip(app: Any = app) -> None:
            messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

            async def receive() -> Any:
                return next(messages)

            async def send(message: Any) -> None:
                assert not message["type"].endswith("failed"), message

            await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)

        asyncio.run(lifespan_roundtrip())
        assert batcher.readiness_error() == "not started"
