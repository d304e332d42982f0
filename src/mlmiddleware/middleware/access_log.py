"""AccessLogMiddleware: one JSON record per finished HTTP request."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from mlmiddleware._logrecord import RecordMaker
from mlmiddleware._routes import RouteResolver, route_path
from mlmiddleware._types import ASGIApp, Message, Receive, Scope, Send
from mlmiddleware.jsonlog import sole_json_handler

__all__ = ["DEFAULT_QUIET_PATHS", "DISCONNECT_STATUS", "AccessLogMiddleware"]

# The toolkit's probe and scrape routes: polled every few seconds, so logging them would
# drown the real traffic.
DEFAULT_QUIET_PATHS = frozenset(
    {"/livez", "/readyz", "/startupz", "/v2/health/live", "/v2/health/ready", "/metrics"}
)
# nginx's status for a client that closed the connection before the response completed.
DISCONNECT_STATUS = 499
MAX_USER_AGENT_LENGTH = 512


class AccessLogMiddleware:
    """Log ``http.request`` on ``mlmiddleware.access`` when each request finishes.

    The record is written as soon as the last body byte is sent, so background tasks
    neither delay it nor count in ``duration_ms``. Byte counts are the bytes actually
    received and sent (0 for a HEAD response body). A client that disconnects before the
    response completes is logged with status 499 and no traceback. 5xx responses are
    logged at ERROR.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        exclude_paths: Iterable[str] = DEFAULT_QUIET_PATHS,
        logger_name: str = "mlmiddleware.access",
        route_resolver: RouteResolver | None = None,
    ) -> None:
        self.app = app
        self.exclude_paths = frozenset(exclude_paths)
        self.logger = logging.getLogger(logger_name)
        self._records = RecordMaker(self.logger, "http.request", source=__file__)
        self.resolver = route_resolver or RouteResolver(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.logger.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        if route_path(scope) in self.exclude_paths:
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()
        route = self.resolver.resolve(scope)
        is_head = scope["method"] == "HEAD"
        status = 0
        request_bytes = 0
        response_bytes = 0
        finished: float | None = None
        disconnected = False
        logged = False

        async def receive_wrapper() -> Message:
            nonlocal request_bytes, disconnected
            message = await receive()
            if message["type"] == "http.request":
                request_bytes += len(message.get("body", b""))
            elif message["type"] == "http.disconnect":
                disconnected = True
            return message

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_bytes, finished, logged
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                if not is_head:
                    response_bytes += len(message.get("body", b""))
                if not message.get("more_body", False):
                    await send(message)
                    finished = time.perf_counter()
                    # A 5xx waits for the app to return, so the record can carry its exception.
                    if status < 500:
                        logged = True
                        self._log(
                            scope, route, status, finished - started, request_bytes, response_bytes
                        )
                    return
            await send(message)

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        except BaseException as exc:
            if not logged:
                logged = True
                if finished is None and (disconnected or _is_disconnect(exc)):
                    status, exc_info = DISCONNECT_STATUS, None
                else:
                    status, exc_info = max(status, 500), exc
                end = finished if finished is not None else time.perf_counter()
                self._log(
                    scope, route, status, end - started, request_bytes, response_bytes, exc_info
                )
            raise
        finally:
            if not logged:
                if finished is None:
                    # The app returned without completing a response: the client went away.
                    status = DISCONNECT_STATUS
                    finished = time.perf_counter()
                self._log(scope, route, status, finished - started, request_bytes, response_bytes)

    def _log(
        self,
        scope: Scope,
        route: str,
        status: int,
        duration: float,
        request_bytes: int,
        response_bytes: int,
        exc: BaseException | None = None,
    ) -> None:
        fields: dict[str, Any] = {
            "method": scope["method"],
            "path": scope["path"],
            "route": route,
            "status": status,
            "duration_ms": round(duration * 1000.0, 3),
            "request_bytes": request_bytes,
            "response_bytes": response_bytes,
            "client": _client_of(scope),
            "user_agent": _user_agent_of(scope),
        }
        level = logging.ERROR if status >= 500 else logging.INFO
        if not self.logger.isEnabledFor(level):
            return

        if exc is None:
            # The common case: our JSON handler is the only consumer, so write the line
            # without building a LogRecord.
            handler = sole_json_handler(self.logger, level)
            if handler is not None:
                handler.write_event(level, self.logger.name, "http.request", fields)
                return

        exc_info = None if exc is None else (type(exc), exc, exc.__traceback__)
        self.logger.handle(self._records.make(level, fields, exc_info))


def _is_disconnect(exc: BaseException) -> bool:
    # uvicorn raises OSError (ClientDisconnected) from send once the peer is gone, and
    # Starlette raises ClientDisconnect; a cancelled request task means the same.
    if isinstance(exc, OSError | asyncio.CancelledError):
        return True
    return type(exc).__name__ == "ClientDisconnect"


def _client_of(scope: Scope) -> str | None:
    client = scope.get("client")
    if not client:
        return None
    return f"{client[0]}:{client[1]}"


def _user_agent_of(scope: Scope) -> str | None:
    for key, value in scope["headers"]:
        if key == b"user-agent":
            return str(value.decode("latin-1")[:MAX_USER_AGENT_LENGTH])
    return None
