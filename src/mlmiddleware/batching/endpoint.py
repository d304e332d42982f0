"""``batching_endpoint``: an ASGI app that serves a ``Batcher`` over HTTP with JSON."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import anyio.to_thread

from mlmiddleware._context import get_request_id
from mlmiddleware._errors import send_error, send_method_not_allowed
from mlmiddleware._types import Receive, Scope, Send
from mlmiddleware.batching._protocol import (
    ParsedRequest,
    ProtocolError,
    dump_json,
    parse_json_request,
)
from mlmiddleware.batching.batcher import Batcher
from mlmiddleware.batching.errors import (
    InvalidItem,
    NotStarted,
    QueueFull,
    ShuttingDown,
    WorkerDied,
)

__all__ = ["BatchingEndpoint", "batching_endpoint"]

logger = logging.getLogger("mlmiddleware.batching")

_RAW_CONTENT_TYPE = "application/octet-stream"


class _Disconnected(Exception):
    """The client closed the connection, so no response is sent."""


def batching_endpoint(
    batcher: Batcher,
    *,
    decode: Callable[[Any], Any] | None = None,
    encode: Callable[[Any], Any] | None = None,
    max_items_per_request: int | None = None,
    max_body_bytes: int | None = 10 * 2**20,
    decode_in_thread: bool = True,
    retry_after_s: int = 1,
) -> BatchingEndpoint:
    """Build the ASGI app that serves ``batcher``; mount it or use it as a route endpoint.

    ``POST {"inputs": item}`` returns ``{"outputs": result}``; ``POST {"instances": [...]}``
    returns ``{"predictions": [...]}``, each instance queued as its own item. A body sent as
    ``application/octet-stream`` is one item of raw bytes. ``decode(item)`` validates and
    converts each item before it is queued (in a worker thread unless
    ``decode_in_thread=False``). An exception from it returns HTTP 422. ``encode(result)``
    converts each result before JSON encoding. ``max_items_per_request`` defaults to 256,
    or the batcher's ``max_queue_size`` when that is smaller.
    """
    if max_items_per_request is None:
        max_items_per_request = min(256, batcher.max_queue_size)
    return BatchingEndpoint(
        batcher,
        decode=decode,
        encode=encode,
        max_items_per_request=max_items_per_request,
        max_body_bytes=max_body_bytes,
        decode_in_thread=decode_in_thread,
        retry_after_s=retry_after_s,
    )


class BatchingEndpoint:
    """ASGI app serving one ``Batcher``. Build it with ``batching_endpoint()``."""

    def __init__(
        self,
        batcher: Batcher,
        *,
        decode: Callable[[Any], Any] | None,
        encode: Callable[[Any], Any] | None,
        max_items_per_request: int,
        max_body_bytes: int | None,
        decode_in_thread: bool,
        retry_after_s: int,
    ) -> None:
        if not 1 <= max_items_per_request <= batcher.max_queue_size:
            raise ValueError(
                f"invalid max_items_per_request={max_items_per_request!r}: use 1 to the "
                f"batcher's max_queue_size={batcher.max_queue_size}"
            )
        self.batcher = batcher
        self.decode = decode
        self.encode = encode
        self.max_items_per_request = max_items_per_request
        self.max_body_bytes = max_body_bytes
        self.decode_in_thread = decode_in_thread
        self.retry_headers = [(b"retry-after", str(retry_after_s).encode("latin-1"))]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _answer_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":
            await send_method_not_allowed(send, scope, ("POST",), hint=" with a JSON body")
            return

        try:
            body = await self._handle(scope, receive)
        except _Disconnected:
            return
        except ProtocolError as error:
            headers = self.retry_headers if error.status == 503 else []
            await send_error(send, error.status, error.error_type, error.message, headers=headers)
            return

        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode("latin-1")),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _handle(self, scope: Scope, receive: Receive) -> bytes:
        content_type, content_length = _content_headers(scope)
        raw = _media_type(content_type) == _RAW_CONTENT_TYPE
        body = await self._read_body(receive, _parse_length(content_length))
        if raw:
            request = ParsedRequest(items=[body], batched=False)
        else:
            request = parse_json_request(body, max_items=self.max_items_per_request)

        values = await self._decode(request)
        results = await self._submit(values, receive)
        outputs = self._encode(request, results)
        self._capture(request, outputs, raw=raw)

        document = {"predictions": outputs} if request.batched else {"outputs": outputs[0]}
        try:
            return dump_json(document)
        except TypeError as exc:
            raise ProtocolError(500, "model_error", f"result encoding failed: {exc}") from exc

    async def _read_body(self, receive: Receive, declared: int | None) -> bytes:
        limit = self.max_body_bytes
        if limit is not None and declared is not None and declared > limit:
            raise _too_large(limit)

        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if limit is not None and size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _decode(self, request: ParsedRequest) -> list[Any]:
        decode = self.decode
        if decode is None:
            return request.items

        def decode_all() -> list[Any]:
            values = []
            for index, item in enumerate(request.items):
                try:
                    values.append(decode(item))
                except Exception as exc:
                    reason = str(exc) or type(exc).__name__
                    raise ProtocolError(
                        422, "validation_error", f"{request.field(index)}: {reason}"
                    ) from exc
            return values

        if self.decode_in_thread:
            return await anyio.to_thread.run_sync(decode_all)
        return decode_all()

    async def _submit(self, values: list[Any], receive: Receive) -> list[Any]:
        # A watcher task reads ``receive`` while the items wait. On ``http.disconnect`` it
        # cancels this task, which withdraws the items not yet dispatched to the model.
        task = asyncio.current_task()
        assert task is not None
        state = {"finished": False, "disconnected": False}

        async def watch() -> None:
            await _wait_for_disconnect(receive)
            if not state["finished"]:
                state["disconnected"] = True
                task.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            results = await self.batcher.submit_many(values)
        except asyncio.CancelledError:
            if not state["disconnected"]:
                raise
            _uncancel(task)
            raise _Disconnected from None
        except Exception as error:
            raise _protocol_error(error) from error
        finally:
            state["finished"] = True
            watcher.cancel()
        return results

    def _encode(self, request: ParsedRequest, results: list[Any]) -> list[Any]:
        encode = self.encode
        if encode is None:
            return results

        outputs = []
        for index, result in enumerate(results):
            try:
                outputs.append(encode(result))
            except Exception as exc:
                logger.error(
                    "Batcher %s: encode failed on %s (request id %s)",
                    self.batcher.name,
                    request.field(index),
                    get_request_id(),
                    exc_info=exc,
                )
                raise ProtocolError(
                    500,
                    "model_error",
                    f"encode failed on {request.field(index)}: {type(exc).__name__}: {exc}",
                ) from exc
        return outputs

    def _capture(self, request: ParsedRequest, outputs: list[Any], *, raw: bool) -> None:
        batcher = self.batcher
        request_id = get_request_id()
        # NOTE: without a request id (no RequestContextMiddleware in front) nothing is
        # captured, because sampling and joining feedback both need the id.
        if batcher.capture is None or request_id is None:
            return

        from mlmiddleware.feedback.records import is_sampled, prediction_record

        if not is_sampled(request_id, batcher.capture_rate):
            return
        try:
            for item, output in zip(request.items, outputs, strict=True):
                captured_input = {"size_bytes": len(item)} if raw else item
                record = prediction_record(
                    request_id=request_id,
                    model=batcher.name,
                    input=captured_input,
                    output=output,
                    service=batcher.service,
                    model_version=batcher.model_version,
                )
                batcher.capture.write(record)
        except Exception as exc:
            logger.warning(
                "Batcher %s: prediction capture failed for request id %s: %s: %s",
                batcher.name,
                request_id,
                type(exc).__name__,
                exc,
            )


async def _answer_lifespan(receive: Receive, send: Send) -> None:
    # Served as the root app, the endpoint completes the lifespan protocol so that
    # ``instrument()`` runs its startup hooks (the batcher start). It starts nothing itself.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _uncancel(task: asyncio.Task[Any]) -> None:
    # Python 3.11+ counts cancellations. Clear ours so the handler can finish normally.
    uncancel = getattr(task, "uncancel", None)
    if uncancel is not None:
        uncancel()


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def _protocol_error(error: BaseException) -> ProtocolError:
    if isinstance(error, QueueFull):
        return ProtocolError(503, "queue_full", str(error))
    if isinstance(error, ShuttingDown):
        return ProtocolError(503, "shutting_down", str(error))
    if isinstance(error, NotStarted | WorkerDied):
        return ProtocolError(503, "unavailable", str(error))
    if isinstance(error, InvalidItem):
        return ProtocolError(422, "validation_error", str(error))
    if isinstance(error, TimeoutError):
        return ProtocolError(504, "timeout", str(error))
    return ProtocolError(500, "model_error", f"{type(error).__name__}: {error}")


def _too_large(limit: int) -> ProtocolError:
    return ProtocolError(
        413,
        "payload_too_large",
        f"request body exceeds max_body_bytes={limit}: send fewer or smaller items",
    )


def _content_headers(scope: Scope) -> tuple[str | None, str | None]:
    content_type = content_length = None
    for key, value in scope.get("headers", ()):
        name = key.lower()
        if name == b"content-type":
            content_type = bytes(value).decode("latin-1")
        elif name == b"content-length":
            content_length = bytes(value).decode("latin-1")
    return content_type, content_length


def _media_type(value: str | None) -> str:
    media_type = "application/json" if value is None else value.split(";")[0].strip().lower()
    if media_type == _RAW_CONTENT_TYPE or media_type == "application/json":
        return media_type
    if media_type.endswith("+json"):
        return "application/json"
    raise ProtocolError(
        415,
        "unsupported_media_type",
        f"content type {media_type!r} is not supported: send application/json "
        f"or {_RAW_CONTENT_TYPE}",
    )


def _parse_length(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return int(value)
