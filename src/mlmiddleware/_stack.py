"""The state that ``instrument()`` assembles, and the router for the toolkit's own routes.

Each capability (metrics, health, feedback, batching) adds itself to a ``StackBuilder``
through a ``wire_*`` function in its own package, so ``instrument()`` grows by keyword
arguments without knowing the internals of any of them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlmiddleware._lifecycle import AppLifecycle
from mlmiddleware._routes import RouteResolver, route_path
from mlmiddleware._types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["LifespanHook", "StackBuilder", "ToolkitRouter"]

LifespanHook = Callable[[], Awaitable[None]]


@dataclass
class StackBuilder:
    """Everything the capabilities contribute to one instrumented app."""

    app: ASGIApp
    service: str | None = None
    model_version: str | None = None
    registry: CollectorRegistry | None = None
    # The health registry when health routes are on (a ``HealthChecks``), else ``None``.
    health: Any = None
    lifecycle: AppLifecycle = field(default_factory=AppLifecycle)
    # Exact paths (relative to ``root_path``) served in front of the wrapped app.
    routes: dict[str, ASGIApp] = field(default_factory=dict)
    # Probe and scrape paths, left out of the access log and metrics by default.
    quiet_paths: set[str] = field(default_factory=set)
    # Wraps the stack between the access log and the body limit (the metrics middleware).
    metrics_layer: Callable[[ASGIApp], ASGIApp] | None = None
    # Static headers added to every HTTP response (``X-Model-Version``).
    response_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    # Run in order after the app's own lifespan startup, before readiness turns on.
    startup_hooks: list[LifespanHook] = field(default_factory=list)
    # Run in order when lifespan shutdown begins, before the app's own shutdown.
    shutdown_hooks: list[LifespanHook] = field(default_factory=list)
    _resolver: RouteResolver | None = field(default=None, repr=False)

    def add_route(self, path: str, app: ASGIApp, *, quiet: bool = False) -> None:
        """Serve ``app`` at the exact ``path`` in front of the wrapped app."""
        if not path.startswith("/"):
            raise ValueError(f"invalid toolkit route path {path!r}: it must start with '/'")
        if path in self.routes:
            raise ValueError(
                f"toolkit route path {path!r} is configured twice: give each a unique path"
            )
        self.routes[path] = app
        if quiet:
            self.quiet_paths.add(path)

    def resolver(self) -> RouteResolver:
        """Return the route resolver shared by the access log and the metrics middleware.

        Built on first use, which ``instrument()`` makes sure comes after every capability
        has added its routes.
        """
        if self._resolver is None:
            self._resolver = RouteResolver(self.app, extra_paths=self.routes)
        return self._resolver


class ToolkitRouter:
    """Serve the toolkit's exact-path routes, and pass every other request to the app."""

    def __init__(self, app: ASGIApp, *, routes: dict[str, ASGIApp]) -> None:
        self.app = app
        self.routes = dict(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.routes:
            await self.app(scope, receive, send)
            return

        target = self.routes.get(route_path(scope), self.app)
        await target(scope, receive, send)
