"""RequestContextMiddleware: one request id and W3C trace ids per request."""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterable

from mlmiddleware._context import RequestContext, current_request_context
from mlmiddleware._errors import error_body, error_headers
from mlmiddleware._types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["RequestContextMiddleware", "parse_traceparent"]

logger = logging.getLogger("mlmiddleware.context")

MAX_REQUEST_ID_LENGTH = 128
# Bytes allowed in an incoming request id; anything else makes the middleware generate one.
_REQUEST_ID_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE_ID = "0" * 32
_ZERO_SPAN_ID = "0" * 16


def parse_traceparent(value: str) -> tuple[str, str] | None:
    """Return ``(trace_id, span_id)`` from a W3C ``traceparent`` value, or ``None``.

    Follows W3C Trace Context level 1: version ``ff`` and all-zero ids are invalid, and
    version ``00`` allows no trailing fields.
    """
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None:
        return None

    version, trace_id, span_id, _flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE_ID or span_id == _ZERO_SPAN_ID:
        return None
    return trace_id, span_id


def _is_valid_request_id(value: bytes) -> bool:
    return 0 < len(value) <= MAX_REQUEST_ID_LENGTH and not value.translate(None, _REQUEST_ID_BYTES)


class RequestContextMiddleware:
    """Set the request context for the duration of each HTTP request.

    The request id comes from the ``header_name`` request header when it is 1-128
    characters of ``[A-Za-z0-9._-]``. Otherwise a new one is generated, and no part of the
    rejected value is logged or echoed. The id and the trace ids are exposed through
    ``mlmiddleware.get_request_context()`` and ``scope["state"]``, and the id is echoed
    in the same header on every response. An unhandled exception gets a JSON 500 carrying
    the id when no response has started, and is then re-raised.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        header_name: str = "X-Request-ID",
        response_headers: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        self.app = app
        self.header_key = header_name.lower().encode("latin-1")
        self.response_headers = list(response_headers)
        self._replaced_keys = frozenset(
            {self.header_key, *(key for key, _ in self.response_headers)}
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        context = self._context_from_headers(scope["headers"])
        state = scope.setdefault("state", {})
        state["request_id"] = context.request_id
        state["trace_id"] = context.trace_id
        state["span_id"] = context.span_id

        added = [(self.header_key, context.request_id.encode("latin-1")), *self.response_headers]
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                message["headers"] = self._with_headers(message.get("headers", ()), added)
            await send(message)

        token = current_request_context.set(context)
        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            if not response_started:
                await self._send_internal_error(send, added)
            raise
        finally:
            current_request_context.reset(token)

    def _context_from_headers(self, headers: Iterable[tuple[bytes, bytes]]) -> RequestContext:
        request_id: str | None = None
        trace: tuple[str, str] | None = None
        for key, value in headers:
            if key == self.header_key:
                if _is_valid_request_id(value):
                    request_id = value.decode("ascii")
                else:
                    logger.debug("Rejected an invalid request id header; generated a new id")
            elif key == b"traceparent":
                trace = parse_traceparent(value.decode("latin-1"))

        if request_id is None:
            # Request ids need to be unique, not unpredictable, so the Mersenne Twister
            # (seeded per process from os.urandom) saves a system call per request.
            request_id = f"{random.getrandbits(128):032x}"
        if trace is None:
            return RequestContext(request_id)
        return RequestContext(request_id, trace[0], trace[1])

    def _with_headers(
        self, headers: Iterable[tuple[bytes, bytes]], added: list[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes]]:
        kept = [(key, value) for key, value in headers if key.lower() not in self._replaced_keys]
        kept.extend(added)
        return kept

    async def _send_internal_error(self, send: Send, added: list[tuple[bytes, bytes]]) -> None:
        body = error_body("internal_error", "The server failed to process the request.")
        start = {
            "type": "http.response.start",
            "status": 500,
            "headers": error_headers(body, added),
        }
        try:
            await send(start)
            await send({"type": "http.response.body", "body": body, "more_body": False})
        except OSError:
            # The client is gone; the original exception is what matters and is re-raised.
            pass
