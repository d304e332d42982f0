"""wire_feedback() and instrument(feedback=...): route, lifespan hooks and readiness."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from mlmiddleware._stack import StackBuilder
from mlmiddleware._types import Receive, Scope, Send
from mlmiddleware.feedback import FeedbackApp, FeedbackCapture, SinkError
from mlmiddleware.feedback._wiring import wire_feedback
from tests.feedback._fakes import FailingSink, GateSink, wait_until
from tests.support import ServerProcess


async def _inner_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("the wrapped app is not called in these tests")


class _Health:
    def __init__(self) -> None:
        self.checks: list[tuple[str, Any, str]] = []

    def add(self, name: str, check: Any, *, kind: str = "readiness") -> None:
        self.checks.append((name, check, kind))


def _builder(health: Any = None) -> StackBuilder:
    return StackBuilder(
        app=_inner_app,
        service="svc",
        model_version="v3",
        registry=CollectorRegistry(),
        health=health,
    )


async def _run_hooks(builder: StackBuilder) -> None:
    for hook in builder.startup_hooks:
        await hook()
    for hook in builder.shutdown_hooks:
        await hook()


def test_wiring_mounts_route() -> None:
    builder = _builder()
    wire_feedback(builder, GateSink(), path="/fb")
    app = builder.routes["/fb"]
    assert isinstance(app, FeedbackApp)
    assert app.service == "svc"
    assert app.model_version == "v3"
    assert "/fb" not in builder.quiet_paths


def test_wiring_hooks_start_and_close() -> None:
    sink = GateSink()
    builder = _builder()
    wire_feedback(builder, sink, path="/feedback")
    assert len(builder.startup_hooks) == 1
    assert len(builder.shutdown_hooks) == 1
    asyncio.run(_run_hooks(builder))
    assert sink.closed


def test_wiring_readiness_check() -> None:
    sink = FailingSink()
    health = _Health()
    builder = _builder(health)
    wire_feedback(builder, FeedbackCapture(sink, retry_interval=0.01), path="/feedback")
    name, check, kind = health.checks[0]
    assert name == "feedback_sink"
    assert kind == "readiness"
    assert check() is True

    app = builder.routes["/feedback"]
    assert isinstance(app, FeedbackApp)
    app.capture.write({"id": "1", "kind": "prediction", "request_id": "r1"})
    wait_until(lambda: not app.capture.healthy)
    with pytest.raises(SinkError, match="No space left on device"):
        check()
    app.capture.close()


def _instrumented_server(directory: Path) -> ServerProcess:
    env = {"FEEDBACK_DIR": str(directory)}
    return ServerProcess("tests.feedback._instrumented_app:app", env=env)


@pytest.mark.slow
def test_instrument_feedback_roundtrip(tmp_path: Path) -> None:
    server = _instrumented_server(tmp_path).start()
    try:
        with httpx.Client(base_url=server.base_url) as client:
            response = client.post(
                "/feedback",
                json={"request_id": "pred-1", "label": "dog"},
                headers={"X-Request-ID": "post-42"},
            )
            ready = client.get("/readyz")
    finally:
        returncode = server.stop()

    records = [
        orjson.loads(line)
        for path in tmp_path.glob("*.jsonl")
        for line in path.read_bytes().splitlines()
    ]
    assert response.status_code == 202
    assert ready.status_code == 200
    assert ready.json()["checks"]["feedback_sink"]["status"] == "ok"
    assert returncode in (0, -signal.SIGTERM)
    assert len(records) == 1
    assert records[0]["id"] == response.json()["id"]
    assert records[0]["feedback_request_id"] == "post-42"
    assert records[0]["service"] == "feedback-svc"
    assert records[0]["model_version"] == "v7"


@pytest.mark.slow
def test_instrument_unwritable_fails_readyz(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    directory = blocker / "feedback"
    server = _instrumented_server(directory).start()
    try:
        with httpx.Client(base_url=server.base_url) as client:
            ready = client.get("/readyz")
            response = client.post("/feedback", json={"request_id": "pred-1"})
        error = server.wait_for_record(lambda record: record.get("level") == "ERROR")
    finally:
        server.stop()

    assert ready.status_code == 503
    assert ready.json()["checks"]["feedback_sink"]["status"] != "ok"
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "sink_unavailable"
    assert error["logger"] == "mlmiddleware.feedback"
    assert str(directory) in error["message"]
    assert "Not a directory" in error["message"]
