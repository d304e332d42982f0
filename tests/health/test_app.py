"""ProbeEndpoint through httpx's ASGI transport: status codes, body shape, HEAD and 405."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson

from mlmiddleware import _lifecycle
from mlmiddleware._lifecycle import AppLifecycle
from mlmiddleware.health import HealthChecks, ProbeEndpoint


def request(app: ProbeEndpoint, method: str = "GET", path: str = "/probe") -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.request(method, path)

    return asyncio.run(send())


def started() -> AppLifecycle:
    lifecycle = AppLifecycle()
    lifecycle.startup_complete = True
    return lifecycle


def test_probe_ok_is_200() -> None:
    checks = HealthChecks()
    checks.add("db", lambda: True)

    response = request(ProbeEndpoint(checks, kind="readiness", lifecycle=started()))

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.json()["status"] == "ok"


def test_probe_body_shape() -> None:
    checks = HealthChecks()
    checks.add("db", lambda: True)

    body: dict[str, Any] = request(ProbeEndpoint(checks, kind="readiness")).json()

    assert set(body) == {"status", "checks"}
    assert set(body["checks"]["db"]) == {"status", "duration_ms", "error"}
    assert body["checks"]["db"]["status"] == "ok"
    assert body["checks"]["db"]["error"] is None
    assert isinstance(body["checks"]["db"]["duration_ms"], float)


def test_probe_raising_check_is_503() -> None:
    def broken() -> bool:
        raise RuntimeError("redis is down")

    checks = HealthChecks()
    checks.add("redis", broken)

    response = request(ProbeEndpoint(checks, kind="readiness"))

    assert response.status_code == 503
    assert response.json()["status"] == "fail"
    assert response.json()["checks"]["redis"]["error"] == "RuntimeError: redis is down"


def test_probe_hanging_check_is_503() -> None:
    async def hang() -> bool:
        await asyncio.Event().wait()
        return True

    checks = HealthChecks()
    checks.add("gpu", hang, timeout=0.1, kind="liveness")

    response = request(ProbeEndpoint(checks, kind="liveness"))

    assert response.status_code == 503
    assert response.json()["checks"]["gpu"]["error"] == "timed out after 0.1 s"


def test_readiness_before_startup_is_503() -> None:
    response = request(ProbeEndpoint(HealthChecks(), kind="readiness", lifecycle=AppLifecycle()))

    assert response.status_code == 503
    assert response.json()["checks"]["startup_complete"]["status"] == "fail"


def test_startup_probe_follows_checks() -> None:
    loaded = False
    checks = HealthChecks(cache_seconds=0)
    checks.add("model_loaded", lambda: loaded, kind="startup")
    app = ProbeEndpoint(checks, kind="startup", lifecycle=started())

    before = request(app)
    loaded = True
    after = request(app)

    assert before.status_code == 503
    assert after.status_code == 200


def test_readiness_draining_is_503() -> None:
    app = ProbeEndpoint(HealthChecks(), kind="readiness", lifecycle=started())

    _lifecycle.begin_shutdown()
    response = request(app)

    assert response.status_code == 503
    assert response.json() == {"status": "draining", "checks": {}}


def test_head_has_no_body() -> None:
    app = ProbeEndpoint(HealthChecks(), kind="liveness")

    get = request(app, "GET")
    head = request(app, "HEAD")

    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(get.content))


def test_head_failing_is_503() -> None:
    checks = HealthChecks()
    checks.add("db", lambda: False)

    head = request(ProbeEndpoint(checks, kind="readiness"), "HEAD")

    assert head.status_code == 503
    assert head.content == b""


def test_unknown_method_is_405() -> None:
    app = ProbeEndpoint(HealthChecks(), kind="liveness")

    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        response = request(app, method, "/livez")
        error = orjson.loads(response.content)["error"]

        assert response.status_code == 405, method
        assert response.headers["allow"] == "GET, HEAD"
        assert error["type"] == "method_not_allowed"
        assert f"method {method} is not allowed" in error["message"]
        assert "/livez" in error["message"]


def test_custom_fail_status() -> None:
    checks = HealthChecks()
    checks.add("db", lambda: False)

    response = request(ProbeEndpoint(checks, kind="readiness", fail_status=400))

    assert response.status_code == 400
