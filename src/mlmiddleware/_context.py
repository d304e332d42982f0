"""Request context: the request id and W3C trace ids of the request being served.

One middleware creates the context; the log formatter, the access log, the metrics
exemplars and the error bodies read it. It lives in a ``ContextVar``, so tasks created
with ``asyncio.create_task``, ``anyio.to_thread`` calls and Starlette background tasks
started inside a request see it too.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

__all__ = [
    "RequestContext",
    "current_request_context",
    "get_request_context",
    "get_request_id",
]


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Identifiers of one request, set by ``RequestContextMiddleware``."""

    request_id: str
    trace_id: str | None = None
    span_id: str | None = None


current_request_context: ContextVar[RequestContext | None] = ContextVar(
    "mlmiddleware_request_context", default=None
)


def get_request_context() -> RequestContext | None:
    """Return the context of the request being served, or ``None`` outside a request."""
    return current_request_context.get()


def get_request_id() -> str | None:
    """Return the id of the request being served, or ``None`` outside a request."""
    context = current_request_context.get()
    return None if context is None else context.request_id
