"""``instrument()``: the composition root that wraps an existing ASGI app."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from mlmiddleware._errors import error_body
from mlmiddleware._gc import freeze_startup_heap
from mlmiddleware._lifespan import LifespanMiddleware
from mlmiddleware._stack import StackBuilder, ToolkitRouter
from mlmiddleware._types import ASGIApp
from mlmiddleware.jsonlog import (
    add_static_fields,
    adopt_third_party_loggers,
    configure_logging,
    is_configured,
)
from mlmiddleware.middleware.access_log import AccessLogMiddleware
from mlmiddleware.middleware.body_limit import BodySizeLimitMiddleware
from mlmiddleware.middleware.context import RequestContextMiddleware

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from mlmiddleware.health import HealthChecks, HealthPaths

__all__ = ["instrument"]

logger = logging.getLogger("mlmiddleware.instrument")


def instrument(
    app: ASGIApp,
    *,
    service: str | None = None,
    model_version: str | None = None,
    json_logs: bool = True,
    log_level: str = "INFO",
    request_id_header: str = "X-Request-ID",
    max_body_bytes: int | None = 10 * 2**20,
    access_log: bool = True,
    access_log_exclude: Iterable[str] | None = None,
    metrics: bool = True,
    metrics_path: str = "/metrics",
    registry: CollectorRegistry | None = None,
    health: bool | HealthChecks = True,
    health_paths: HealthPaths | None = None,
    feedback: Any = None,
    feedback_path: str = "/feedback",
    batchers: Sequence[Any] = (),
    freeze_gc: bool = True,
) -> ASGIApp:
    """Wrap ``app`` with the toolkit's middleware stack and mount the toolkit's routes.

    The returned ASGI app runs, from the outside in: lifespan hooks, request context,
    access log, Prometheus metrics, body size limit, the toolkit's own routes
    (``/metrics``, the health probes, ``/feedback``), then ``app`` itself. ``app`` can
    be a Starlette app, a FastAPI app or a bare ASGI callable; its routes are not
    touched. Every argument after ``app`` is keyword-only, so new options never break
    existing callers.

    ``health`` is ``True`` for a fresh ``HealthChecks``, a ``HealthChecks`` of your own,
    or ``False`` for no probe routes. ``batchers`` are started, warmed up, watched by
    the probes and drained with the app's lifespan.

    With ``freeze_gc`` the last startup step calls ``gc.freeze()``: the objects that
    exist once the app has started (the model, torch, the libraries) are left out of
    later garbage collections, which otherwise pause every request while they walk them.
    Reference cycles among frozen objects are never collected, so an app that replaces
    its startup model at runtime should pass ``freeze_gc=False``.
    """
    _install_json_server_error(app)
    _check_options(
        max_body_bytes=max_body_bytes, metrics_path=metrics_path, feedback_path=feedback_path
    )
    if json_logs and not is_configured():
        configure_logging(log_level, service=service)

    builder = StackBuilder(
        app=app,
        service=service,
        model_version=model_version or os.environ.get("MODEL_VERSION") or None,
        registry=registry,
    )
    if builder.model_version is not None:
        builder.response_headers.append((b"x-model-version", _header_value(builder.model_version)))
    if is_configured():
        if builder.model_version is not None:
            add_static_fields({"model_version": builder.model_version})
        builder.startup_hooks.append(_adopt_loggers)
    _wire_capabilities(
        builder,
        metrics=metrics,
        metrics_path=metrics_path,
        health=health,
        health_paths=health_paths,
        feedback=feedback,
        feedback_path=feedback_path,
        batchers=batchers,
    )
    if freeze_gc:
        builder.startup_hooks.append(freeze_startup_heap)
    return _assemble(
        builder,
        request_id_header=request_id_header,
        max_body_bytes=max_body_bytes,
        access_log=access_log,
        access_log_exclude=access_log_exclude,
    )


def _install_json_server_error(app: ASGIApp) -> None:
    """Make a Starlette or FastAPI app respond to unhandled exceptions with the JSON error body.

    Starlette's ``ServerErrorMiddleware`` sends its plain-text 500 before the exception
    reaches the toolkit's middleware, so the handler has to live in the app. An app that
    already handles ``Exception`` or 500 keeps its own handler. Starlette re-raises after
    the handler, so the access log and the metrics still see the exception.
    """
    handlers = getattr(app, "exception_handlers", None)
    add_handler = getattr(app, "add_exception_handler", None)
    if not isinstance(handlers, dict) or add_handler is None:
        return
    if Exception in handlers or 500 in handlers:
        return
    add_handler(Exception, _json_server_error)


async def _json_server_error(request: Any, exc: Exception) -> Any:
    from starlette.responses import Response

    body = error_body("internal_error", "The server failed to process the request.")
    return Response(body, status_code=500, media_type="application/json")


async def _adopt_loggers() -> None:
    # uvicorn may have applied its own logging config after configure_logging() ran.
    adopt_third_party_loggers()


def _header_value(version: str) -> bytes:
    if not version.isprintable() or not version.isascii():
        raise ValueError(
            f"invalid model_version={version!r}: it goes into the X-Model-Version header, "
            "so use printable ASCII only"
        )
    return version.encode("ascii")


def _check_options(*, max_body_bytes: int | None, metrics_path: str, feedback_path: str) -> None:
    if max_body_bytes is not None and (not isinstance(max_body_bytes, int) or max_body_bytes < 0):
        raise ValueError(
            f"invalid max_body_bytes={max_body_bytes!r}: use a byte count >= 0 or None"
        )
    for name, path in (("metrics_path", metrics_path), ("feedback_path", feedback_path)):
        if not path.startswith("/"):
            raise ValueError(f"invalid {name}={path!r}: it must start with '/'")


def _wire_capabilities(
    builder: StackBuilder,
    *,
    metrics: bool,
    metrics_path: str,
    health: bool | HealthChecks,
    health_paths: HealthPaths | None,
    feedback: Any,
    feedback_path: str,
    batchers: Sequence[Any],
) -> None:
    # Health first, so that metrics, batchers and feedback can register checks with it.
    if health is not False and health is not None:
        from mlmiddleware.health._wiring import wire_health

        wire_health(builder, health, paths=health_paths)

    if metrics:
        from mlmiddleware.metrics._wiring import wire_metrics

        wire_metrics(builder, path=metrics_path)

    if batchers:
        from mlmiddleware.batching._wiring import wire_batchers

        wire_batchers(builder, list(batchers))

    if feedback is not None:
        from mlmiddleware.feedback._wiring import wire_feedback

        wire_feedback(builder, feedback, path=feedback_path)


def _assemble(
    builder: StackBuilder,
    *,
    request_id_header: str,
    max_body_bytes: int | None,
    access_log: bool,
    access_log_exclude: Iterable[str] | None,
) -> ASGIApp:
    resolver = builder.resolver()
    quiet = frozenset(builder.quiet_paths if access_log_exclude is None else access_log_exclude)

    wrapped: ASGIApp = ToolkitRouter(builder.app, routes=builder.routes)
    if max_body_bytes is not None:
        wrapped = BodySizeLimitMiddleware(wrapped, max_body_bytes=max_body_bytes)
    if builder.metrics_layer is not None:
        wrapped = builder.metrics_layer(wrapped)
    if access_log:
        wrapped = AccessLogMiddleware(wrapped, exclude_paths=quiet, route_resolver=resolver)
    wrapped = RequestContextMiddleware(
        wrapped, header_name=request_id_header, response_headers=builder.response_headers
    )
    return LifespanMiddleware(
        wrapped,
        lifecycle=builder.lifecycle,
        startup_hooks=builder.startup_hooks,
        shutdown_hooks=builder.shutdown_hooks,
    )
