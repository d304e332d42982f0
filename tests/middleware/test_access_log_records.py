"""AccessLogMiddleware hands ordinary LogRecords to any handler other than the JSON one."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from mlmiddleware.middleware.access_log import AccessLogMiddleware
from tests.asgi import call, http_scope


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def hello(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 201, "headers": []})
    await send({"type": "http.response.body", "body": b"abc"})


@pytest.mark.anyio
async def test_access_record_reaches_user_handler(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mlmiddleware.access")

    await call(AccessLogMiddleware(hello), http_scope("/things", method="POST"))

    records = [r for r in caplog.records if r.name == "mlmiddleware.access"]
    assert len(records) == 1
    assert records[0].getMessage() == "http.request"
    assert records[0].status == 201  # type: ignore[attr-defined]
    assert records[0].method == "POST"  # type: ignore[attr-defined]
    assert records[0].response_bytes == 3  # type: ignore[attr-defined]
