"""The service that the reliability tests run: the example's shape with a fast fake model.

Like ``examples/embedding/app.py`` it is a FastAPI app with ordinary routes, a batched model
route added as a Starlette ``Route``, feedback to a JSONL directory and one ``instrument()``
call. Each item sent to ``POST /v1/predict`` controls the fake model: ``{"inputs": 3}``, or
``{"inputs": {"x": 3, "delay_ms": 200, "fail": true, "hang": true, "mark": true}}``.

Environment:
    RELIABILITY_FEEDBACK_DIR   feedback directory (required)
    RELIABILITY_MARKER_DIR     where a batch with a ``mark`` item creates ``running-<pid>``
    RELIABILITY_STUCK_AFTER_S  ``stuck_after_s`` of the batcher (default 30)
    RELIABILITY_TIMEOUT_S      ``timeout_s`` of the batcher (default 30)
    RELIABILITY_CAPTURE_RATE   share of predictions captured as feedback (default 0.1)
"""

from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.routing import Route

import mlmiddleware
from mlmiddleware.batching import Batcher, batching_endpoint
from mlmiddleware.feedback import JsonlFeedbackSink

MAX_DELAY_MS = 5000
# A hung batch waits for POST /control/release, but never longer than this, so a test that
# fails before releasing it still lets the worker stop.
MAX_HANG_S = 120.0
ITEM_KEYS = frozenset({"x", "delay_ms", "fail", "hang", "mark"})

release = threading.Event()
api = FastAPI(title="reliability")


@api.exception_handler(RequestValidationError)
async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    # FastAPI's default handler encodes the raw body into its 422 and fails with a
    # UnicodeDecodeError, so a 500, on a body that is not UTF-8 (b"\x80" is enough).
    # Any app with body-validated routes needs a handler like this one.
    errors = [{"loc": error.get("loc"), "msg": error.get("msg")} for error in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)


@api.get("/")
def index() -> dict[str, str]:
    return {"service": "reliability", "predict": "POST /v1/predict"}


@api.get("/items/{item_id}")
def read_item(item_id: int) -> dict[str, int | str]:
    return {"item_id": item_id, "name": f"item {item_id}"}


@api.post("/echo")
def echo(payload: dict[str, Any]) -> dict[str, int]:
    return {"keys": len(payload)}


@api.get("/pid")
def pid() -> dict[str, int]:
    return {"pid": os.getpid()}


@api.post("/control/release")
def release_hung_batches() -> dict[str, bool]:
    release.set()
    return {"released": True}


@api.get("/control/raise")
def raise_error() -> dict[str, str]:
    raise RuntimeError("deliberate failure in an ordinary route")


def decode(item: Any) -> dict[str, Any]:
    """Validate one item: a number, or an object of the keys in ``ITEM_KEYS``."""
    if isinstance(item, int | float) and not isinstance(item, bool):
        item = {"x": item}
    if not isinstance(item, dict) or not set(item) <= ITEM_KEYS:
        raise ValueError(f"expected a number or an object with keys {sorted(ITEM_KEYS)}")

    x = item.get("x", 0)
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        raise ValueError("x must be a finite number")
    delay_ms = item.get("delay_ms", 0)
    if isinstance(delay_ms, bool) or not isinstance(delay_ms, int):
        raise ValueError("delay_ms must be an integer")
    if not 0 <= delay_ms <= MAX_DELAY_MS:
        raise ValueError(f"delay_ms must be from 0 to {MAX_DELAY_MS}")
    for flag in ("fail", "hang", "mark"):
        if not isinstance(item.get(flag, False), bool):
            raise ValueError(f"{flag} must be true or false")
    return {
        "x": x,
        **{key: item[key] for key in ("delay_ms", "fail", "hang", "mark") if key in item},
    }


def predict(batch: list[dict[str, Any]]) -> list[float]:
    """Return ``2 * x`` per item after the batch's largest delay; fail on a ``fail`` item."""
    if any(item.get("mark") for item in batch):
        marker_dir = os.environ.get("RELIABILITY_MARKER_DIR")
        if marker_dir:
            (Path(marker_dir) / f"running-{os.getpid()}").touch()
    if any(item.get("hang") for item in batch):
        release.wait(MAX_HANG_S)

    delay_ms = max(item.get("delay_ms", 0) for item in batch)
    if delay_ms:
        time.sleep(delay_ms / 1000)
    if any(item.get("fail") for item in batch):
        raise ValueError("deliberate model failure requested by the item")
    return [2 * item["x"] for item in batch]


feedback = JsonlFeedbackSink(os.environ["RELIABILITY_FEEDBACK_DIR"])
model = Batcher(
    predict,
    name="fake",
    max_batch_size=16,
    timeout_s=float(os.environ.get("RELIABILITY_TIMEOUT_S", "30")),
    stuck_after_s=float(os.environ.get("RELIABILITY_STUCK_AFTER_S", "30")),
    capture=feedback,
    capture_rate=float(os.environ.get("RELIABILITY_CAPTURE_RATE", "0.1")),
)
api.router.routes.append(
    Route("/v1/predict", batching_endpoint(model, decode=decode), methods=["POST"])
)

app = mlmiddleware.instrument(
    api,
    service="reliability",
    model_version="fake-1",
    batchers=[model],
    feedback=feedback,
)
