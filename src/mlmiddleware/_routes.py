"""Route-template resolution shared by the access log and the metrics middleware.

The template (``/items/{item_id}``) is resolved before the wrapped app runs, so responses
sent by inner middleware (a 429 from a rate limiter, a CORS preflight) carry it too. It is
stored in the scope under ``ROUTE_SCOPE_KEY`` and resolved at most once per request.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

from starlette.routing import BaseRoute, Host, Match, Mount

from mlmiddleware._types import Scope

__all__ = ["ROUTE_SCOPE_KEY", "UNMATCHED_ROUTE", "RouteResolver", "find_routes", "route_path"]

ROUTE_SCOPE_KEY = "mlmiddleware.route"

# Label value shared by every path that no route matches, so random paths add one
# label value in total.
UNMATCHED_ROUTE = "<unmatched>"

_CACHE_SIZE = 4096


def find_routes(app: Any) -> Sequence[BaseRoute] | None:
    """Return the routes of ``app`` or of the first app below it that has routes.

    Follows the ``.app`` attribute that pure ASGI middleware conventionally keeps, so a
    Starlette app wrapped in middleware is still found. Returns ``None`` for a bare ASGI
    callable.
    """
    seen: set[int] = set()
    while app is not None and id(app) not in seen:
        seen.add(id(app))
        routes = getattr(app, "routes", None)
        if isinstance(routes, list | tuple):
            return routes
        app = getattr(app, "app", None)
    return None


class RouteResolver:
    """Resolve the route template of a request against an app's routes.

    ``extra_paths`` are exact paths served in front of the app (``/metrics``, ``/livez``);
    they resolve to themselves. Results are cached per (method, path) in a bounded LRU
    cache, so a request to a known path costs one dictionary lookup and random paths
    cannot grow memory.
    """

    def __init__(self, app: Any, *, extra_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.extra_paths = frozenset(extra_paths)
        self._routes = find_routes(app)
        self._cache: OrderedDict[tuple[str, str], str] = OrderedDict()
        # A Host route matches on the Host header, which the cache key does not contain.
        self._cacheable = self._routes is not None and not _has_host_route(self._routes)

    def add_extra_paths(self, paths: Iterable[str]) -> None:
        """Register more exact paths that resolve to themselves."""
        self.extra_paths = self.extra_paths | frozenset(paths)
        self._cache.clear()

    def resolve(self, scope: Scope) -> str:
        """Return the route template of ``scope``, computing it once per request."""
        route = scope.get(ROUTE_SCOPE_KEY)
        if route is not None:
            return str(route)

        route = self._lookup(scope)
        scope[ROUTE_SCOPE_KEY] = route
        return route

    def _lookup(self, scope: Scope) -> str:
        path = route_path(scope)
        if path in self.extra_paths:
            return path
        if self._routes is None:
            return UNMATCHED_ROUTE
        if not self._cacheable:
            return _match(self._routes, scope, "") or UNMATCHED_ROUTE

        key = (scope.get("method", ""), path)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached

        route = _match(self._routes, scope, "") or UNMATCHED_ROUTE
        self._cache[key] = route
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return route


def route_path(scope: Scope) -> str:
    """Return the path relative to ``root_path``, as Starlette's router matches it."""
    path: str = scope.get("path", "")
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        return path[len(root_path) :] or "/"
    return path


def _has_host_route(routes: Sequence[BaseRoute]) -> bool:
    for route in routes:
        if isinstance(route, Host):
            return True
        if isinstance(route, Mount) and _has_host_route(route.routes):
            return True
    return False


def _match(routes: Sequence[BaseRoute], scope: Scope, prefix: str) -> str | None:
    """Return the template of the first full match, else of the first partial match."""
    partial: str | None = None
    for route in routes:
        match, child_scope = route.matches(scope)
        if match is Match.NONE:
            continue

        template = _template_of(route, scope, child_scope, prefix)
        if match is Match.FULL:
            return template
        if partial is None:
            partial = template
    return partial


def _template_of(route: BaseRoute, scope: Scope, child_scope: Scope, prefix: str) -> str:
    if isinstance(route, Mount | Host):
        own = route.path if isinstance(route, Mount) else ""
        sub_routes = route.routes
        if sub_routes:
            child = {**scope, **child_scope}
            inner = _match(sub_routes, child, prefix + own)
            if inner is not None:
                return inner
        # A mounted app without routes (a bare ASGI app) owns everything below its prefix.
        return (prefix + own) or "/"
    return prefix + str(getattr(route, "path", ""))
