"""Lifespan wiring: run the toolkit's startup and shutdown hooks around the app's own."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from mlmiddleware._lifecycle import AppLifecycle, begin_shutdown
from mlmiddleware._stack import LifespanHook
from mlmiddleware._types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["LifespanMiddleware"]

logger = logging.getLogger("mlmiddleware.lifespan")


class LifespanMiddleware:
    """Run hooks after the app's lifespan startup and before its lifespan shutdown.

    Startup hooks (batcher start and warmup) run once the app reports
    ``lifespan.startup.complete``; only then does readiness turn on. Shutdown hooks
    (readiness off, batcher drain, feedback flush) run when the server sends
    ``lifespan.shutdown`` and before the app receives it, so the model is still loaded while
    queued items finish. An app that does not speak the lifespan protocol (a bare ASGI
    callable that raises on it or returns at once) still gets the hooks run.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        lifecycle: AppLifecycle,
        startup_hooks: Sequence[LifespanHook] = (),
        shutdown_hooks: Sequence[LifespanHook] = (),
    ) -> None:
        self.app = app
        self.lifecycle = lifecycle
        self.startup_hooks = tuple(startup_hooks)
        self.shutdown_hooks = tuple(shutdown_hooks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        received: list[str] = []
        answered: list[str] = []

        async def receive_wrapper() -> Message:
            message = await receive()
            received.append(message["type"])
            if message["type"] == "lifespan.shutdown":
                await self._run_shutdown()
            return message

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                failure = await self._run_startup()
                if failure is not None:
                    message = {"type": "lifespan.startup.failed", "message": failure}
            answered.append(message["type"])
            await send(message)

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        except BaseException:
            if answered:
                raise
            # The app does not support lifespan: serve the protocol for the hooks alone.
            logger.debug("App raised on the lifespan scope; running toolkit hooks alone")
            await self._serve_lifespan(
                receive, send, startup_received="lifespan.startup" in received
            )
        else:
            if not answered:
                logger.debug("App ignored the lifespan scope; running toolkit hooks alone")
                await self._serve_lifespan(
                    receive, send, startup_received="lifespan.startup" in received
                )

    async def _serve_lifespan(
        self, receive: Receive, send: Send, *, startup_received: bool
    ) -> None:
        if not startup_received:
            await receive()
        failure = await self._run_startup()
        if failure is not None:
            await send({"type": "lifespan.startup.failed", "message": failure})
            return
        await send({"type": "lifespan.startup.complete"})

        message = await receive()
        if message["type"] == "lifespan.shutdown":
            await self._run_shutdown()
            await send({"type": "lifespan.shutdown.complete"})

    async def _run_startup(self) -> str | None:
        for hook in self.startup_hooks:
            try:
                await hook()
            except Exception as exc:
                logger.error("Startup hook %s failed", _hook_name(hook), exc_info=True)
                return f"startup hook {_hook_name(hook)} failed: {type(exc).__name__}: {exc}"
        self.lifecycle.startup_complete = True
        logger.info("Application startup complete, readiness can turn on")
        return None

    async def _run_shutdown(self) -> None:
        begin_shutdown()
        for hook in self.shutdown_hooks:
            try:
                await hook()
            except Exception:
                # One failed hook must not keep the others (feedback flush) from running.
                logger.error("Shutdown hook %s failed", _hook_name(hook), exc_info=True)


def _hook_name(hook: LifespanHook) -> str:
    return getattr(hook, "__qualname__", None) or repr(hook)
