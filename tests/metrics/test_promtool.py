"""promtool check metrics: a scrape of an instrumented app passes Prometheus' own linter."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from mlmiddleware import instrument

PROMTOOL = shutil.which("promtool")


async def predict(request: Request) -> Response:
    if request.query_params.get("fail"):
        raise RuntimeError("model failed")
    return PlainTextResponse("0.93")


@pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package 'prometheus')"
)
def test_promtool_check_metrics() -> None:
    assert PROMTOOL is not None
    app = instrument(
        Starlette(routes=[Route("/predict/{model}", predict, methods=["GET", "POST"])]),
        registry=CollectorRegistry(),
        service="ranker",
        model_version="v1",
        json_logs=False,
        access_log=False,
    )

    async def traffic() -> str:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            await client.get("/predict/bert")
            await client.post("/predict/bert", content=b"x" * 2000)
            await client.get("/predict/bert?fail=1")
            await client.get("/nowhere")
            return (await client.get("/metrics")).text

    text = asyncio.run(traffic())
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""
    assert 'status="500"' in text
