"""batching_endpoint: JSON protocol, raw bodies, error mapping, encoding and capture."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import torch
from prometheus_client import CollectorRegistry

from mlmiddleware.batching import Batcher, batching_endpoint
from mlmiddleware.middleware.context import RequestContextMiddleware
from tests.batching.conftest import FakeModel, wait_until

pytestmark = pytest.mark.anyio


class ListSink:
    """A feedback sink that keeps records in memory, or fails every write."""

    def __init__(self, *, fail: bool = False) -> None:
        self.records: list[dict[str, Any]] = []
        self.fail = fail

    def write(self, record: dict[str, Any]) -> None:
        if self.fail:
            raise OSError("disk full")
        self.records.append(record)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


@asynccontextmanager
async def serve(
    batcher: Batcher, *, start: bool = True, **options: Any
) -> AsyncIterator[httpx.AsyncClient]:
    app = RequestContextMiddleware(batching_endpoint(batcher, **options))
    transport = httpx.ASGITransport(app=app)
    if start:
        await batcher.start()
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            yield client
    finally:
        await batcher.stop()


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


async def test_inputs_returns_outputs(registry: CollectorRegistry) -> None:
    async with serve(Batcher(FakeModel(), registry=registry)) as client:
        response = await client.post("/", json={"inputs": 4})

    assert response.status_code == 200
    assert response.json() == {"outputs": 40}


async def test_instances_return_predictions(registry: CollectorRegistry) -> None:
    model = FakeModel()
    async with serve(Batcher(model, registry=registry, max_batch_size=2)) as client:
        response = await client.post("/", json={"instances": [1, 2, 3]})

    assert response.status_code == 200
    assert response.json() == {"predictions": [10, 20, 30]}
    assert max(model.sizes) <= 2


async def test_instances_share_batch_across_clients(registry: CollectorRegistry) -> None:
    model = FakeModel(gated=True)
    batcher = Batcher(model, registry=registry)
    async with serve(batcher) as client:
        blocker = asyncio.ensure_future(client.post("/", json={"inputs": 0}))
        await model.wait_running()
        first = asyncio.ensure_future(client.post("/", json={"instances": [1, 2]}))
        second = asyncio.ensure_future(client.post("/", json={"inputs": 3}))
        await wait_until(lambda: batcher.queue_depth == 3)
        model.gate.set()
        responses = await asyncio.gather(blocker, first, second)

    assert [response.status_code for response in responses] == [200, 200, 200]
    assert model.sizes == [1, 3]


async def test_malformed_json_is_400(registry: CollectorRegistry) -> None:
    async with serve(Batcher(FakeModel(), registry=registry)) as client:
        response = await client.post(
            "/", content=b"{not json", headers={"content-type": "application/json"}
        )

    assert response.status_code == 400
    assert error_of(response)["type"] == "invalid_json"
    assert error_of(response)["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize(
    "document",
    [[1, 2], {"inputs": 1, "instances": [1]}, {"other": 1}, {"instances": 5}],
)
async def test_wrong_shape_is_422(registry: CollectorRegistry, document: Any) -> None:
    async with serve(Batcher(FakeModel(), registry=registry)) as client:
        response = await client.post("/", json=document)

    assert response.status_code == 422
    assert error_of(response)["type"] == "validation_error"


async def test_unsupported_media_type_is_415(registry: CollectorRegistry) -> None:
    async with serve(Batcher(FakeModel(), registry=registry)) as client:
        response = await client.post("/", content=b"a=1", headers={"content-type": "text/plain"})

    assert response.status_code == 415
    assert error_of(response)["type"] == "unsupported_media_type"


async def test_get_is_405(registry: CollectorRegistry) -> None:
    async with serve(Batcher(FakeModel(), registry=registry)) as client:
        response = await client.get("/")

    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


async def test_decode_rejection_is_422(registry: CollectorRegistry) -> None:
    def decode(item: Any) -> int:
        if not isinstance(item, int):
            raise ValueError(f"expected an integer, got {type(item).__name__}")
        return item

    model = FakeModel()
    async with serve(Batcher(model, registry=registry), decode=decode) as client:
        response = await client.post("/", json={"instances": [1, "x"]})
        good = await client.post("/", json={"inputs": 2})

    assert response.status_code == 422
    assert error_of(response)["message"] == "instances[1]: expected an integer, got str"
    assert good.json() == {"outputs": 20}
    assert "x" not in model.seen


async def test_body_over_limit_is_413(registry: CollectorRegistry) -> None:
    async with serve(Batcher(FakeModel(), registry=registry), max_body_bytes=64) as client:
        response = await client.post("/", json={"inputs": "x" * 100})

    assert response.status_code == 413
    assert error_of(response)["type"] == "payload_too_large"


async def test_too_many_instances_is_413(registry: CollectorRegistry) -> None:
    async with serve(Batcher(FakeModel(), registry=registry), max_items_per_request=3) as client:
        response = await client.post("/", json={"instances": [1, 2, 3, 4]})

    assert response.status_code == 413
    assert "max_items_per_request=3" in error_of(response)["message"]


async def test_queue_full_is_503(registry: CollectorRegistry) -> None:
    model = FakeModel(gated=True)
    batcher = Batcher(model, registry=registry, max_queue_size=1)
    async with serve(batcher) as client:
        blocker = asyncio.ensure_future(client.post("/", json={"inputs": 0}))
        await model.wait_running()
        queued = asyncio.ensure_future(client.post("/", json={"inputs": 1}))
        await wait_until(lambda: batcher.queue_depth == 1)

        response = await client.post("/", json={"inputs": 2})
        model.gate.set()
        await asyncio.gather(blocker, queued)

    assert response.status_code == 503
    assert error_of(response)["type"] == "queue_full"
    assert response.headers["retry-after"] == "1"


async def test_shutting_down_is_503(registry: CollectorRegistry) -> None:
    model = FakeModel(gated=True)
    batcher = Batcher(model, registry=registry)
    async with serve(batcher) as client:
        blocker = asyncio.ensure_future(client.post("/", json={"inputs": 0}))
        await model.wait_running()
        stopping = asyncio.ensure_future(batcher.stop())
        await wait_until(lambda: batcher.readiness_error() == "stopping")

        response = await client.post("/", json={"inputs": 1})
        model.gate.set()
        await stopping
        drained = await blocker

    assert response.status_code == 503
    assert error_of(response)["type"] == "shutting_down"
    assert "retry-after" in response.headers
    assert drained.json() == {"outputs": 0}


async def test_timeout_is_504(registry: CollectorRegistry) -> None:
    model = FakeModel(gated=True)
    async with serve(Batcher(model, registry=registry, timeout_s=0.1)) as client:
        blocker = asyncio.ensure_future(client.post("/", json={"inputs": 0}))
        await model.wait_running()
        response = await client.post("/", json={"inputs": 1})
        model.gate.set()
        await blocker

    assert response.status_code == 504
    assert error_of(response)["type"] == "timeout"


async def test_model_error_is_500_without_traceback(
    registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    model = FakeModel(poison=(3,))
    async with serve(Batcher(model, registry=registry)) as client:
        response = await client.post("/", json={"inputs": 3}, headers={"x-request-id": "req-42"})

    error = error_of(response)
    assert response.status_code == 500
    assert error["type"] == "model_error"
    assert error["message"] == "ValueError: cannot predict item 3"
    assert "Traceback" not in response.text
    logged = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert any("req-42" in record.getMessage() and record.exc_info for record in logged)


async def test_raw_body_passes_bytes(registry: CollectorRegistry) -> None:
    async with serve(Batcher(lambda batch: [len(item) for item in batch], registry=registry)) as c:
        response = await c.post(
            "/", content=b"\x00\x01\x02", headers={"content-type": "application/octet-stream"}
        )

    assert response.status_code == 200
    assert response.json() == {"outputs": 3}


@pytest.mark.parametrize(
    "make_result",
    [
        lambda: np.arange(3, dtype=np.float32),
        lambda: np.arange(6, dtype=np.float64).reshape(2, 3)[:, 1],
        lambda: torch.arange(3, dtype=torch.float32),
        lambda: torch.ones(2, dtype=torch.bfloat16),
    ],
)
async def test_array_results_encoded(
    registry: CollectorRegistry, make_result: Callable[[], Any]
) -> None:
    expected = np.asarray(make_result().tolist(), dtype=np.float64).tolist()
    batcher = Batcher(lambda batch: [make_result() for _ in batch], registry=registry)
    async with serve(batcher) as client:
        response = await client.post("/", json={"inputs": 1})

    assert response.status_code == 200
    assert orjson.loads(response.content)["outputs"] == expected


async def test_encode_error_is_500(registry: CollectorRegistry) -> None:
    def encode(result: Any) -> Any:
        raise KeyError("label")

    async with serve(Batcher(FakeModel(), registry=registry), encode=encode) as client:
        response = await client.post("/", json={"inputs": 1})

    assert response.status_code == 500
    assert "encode failed on inputs" in error_of(response)["message"]


async def test_capture_writes_prediction(registry: CollectorRegistry) -> None:
    sink = ListSink()
    batcher = Batcher(FakeModel(), registry=registry, name="m", capture=sink, capture_rate=1.0)
    async with serve(batcher, encode=lambda result: {"score": result}) as client:
        await client.post("/", json={"instances": [1, 2]}, headers={"x-request-id": "r-1"})

    assert len(sink.records) == 2
    assert sink.records[0]["request_id"] == "r-1"
    assert sink.records[0]["model"] == "m"
    assert sink.records[1]["input"] == 2
    assert sink.records[1]["output"] == {"score": 20}


async def test_capture_rate_zero_writes_nothing(registry: CollectorRegistry) -> None:
    sink = ListSink()
    batcher = Batcher(FakeModel(), registry=registry, capture=sink, capture_rate=0.0)
    async with serve(batcher) as client:
        await client.post("/", json={"inputs": 1})

    assert sink.records == []


async def test_capture_failure_keeps_response(
    registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    batcher = Batcher(FakeModel(), registry=registry, capture=ListSink(fail=True), capture_rate=1)
    async with serve(batcher) as client:
        response = await client.post("/", json={"inputs": 1})

    batcher.capture.close(timeout=5)

    assert response.status_code == 200
    assert any(
        record.levelno == logging.ERROR and "disk full" in record.getMessage()
        for record in caplog.records
    )


async def test_not_started_is_503(registry: CollectorRegistry) -> None:
    async with serve(Batcher(FakeModel(), registry=registry), start=False) as client:
        response = await client.post("/", json={"inputs": 1})

    assert response.status_code == 503
    assert error_of(response)["type"] == "unavailable"


def test_items_per_request_over_queue_rejected() -> None:
    batcher = Batcher(FakeModel(), max_queue_size=4)

    with pytest.raises(ValueError, match="max_queue_size=4"):
        batching_endpoint(batcher, max_items_per_request=5)
