"""BodySizeLimitMiddleware: reject request bodies over a byte limit with a JSON 413."""

from __future__ import annotations

import logging

from mlmiddleware._errors import send_error
from mlmiddleware._types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodySizeLimitMiddleware", "BodyTooLarge"]

logger = logging.getLogger("mlmiddleware.body_limit")


class BodyTooLarge(Exception):
    """Raised from ``receive`` when a streamed request body grows past the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds the limit of {limit} bytes")
        self.limit = limit


class BodySizeLimitMiddleware:
    """Reject with 413 a request whose body is larger than ``max_body_bytes``.

    A ``Content-Length`` over the limit is rejected before the app runs. A chunked body is
    counted as it streams, and the chunk that crosses the limit is never handed to the app:
    its ``receive`` raises ``BodyTooLarge`` instead. Whatever response the app then tries to
    send is replaced by the 413. If the app had already started its response, the
    exception propagates instead.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        if max_body_bytes < 0:
            raise ValueError(f"invalid max_body_bytes={max_body_bytes}: use a byte count >= 0")
        self.app = app
        self.max_body_bytes = max_body_bytes
        self._message = (
            f"The request body is larger than the limit of {max_body_bytes} bytes. "
            "Send a smaller body or raise max_body_bytes."
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self._reject(send)
            return

        received = 0
        exceeded = False
        app_started_response = False

        async def receive_wrapper() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    exceeded = True
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        async def send_wrapper(message: Message) -> None:
            nonlocal app_started_response
            if exceeded and not app_started_response:
                # The app is responding to the BodyTooLarge it got, typically with a 500
                # from an error handler, and the 413 below replaces that response.
                return
            if message["type"] == "http.response.start":
                app_started_response = True
            await send(message)

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        except BodyTooLarge:
            if app_started_response:
                raise
        if exceeded and not app_started_response:
            await self._reject(send)

    async def _reject(self, send: Send) -> None:
        logger.debug("Rejected a request body over %d bytes", self.max_body_bytes)
        await send_error(send, 413, "payload_too_large", self._message)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                # The server validates Content-Length; a value it let through is not ours to judge.
                return None
    return None
