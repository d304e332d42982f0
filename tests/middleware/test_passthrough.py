"""Every middleware passes websocket and lifespan scopes through untouched."""

from __future__ import annotations

from typing import Any

import pytest

from mlmiddleware.middleware.access_log import AccessLogMiddleware
from mlmiddleware.middleware.body_limit import BodySizeLimitMiddleware
from mlmiddleware.middleware.context import RequestContextMiddleware

FACTORIES = {
    "context": lambda app: RequestContextMiddleware(app),
    "access_log": lambda app: AccessLogMiddleware(app),
    "body_limit": lambda app: BodySizeLimitMiddleware(app, max_body_bytes=10),
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
@pytest.mark.parametrize("name", sorted(FACTORIES))
@pytest.mark.parametrize("scope_type", ["websocket", "lifespan"])
async def test_middleware_passes_scope_untouched(name: str, scope_type: str) -> None:
    seen: list[tuple[Any, Any, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, receive, send))

    async def receive() -> dict[str, Any]:
        return {"type": f"{scope_type}.connect"}

    async def send(message: Any) -> None:
        pass

    scope = {"type": scope_type, "path": "/ws", "headers": [(b"content-length", b"100")]}
    snapshot = dict(scope)

    await FACTORIES[name](app)(scope, receive, send)

    assert seen[0][0] is scope
    assert seen[0][1] is receive
    assert seen[0][2] is send
    assert scope == snapshot
