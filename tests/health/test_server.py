"""Health probes through instrument() on a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import ServerProcess

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    process = ServerProcess("apps:app", app_dir=HERE).start()
    yield process
    process.stop()


def toggle(server: ServerProcess, **flags: int) -> None:
    params = {name: str(value) for name, value in flags.items()}
    response = httpx.post(f"{server.base_url}/toggle", params=params)
    assert response.status_code == 200


@pytest.mark.parametrize(
    "path", ["/livez", "/readyz", "/startupz", "/v2/health/live", "/v2/health/ready"]
)
def test_probe_routes_ok(server: ServerProcess, path: str) -> None:
    response = httpx.get(f"{server.base_url}{path}")

    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_readyz_lists_checks(server: ServerProcess) -> None:
    body = httpx.get(f"{server.base_url}/readyz").json()

    assert set(body["checks"]) == {"db", "worker:model", "startup_complete"}


def test_livez_reports_event_loop(server: ServerProcess) -> None:
    body = httpx.get(f"{server.base_url}/livez").json()

    assert body["checks"]["event_loop"]["status"] == "ok"


def test_failing_check_fails_readyz(server: ServerProcess) -> None:
    toggle(server, db=0)
    try:
        ready = httpx.get(f"{server.base_url}/readyz")
        open_inference = httpx.get(f"{server.base_url}/v2/health/ready")
        live = httpx.get(f"{server.base_url}/livez")
    finally:
        toggle(server, db=1)
    recovered = httpx.get(f"{server.base_url}/readyz")

    assert ready.status_code == 503
    assert ready.json()["checks"]["db"]["error"] == "check returned False"
    # The Open Inference Protocol reports false with a 4xx status.
    assert open_inference.status_code == 400
    assert live.status_code == 200
    assert recovered.status_code == 200


def test_stuck_worker_fails_livez(server: ServerProcess) -> None:
    toggle(server, worker_stuck=1)
    try:
        live = httpx.get(f"{server.base_url}/livez")
        open_inference = httpx.get(f"{server.base_url}/v2/health/live")
    finally:
        toggle(server, worker_stuck=0)

    assert live.status_code == 503
    assert "stuck_after_s" in live.json()["checks"]["worker:model"]["error"]
    assert open_inference.status_code == 400


def test_state_change_logged(server: ServerProcess) -> None:
    toggle(server, db=0)
    try:
        httpx.get(f"{server.base_url}/readyz")
        httpx.get(f"{server.base_url}/readyz")
    finally:
        toggle(server, db=1)
    httpx.get(f"{server.base_url}/readyz")

    server.wait_for_record(lambda r: "recovered" in r["message"] and "db" in r["message"])
    health = [r for r in server.records() if r["logger"] == "mlmiddleware.health"]
    failed = [r for r in health if r["level"] == "WARNING" and "Health check db" in r["message"]]
    # Tests in this module may fail db more than once, but each failure logs once.
    recovered = [r for r in health if r["level"] == "INFO" and "Health check db" in r["message"]]
    assert len(failed) == len(recovered)


def test_head_probe_no_body(server: ServerProcess) -> None:
    response = httpx.head(f"{server.base_url}/readyz")

    assert response.status_code == 200
    assert response.content == b""


def test_post_probe_is_405(server: ServerProcess) -> None:
    response = httpx.post(f"{server.base_url}/livez")

    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert response.json()["error"]["type"] == "method_not_allowed"
    assert response.json()["error"]["request_id"] == response.headers["x-request-id"]


def test_probes_not_in_access_log(server: ServerProcess) -> None:
    for path in ("/livez", "/readyz", "/startupz", "/v2/health/live", "/v2/health/ready"):
        httpx.get(f"{server.base_url}{path}")
    marker = httpx.get(f"{server.base_url}/predict")

    server.wait_for_record(lambda r: r.get("request_id") == marker.headers["x-request-id"])
    paths = {r["path"] for r in server.records() if r["logger"] == "mlmiddleware.access"}
    assert "/predict" in paths
    assert paths.isdisjoint({"/livez", "/readyz", "/startupz", "/v2/health/live"})
    assert "/v2/health/ready" not in paths


def test_drain_fails_readiness_only(server_factory: type[ServerProcess]) -> None:
    process = server_factory("apps:app", app_dir=HERE).start()
    base = process.base_url

    before = httpx.get(f"{base}/readyz")
    httpx.post(f"{base}/drain")
    ready = httpx.get(f"{base}/readyz")
    open_inference = httpx.get(f"{base}/v2/health/ready")
    live = httpx.get(f"{base}/livez")
    other = httpx.get(f"{base}/predict")

    assert before.status_code == 200
    assert ready.status_code == 503
    assert ready.json() == {"status": "draining", "checks": {}}
    assert open_inference.status_code == 400
    assert live.status_code == 200
    assert other.status_code == 200
    assert other.text == "prediction"


async def raw_get_status(port: int, path: str) -> int:
    """Send one GET on its own connection and return the status code."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    return int(response.split(b" ", 2)[1])


def test_probe_storm_runs_check_once(server_factory: type[ServerProcess]) -> None:
    process = server_factory("apps:storm_app", app_dir=HERE).start()

    async def storm() -> list[int]:
        # One connection per probe: httpx's pool queues requests beyond its connection limit.
        probes = (raw_get_status(process.port, "/readyz") for _ in range(1000))
        return await asyncio.wait_for(asyncio.gather(*probes), timeout=60)

    statuses = asyncio.run(storm())
    calls = httpx.get(f"{process.base_url}/calls").json()

    assert statuses == [200] * 1000
    # cache_seconds=60 covers the whole storm, so one run serves every probe.
    assert calls["slow"] == 1


def test_blocked_loop_fails_livez(server_factory: type[ServerProcess]) -> None:
    process = server_factory("apps:lag_app", app_dir=HERE).start()
    base = process.base_url
    before = httpx.get(f"{base}/livez")
    results: dict[str, httpx.Response] = {}

    def get(name: str, path: str) -> None:
        results[name] = httpx.get(f"{base}{path}", timeout=30)

    blocker = threading.Thread(target=get, args=("block", "/block?seconds=2.0"))
    blocker.start()
    process.wait_for_record(lambda r: r["message"].startswith("Blocking the event loop"))
    # Sent while the loop is blocked, so the server handles it right after unblocking.
    during = threading.Thread(target=get, args=("during", "/livez"))
    during.start()
    blocker.join()
    during.join()
    after = httpx.get(f"{base}/livez")
    ready = httpx.get(f"{base}/readyz")

    assert before.status_code == 200
    assert results["block"].status_code == 200
    assert results["during"].status_code == 503
    assert "blocked for" in results["during"].json()["checks"]["event_loop"]["error"]
    assert after.status_code == 503
    assert "event loop was blocked for" in after.json()["checks"]["event_loop"]["error"]
    # Loop lag is a liveness matter: readiness keeps passing.
    assert ready.status_code == 200
