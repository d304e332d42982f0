"""The JSON error body shared by every error response the toolkit produces.

Shape: ``{"error": {"type": ..., "message": ..., "request_id": ...}}``. ``type`` is a
stable snake_case code that clients can switch on. ``message`` states what was wrong and
how to fix it. ``request_id`` is the id of the request, ``null`` outside a request.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import orjson

from mlmiddleware._context import get_request_id
from mlmiddleware._types import Scope, Send

__all__ = ["error_body", "error_headers", "send_error", "send_method_not_allowed"]


def error_body(error_type: str, message: str, *, request_id: str | None = None) -> bytes:
    """Encode the toolkit's JSON error body; the request id defaults to the current one."""
    if request_id is None:
        request_id = get_request_id()
    error = {"type": error_type, "message": message, "request_id": request_id}
    return orjson.dumps({"error": error})


def error_headers(
    body: bytes, extra: Iterable[tuple[bytes, bytes]] = ()
) -> list[tuple[bytes, bytes]]:
    """Build the raw ASGI headers of an error response carrying ``body``."""
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("latin-1")),
    ]
    headers.extend(extra)
    return headers


async def send_error(
    send: Send,
    status: int,
    error_type: str,
    message: str,
    *,
    headers: Iterable[tuple[bytes, bytes]] = (),
    request_id: str | None = None,
) -> None:
    """Send a complete error response with the JSON error body through ``send``."""
    body = error_body(error_type, message, request_id=request_id)
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": error_headers(body, headers),
    }

    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_method_not_allowed(
    send: Send, scope: Scope, allowed: Sequence[str], *, hint: str = ""
) -> None:
    """Send a 405 naming the request's method and the ``allowed`` ones, with ``Allow``."""
    use = " or ".join(allowed)
    message = f"method {scope['method']} is not allowed on {scope['path']}: use {use}{hint}"
    allow = ", ".join(allowed).encode("latin-1")
    await send_error(send, 405, "method_not_allowed", message, headers=[(b"allow", allow)])
