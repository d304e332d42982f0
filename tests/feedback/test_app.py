"""FeedbackApp: acknowledgement after the sink flush, each bad input, batches and 503s."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from mlmiddleware._context import RequestContext, current_request_context
from mlmiddleware._types import ASGIApp, Message, Receive, Scope, Send
from mlmiddleware.feedback import FeedbackApp, FeedbackCapture, JsonlFeedbackSink
from tests.feedback._fakes import FailingSink, GateSink, wait_until


def _with_request_id(app: ASGIApp, request_id: str) -> ASGIApp:
    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        token = current_request_context.set(RequestContext(request_id=request_id))
        try:
            await app(scope, receive, send)
        finally:
            current_request_context.reset(token)

    return wrapped


def _client(app: ASGIApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def _capture(sink: Any, **options: Any) -> FeedbackCapture:
    return FeedbackCapture(sink, registry=CollectorRegistry(), **options)


async def _post(app: ASGIApp, body: Any, **kwargs: Any) -> httpx.Response:
    async with _client(app) as client:
        if isinstance(body, bytes):
            return await client.post("/feedback", content=body, **kwargs)
        return await client.post("/feedback", json=body, **kwargs)


def test_app_answers_after_flush() -> None:
    sink = GateSink(open_gate=False)
    capture = _capture(sink)
    app = FeedbackApp(capture, service="svc", model_version="v2")

    async def scenario() -> httpx.Response:
        task = asyncio.create_task(_post(app, {"request_id": "pred-1", "label": "cat"}))
        await asyncio.to_thread(sink.entered.wait, 20.0)
        await asyncio.sleep(0.05)
        assert not task.done()
        sink.gate.set()
        return await task

    response = asyncio.run(scenario())
    capture.close()
    assert response.status_code == 202
    assert response.json() == {"id": sink.records[0]["id"]}
    assert sink.records[0]["request_id"] == "pred-1"
    assert sink.records[0]["service"] == "svc"
    assert sink.records[0]["model_version"] == "v2"
    assert sink.records[0]["label"] == "cat"


def test_app_records_own_request_id() -> None:
    sink = GateSink()
    capture = _capture(sink)
    app = _with_request_id(FeedbackApp(capture), "post-7")
    response = asyncio.run(_post(app, {"request_id": "pred-1"}))
    capture.close()
    assert response.status_code == 202
    assert sink.records[0]["feedback_request_id"] == "post-7"
    assert sink.records[0]["request_id"] == "pred-1"


def test_app_batch_form() -> None:
    sink = GateSink()
    capture = _capture(sink)
    app = FeedbackApp(capture, max_items=3)
    items = [{"request_id": f"p{index}", "score": index} for index in range(3)]
    response = asyncio.run(_post(app, {"items": items}))
    capture.close()
    assert response.status_code == 202
    assert response.json() == {"ids": [record["id"] for record in sink.records]}
    assert [record["request_id"] for record in sink.records] == ["p0", "p1", "p2"]


def test_app_writes_jsonl(tmp_path: Path) -> None:
    capture = _capture(JsonlFeedbackSink(tmp_path, fsync=True))
    app = FeedbackApp(capture)
    body = {
        "request_id": "p1",
        "label": ["a", "b"],
        "score": 1.5,
        "comment": "ok",
        "data": {"k": 1},
    }
    response = asyncio.run(_post(app, body))
    capture.close()
    lines = [
        orjson.loads(line)
        for path in tmp_path.glob("*.jsonl")
        for line in path.read_bytes().splitlines()
    ]
    assert response.status_code == 202
    assert len(lines) == 1
    assert lines[0]["id"] == response.json()["id"]
    assert lines[0]["kind"] == "feedback"
    assert lines[0]["label"] == ["a", "b"]
    assert lines[0]["data"] == {"k": 1}


_JSON = {"content-type": "application/json"}

BAD_INPUTS: list[tuple[str, bytes, dict[str, str], int, str, str]] = [
    ("truncated", b'{"request_id": ', _JSON, 400, "invalid_json", "invalid JSON"),
    ("not_utf8", b'{"request_id": "\xff"}', _JSON, 400, "invalid_json", "invalid JSON"),
    ("nan", b'{"request_id": "a", "score": NaN}', _JSON, 400, "invalid_json", "invalid JSON"),
    (
        "too_large",
        b'{"request_id": "a", "comment": "' + b"x" * 70_000 + b'"}',
        _JSON,
        413,
        "payload_too_large",
        "65536 bytes",
    ),
    (
        "text_plain",
        b'{"request_id": "a"}',
        {"content-type": "text/plain"},
        415,
        "unsupported_media_type",
        "application/json",
    ),
    (
        "form",
        b"request_id=a",
        {"content-type": "application/x-www-form-urlencoded"},
        415,
        "unsupported_media_type",
        "application/json",
    ),
    ("missing_id", b'{"label": "cat"}', _JSON, 422, "validation_error", "missing 'request_id'"),
    ("null_id", b'{"request_id": null}', _JSON, 422, "validation_error", "missing 'request_id'"),
    (
        "number_id",
        b'{"request_id": 12}',
        _JSON,
        422,
        "validation_error",
        "'request_id': expected a non-empty string",
    ),
    ("empty_id", b'{"request_id": ""}', _JSON, 422, "validation_error", "'request_id'"),
    (
        "long_id",
        b'{"request_id": "' + b"a" * 300 + b'"}',
        _JSON,
        422,
        "validation_error",
        "at most 256",
    ),
    ("control_id", b'{"request_id": "a\\nb"}', _JSON, 422, "validation_error", "printable"),
    (
        "label_object",
        b'{"request_id": "a", "label": {"x": 1}}',
        _JSON,
        422,
        "validation_error",
        "'label'",
    ),
    (
        "score_string",
        b'{"request_id": "a", "score": "high"}',
        _JSON,
        422,
        "validation_error",
        "'score': expected a number",
    ),
    (
        "score_bool",
        b'{"request_id": "a", "score": true}',
        _JSON,
        422,
        "validation_error",
        "'score'",
    ),
    (
        "comment_number",
        b'{"request_id": "a", "comment": 3}',
        _JSON,
        422,
        "validation_error",
        "'comment'",
    ),
    (
        "data_array",
        b'{"request_id": "a", "data": [1]}',
        _JSON,
        422,
        "validation_error",
        "'data': expected an object",
    ),
    ("model_number", b'{"request_id": "a", "model": 1}', _JSON, 422, "validation_error", "'model'"),
    (
        "unknown_field",
        b'{"request_id": "a", "rating": 5}',
        _JSON,
        422,
        "validation_error",
        "unknown field 'rating'",
    ),
    (
        "array_body",
        b'[{"request_id": "a"}]',
        _JSON,
        422,
        "validation_error",
        "expected a JSON object",
    ),
    ("items_empty", b'{"items": []}', _JSON, 422, "validation_error", "non-empty array"),
    (
        "items_not_array",
        b'{"items": {"request_id": "a"}}',
        _JSON,
        422,
        "validation_error",
        "'items'",
    ),
    (
        "items_too_many",
        b'{"items": [' + b",".join([b'{"request_id": "a"}'] * 101) + b"]}",
        _JSON,
        422,
        "validation_error",
        "maximum is 100",
    ),
    (
        "items_bad_element",
        b'{"items": [{"request_id": "a"}, {"label": 1}]}',
        _JSON,
        422,
        "validation_error",
        "'items[1].request_id'",
    ),
    ("items_scalar", b'{"items": [1]}', _JSON, 422, "validation_error", "items[0]"),
    (
        "items_extra",
        b'{"items": [{"request_id": "a"}], "label": 1}',
        _JSON,
        422,
        "validation_error",
        "'label'",
    ),
]


@pytest.mark.parametrize(
    ("body", "headers", "status", "error_type", "fragment"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_app_bad_input(
    tmp_path: Path,
    body: bytes,
    headers: dict[str, str],
    status: int,
    error_type: str,
    fragment: str,
) -> None:
    capture = _capture(JsonlFeedbackSink(tmp_path))
    app = _with_request_id(FeedbackApp(capture), "post-1")
    response = asyncio.run(_post(app, body, headers=headers))
    capture.close()
    error = response.json()["error"]
    assert response.status_code == status
    assert error["type"] == error_type
    assert fragment in error["message"]
    assert error["request_id"] == "post-1"
    assert list(tmp_path.iterdir()) == []


def test_app_missing_content_type(tmp_path: Path) -> None:
    capture = _capture(JsonlFeedbackSink(tmp_path))
    app = FeedbackApp(capture)

    async def scenario() -> httpx.Response:
        async with _client(app) as client:
            # httpx sets no content type for raw bytes.
            return await client.post("/feedback", content=b'{"request_id": "a"}')

    response = asyncio.run(scenario())
    capture.close()
    assert response.status_code == 415
    assert "'none'" in response.json()["error"]["message"]
    assert list(tmp_path.iterdir()) == []


def test_app_streamed_body_too_large(tmp_path: Path) -> None:
    # No content-length: the limit applies while the chunks arrive.
    capture = _capture(JsonlFeedbackSink(tmp_path))
    app = FeedbackApp(capture, max_body_bytes=100)
    chunks = [b'{"request_id": "a", "comment": "', b"x" * 80, b"x" * 80, b'"}']
    sent: list[Message] = []

    async def receive() -> Message:
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/feedback",
        "headers": [(b"content-type", b"application/json")],
    }
    asyncio.run(app(scope, receive, send))
    capture.close()
    assert sent[0]["status"] == 413
    assert len(chunks) == 2
    assert list(tmp_path.iterdir()) == []


def test_app_method_not_allowed() -> None:
    capture = _capture(GateSink())
    app = FeedbackApp(capture)

    async def scenario() -> httpx.Response:
        async with _client(app) as client:
            return await client.get("/feedback")

    response = asyncio.run(scenario())
    capture.close()
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["error"]["type"] == "method_not_allowed"


def test_app_sink_failure_503() -> None:
    sink = FailingSink()
    capture = _capture(sink, retry_interval=0.01)
    app = FeedbackApp(capture)
    first = asyncio.run(_post(app, {"request_id": "a"}))
    wait_until(lambda: not capture.healthy)
    second = asyncio.run(_post(app, {"request_id": "b"}))
    capture.close()
    for response in (first, second):
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"]["type"] == "sink_unavailable"
        assert sink.path not in response.text


def test_app_queue_full_503() -> None:
    sink = GateSink(open_gate=False)
    capture = _capture(sink, max_queue=1)
    capture.write({"id": "0", "kind": "prediction", "request_id": "p0"})
    assert sink.entered.wait(20.0)
    app = FeedbackApp(capture, max_items=1)
    response = asyncio.run(_post(app, {"request_id": "a"}))
    sink.gate.set()
    capture.close()
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "queue_full"
    assert response.headers["retry-after"] == "1"


def test_app_closed_503() -> None:
    capture = _capture(GateSink())
    app = FeedbackApp(capture)
    capture.close()
    response = asyncio.run(_post(app, {"request_id": "a"}))
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "shutting_down"


def test_app_own_lifespan() -> None:
    sink = GateSink()
    capture = _capture(sink)
    app = FeedbackApp(capture)
    incoming: list[Message] = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app({"type": "lifespan"}, receive, send))
    assert [message["type"] for message in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    assert sink.closed


@pytest.mark.parametrize(
    ("option", "value"), [("max_body_bytes", 0), ("max_items", 0), ("max_items", 20_000)]
)
def test_app_invalid_option(option: str, value: int) -> None:
    with pytest.raises(ValueError, match=option):
        FeedbackApp(_capture(GateSink()), **{option: value})  # type: ignore[arg-type]
