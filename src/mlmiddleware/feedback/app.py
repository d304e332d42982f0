"""``FeedbackApp``: the ``POST /feedback`` endpoint that stores client feedback records."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import orjson

from mlmiddleware._context import get_request_id
from mlmiddleware._errors import send_error, send_method_not_allowed
from mlmiddleware._types import Receive, Scope, Send
from mlmiddleware.feedback._validation import FeedbackValidationError, parse_feedback
from mlmiddleware.feedback.capture import (
    CaptureClosedError,
    FeedbackCapture,
    QueueFullError,
    SinkError,
    as_capture,
)
from mlmiddleware.feedback.records import feedback_record
from mlmiddleware.feedback.sinks import FeedbackSink

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["FeedbackApp"]

logger = logging.getLogger("mlmiddleware.feedback")

_RETRY_AFTER = (b"retry-after", b"1")


class _BodyTooLarge(Exception):
    pass


class _ClientDisconnected(Exception):
    pass


class FeedbackApp:
    """ASGI app that validates feedback and responds 202 once the sink has stored it.

    The body is ``{"request_id": ..., "label": ..., "score": ..., "comment": ...,
    "data": {...}}`` or ``{"items": [...]}`` with up to ``max_items`` such objects. The
    202 body is ``{"id": ...}`` or ``{"ids": [...]}``, sent only after the sink's
    ``flush()`` returned (after ``fsync`` for ``JsonlFeedbackSink(fsync=True)``).
    Errors: 400 malformed JSON, 405 other methods, 413 bodies over ``max_body_bytes``,
    415 a content type other than JSON, 422 a wrong shape, 503 a full queue, a failing
    sink or shutdown. ``registry`` applies when ``sink`` is not yet wrapped in a
    ``FeedbackCapture``.
    """

    def __init__(
        self,
        sink: FeedbackSink,
        *,
        service: str | None = None,
        model_version: str | None = None,
        max_body_bytes: int = 64 * 2**10,
        max_items: int = 100,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int):
            raise ValueError(f"invalid max_body_bytes={max_body_bytes!r}: use a byte count >= 1")
        if max_body_bytes < 1:
            raise ValueError(f"invalid max_body_bytes={max_body_bytes!r}: use a byte count >= 1")
        if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1:
            raise ValueError(f"invalid max_items={max_items!r}: use an item count >= 1")

        self.capture: FeedbackCapture = as_capture(sink, registry=registry)
        if max_items > self.capture.max_queue:
            raise ValueError(
                f"invalid max_items={max_items!r}: a batch must fit in the queue "
                f"(max_queue={self.capture.max_queue}); lower max_items or raise max_queue"
            )
        self.service = service
        self.model_version = model_version
        self.max_body_bytes = max_body_bytes
        self.max_items = max_items

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1000})
            return

        if scope["method"] != "POST":
            await send_method_not_allowed(send, scope, ("POST",))
            return
        if not await self._check_headers(scope, send):
            return

        try:
            body = await self._read_body(receive)
        except _ClientDisconnected:
            return
        except _BodyTooLarge:
            await self._send_too_large(send)
            return

        await self._store(body, send)

    async def _check_headers(self, scope: Scope, send: Send) -> bool:
        headers = dict(_lower_headers(scope["headers"]))
        media_type = headers.get(b"content-type", b"").split(b";", 1)[0].strip()
        if media_type != b"application/json" and not media_type.endswith(b"+json"):
            media_type_text = media_type.decode("latin-1") or "none"
            await send_error(
                send,
                415,
                "unsupported_media_type",
                f"invalid content type {media_type_text!r}: send the feedback as application/json",
            )
            return False

        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await self._send_too_large(send)
            return False
        return True

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientDisconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _store(self, body: bytes, send: Send) -> None:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            await send_error(send, 400, "invalid_json", f"invalid JSON body: {exc}")
            return
        try:
            items = parse_feedback(payload, max_items=self.max_items)
        except FeedbackValidationError as exc:
            await send_error(send, 422, "validation_error", str(exc))
            return

        if not self.capture.healthy:
            await self._send_unavailable(send)
            return

        records = [self._record(item) for item in items]
        try:
            await self.capture.write_and_wait(records)
        except QueueFullError as exc:
            await send_error(send, 503, "queue_full", str(exc), headers=[_RETRY_AFTER])
            return
        except SinkError:
            await self._send_unavailable(send)
            return
        except CaptureClosedError:
            message = "the server is shutting down: send the feedback to another replica"
            await send_error(send, 503, "shutting_down", message, headers=[_RETRY_AFTER])
            return

        if "items" in payload:
            await _send_json(send, 202, {"ids": [record["id"] for record in records]})
        else:
            await _send_json(send, 202, {"id": records[0]["id"]})

    def _record(self, item: dict[str, Any]) -> dict[str, Any]:
        return feedback_record(
            item,
            service=self.service,
            model_version=self.model_version,
            feedback_request_id=get_request_id(),
        )

    async def _send_too_large(self, send: Send) -> None:
        message = (
            f"feedback body is larger than {self.max_body_bytes} bytes: send fewer items "
            "per request or move large data elsewhere"
        )
        await send_error(send, 413, "payload_too_large", message)

    async def _send_unavailable(self, send: Send) -> None:
        message = "the feedback sink cannot store records right now: retry later"
        await send_error(send, 503, "sink_unavailable", message, headers=[_RETRY_AFTER])

    async def _serve_lifespan(self, receive: Receive, send: Send) -> None:
        """Start and close the capture when the app is served on its own."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await anyio.to_thread.run_sync(self.capture.start)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await anyio.to_thread.run_sync(self.capture.close)
                await send({"type": "lifespan.shutdown.complete"})
                return


def _lower_headers(headers: Iterable[tuple[bytes, bytes]]) -> Iterable[tuple[bytes, bytes]]:
    for name, value in headers:
        yield name.lower(), value.lower()


async def _send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = orjson.dumps(payload)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("latin-1")),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
