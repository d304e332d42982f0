"""AccessLogMiddleware against a real uvicorn server, every stderr line parsed as JSON."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import ServerProcess

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    process = ServerProcess("apps:app", app_dir=HERE).start()
    yield process
    process.stop()


def access_records(server: ServerProcess) -> list[dict[str, Any]]:
    return [r for r in server.records() if r["logger"] == "mlmiddleware.access"]


def access_record_for(server: ServerProcess, request_id: str) -> dict[str, Any]:
    return server.wait_for_record(
        lambda r: r["logger"] == "mlmiddleware.access" and r.get("request_id") == request_id
    )


def test_access_record_fields(server: ServerProcess) -> None:
    response = httpx.get(f"{server.base_url}/items/42?q=secret", headers={"User-Agent": "t/1"})
    record = access_record_for(server, response.headers["x-request-id"])

    assert record["message"] == "http.request"
    assert record["level"] == "INFO"
    assert record["method"] == "GET"
    assert record["path"] == "/items/42"
    assert record["route"] == "/items/{item_id}"
    assert record["status"] == 200
    assert isinstance(record["duration_ms"], float)
    assert record["request_bytes"] == 0
    assert record["response_bytes"] == len(response.content)
    assert record["client"].startswith("127.0.0.1:")
    assert record["user_agent"] == "t/1"
    assert record["service"] == "foundation-test"


def test_access_route_through_mount(server: ServerProcess) -> None:
    response = httpx.get(f"{server.base_url}/api/v1/list/7")
    record = access_record_for(server, response.headers["x-request-id"])

    assert response.status_code == 200
    assert record["route"] == "/api/v1/list/{id}"


def test_access_unmatched_route(server: ServerProcess) -> None:
    response = httpx.get(f"{server.base_url}/no/such/path")
    record = access_record_for(server, response.headers["x-request-id"])

    assert record["status"] == 404
    assert record["route"] == "<unmatched>"


def test_access_head_counts_no_body(server: ServerProcess) -> None:
    response = httpx.head(f"{server.base_url}/hello")
    record = access_record_for(server, response.headers["x-request-id"])

    assert record["method"] == "HEAD"
    assert record["response_bytes"] == 0


def test_access_chunked_request_bytes(server: ServerProcess) -> None:
    def body() -> Iterator[bytes]:
        for _ in range(4):
            yield b"y" * 2500

    response = httpx.post(f"{server.base_url}/echo", content=body())
    record = access_record_for(server, response.headers["x-request-id"])

    assert "content-length" not in response.request.headers
    assert record["request_bytes"] == 10_000
    assert record["response_bytes"] == 10_000


def test_access_streaming_response_bytes(server: ServerProcess) -> None:
    response = httpx.get(f"{server.base_url}/stream?n=7")
    record = access_record_for(server, response.headers["x-request-id"])

    assert len(response.content) == 7000
    assert record["response_bytes"] == 7000


def test_access_server_error_at_error_level(server: ServerProcess) -> None:
    response = httpx.get(f"{server.base_url}/boom")
    record = access_record_for(server, response.headers["x-request-id"])

    assert response.status_code == 500
    assert record["level"] == "ERROR"
    assert record["status"] == 500
    assert record["exc_type"] == "RuntimeError"
    assert "handler failed on purpose" in record["stack"]


def test_access_logged_before_background_task(server: ServerProcess) -> None:
    response = httpx.get(f"{server.base_url}/background")
    request_id = response.headers["x-request-id"]
    server.wait_for_record(
        lambda r: r["message"] == "background task ran" and r.get("request_id") == request_id
    )

    ours = [r for r in server.records() if r.get("request_id") == request_id]
    messages = [r["message"] for r in ours]
    assert messages.index("http.request") < messages.index("background task ran")


def test_access_client_disconnect_is_499(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        request = (
            b"GET /stream?n=50&delay=0.05 HTTP/1.1\r\nHost: x\r\nX-Request-ID: gone-early\r\n\r\n"
        )
        sock.sendall(request)
        sock.recv(100)
    record = access_record_for(server, "gone-early")

    assert record["status"] == 499
    assert record["level"] == "INFO"
    assert "stack" not in record


def test_access_excludes_probe_paths() -> None:
    from mlmiddleware.middleware.access_log import DEFAULT_QUIET_PATHS

    assert {"/livez", "/readyz", "/startupz", "/metrics"} <= DEFAULT_QUIET_PATHS
    assert {"/v2/health/live", "/v2/health/ready"} <= DEFAULT_QUIET_PATHS


def test_access_one_record_per_request(server: ServerProcess) -> None:
    ids = [httpx.get(f"{server.base_url}/hello").headers["x-request-id"] for _ in range(5)]
    for request_id in ids:
        access_record_for(server, request_id)
    time.sleep(0.2)

    for request_id in ids:
        matching = [r for r in access_records(server) if r.get("request_id") == request_id]
        assert len(matching) == 1


def test_uvicorn_logs_are_json(server: ServerProcess) -> None:
    records = server.records()
    loggers = {r["logger"] for r in records}

    assert "uvicorn.error" in loggers
    assert "uvicorn.access" not in loggers
    assert any(r["message"].startswith("Started server process") for r in records)


def test_handler_log_carries_request_id(server: ServerProcess) -> None:
    response = httpx.get(f"{server.base_url}/hello")
    request_id = response.headers["x-request-id"]

    record = server.wait_for_record(
        lambda r: r["message"] == "hello handler" and r.get("request_id") == request_id
    )
    assert record["logger"] == "tests.app"


def test_records_carry_model_version(server: ServerProcess) -> None:
    response = httpx.get(f"{server.base_url}/hello")
    record = access_record_for(server, response.headers["x-request-id"])

    assert record["model_version"] == "test-v1"
