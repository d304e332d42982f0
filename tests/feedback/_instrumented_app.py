"""A Starlette app wrapped by ``instrument(feedback=...)``, served by uvicorn in tests.

``FEEDBACK_DIR`` names the feedback directory (it may be unwritable on purpose).
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mlmiddleware import instrument
from mlmiddleware.feedback import JsonlFeedbackSink


async def predict(request: Request) -> JSONResponse:
    return JSONResponse({"label": "cat"})


app = instrument(
    Starlette(routes=[Route("/predict", predict, methods=["POST"])]),
    service="feedback-svc",
    model_version="v7",
    registry=CollectorRegistry(),
    feedback=JsonlFeedbackSink(os.environ["FEEDBACK_DIR"]),
)
