"""``ProbeEndpoint``: the ASGI app behind each probe route."""

from __future__ import annotations

import orjson

from mlmiddleware._errors import send_method_not_allowed
from mlmiddleware._lifecycle import AppLifecycle
from mlmiddleware._types import Receive, Scope, Send
from mlmiddleware.health.checks import CheckKind, HealthChecks

__all__ = ["OPEN_INFERENCE_FAIL_STATUS", "ProbeEndpoint"]

# KServe's "Predict Protocol - Version 2" (the Open Inference Protocol) requires 200 for
# a true health response and a 4xx status for false.
OPEN_INFERENCE_FAIL_STATUS = 400

_ALLOWED_METHODS = ("GET", "HEAD")


class ProbeEndpoint:
    """Respond to GET and HEAD with the probe report of ``kind``: 200 when it passes.

    A failing probe returns ``fail_status`` (503 by default). HEAD returns the same
    status and headers without a body. Any other method gets 405.
    """

    def __init__(
        self,
        checks: HealthChecks,
        *,
        kind: CheckKind,
        lifecycle: AppLifecycle | None = None,
        fail_status: int = 503,
    ) -> None:
        self.checks = checks
        self.kind = kind
        self.lifecycle = lifecycle
        self.fail_status = fail_status

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        if method not in _ALLOWED_METHODS:
            await send_method_not_allowed(send, scope, ("GET", "HEAD"))
            return

        startup_complete = self.lifecycle is None or self.lifecycle.startup_complete
        report = await self.checks.run(self.kind, startup_complete=startup_complete)
        body = orjson.dumps(report.to_json())
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode("latin-1")),
            (b"cache-control", b"no-store"),
        ]

        status = 200 if report.ok else self.fail_status
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
