"""metrics_app: content negotiation, gzip, HEAD, method errors and name filters."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Iterable
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Counter
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

from mlmiddleware._types import Message, Scope
from mlmiddleware.metrics import metrics_app
from mlmiddleware.metrics.app import MetricsApp


def get(
    app: MetricsApp,
    method: str = "GET",
    *,
    headers: Iterable[tuple[bytes, bytes]] = (),
    query: bytes = b"",
) -> tuple[int, dict[bytes, bytes], bytes]:
    scope: Scope = {
        "type": "http",
        "method": method,
        "path": "/metrics",
        "root_path": "",
        "query_string": query,
        "headers": list(headers),
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    counter = Counter("jobs", "Jobs done.", ["kind"], registry=registry)
    counter.labels("train").inc(3)
    Counter("other", "Another counter.", registry=registry).inc()
    return registry


def test_text_format_default(registry: CollectorRegistry) -> None:
    status, headers, body = get(metrics_app(registry))

    assert status == 200
    assert headers[b"content-type"] == b"text/plain; version=0.0.4; charset=utf-8"
    assert int(headers[b"content-length"]) == len(body)
    families = {family.name: family for family in text_string_to_metric_families(body.decode())}
    assert families["jobs"].samples[0].value == 3
    assert families["jobs"].samples[0].labels == {"kind": "train"}


def test_openmetrics_when_accepted(registry: CollectorRegistry) -> None:
    accept = (b"accept", b"application/openmetrics-text; version=1.0.0,text/plain;q=0.5")
    status, headers, body = get(metrics_app(registry), headers=[accept])

    assert status == 200
    assert headers[b"content-type"].startswith(b"application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    families = {family.name: family for family in parse_openmetrics(body.decode())}
    assert families["jobs"].samples[0].value == 3


def test_gzip_when_accepted(registry: CollectorRegistry) -> None:
    status, headers, body = get(metrics_app(registry), headers=[(b"accept-encoding", b"br, gzip")])

    assert status == 200
    assert headers[b"content-encoding"] == b"gzip"
    assert int(headers[b"content-length"]) == len(body)
    text = gzip.decompress(body).decode()
    names = {family.name for family in text_string_to_metric_families(text)}
    assert "jobs" in names


def test_gzip_not_accepted(registry: CollectorRegistry) -> None:
    _, headers, body = get(metrics_app(registry), headers=[(b"accept-encoding", b"identity")])

    assert b"content-encoding" not in headers
    assert body.startswith(b"# HELP")


def test_gzip_disabled(registry: CollectorRegistry) -> None:
    app = metrics_app(registry, disable_compression=True)
    _, headers, _ = get(app, headers=[(b"accept-encoding", b"gzip")])

    assert b"content-encoding" not in headers


def test_head_no_body(registry: CollectorRegistry) -> None:
    _, get_headers, get_body = get(metrics_app(registry))
    status, headers, body = get(metrics_app(registry), "HEAD")

    assert status == 200
    assert body == b""
    assert headers[b"content-length"] == get_headers[b"content-length"]
    assert len(get_body) > 0


def test_post_rejected_405(registry: CollectorRegistry) -> None:
    status, headers, body = get(metrics_app(registry), "POST")

    assert status == 405
    assert headers[b"allow"] == b"GET, HEAD"
    error = json.loads(body)["error"]
    assert error["type"] == "method_not_allowed"
    assert "use GET" in error["message"]


def test_name_filter(registry: CollectorRegistry) -> None:
    _, _, body = get(metrics_app(registry), query=b"name[]=other_total")

    names = {family.name for family in text_string_to_metric_families(body.decode())}
    assert names == {"other"}


def test_default_registry() -> None:
    assert metrics_app().registry is REGISTRY


def test_multiprocess_dir_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "absent"))

    with pytest.raises(ValueError, match="create it empty"):
        metrics_app()


def test_websocket_scope_rejected(registry: CollectorRegistry) -> None:
    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        return None

    with pytest.raises(ValueError, match="HTTP only"):
        asyncio.run(metrics_app(registry)({"type": "websocket"}, receive, send))
