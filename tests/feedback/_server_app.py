"""ASGI app served by uvicorn subprocesses in the feedback process tests.

Configured by environment variables: ``FEEDBACK_DIR`` (required), ``FEEDBACK_ROTATE_BYTES``
and ``FEEDBACK_FSYNC`` (``1`` for fsync). The FeedbackApp serves the lifespan protocol
itself, so the writer starts at startup and is flushed and closed at shutdown.
"""

from __future__ import annotations

import os

from mlmiddleware.feedback import FeedbackApp, JsonlFeedbackSink

sink = JsonlFeedbackSink(
    os.environ["FEEDBACK_DIR"],
    rotate_bytes=int(os.environ.get("FEEDBACK_ROTATE_BYTES", str(64 * 2**20))),
    fsync=os.environ.get("FEEDBACK_FSYNC") == "1",
)
app = FeedbackApp(sink, service="feedback-test", model_version="v1")
