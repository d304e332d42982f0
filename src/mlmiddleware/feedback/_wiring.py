"""Wire feedback capture into ``instrument()``."""

from __future__ import annotations

import anyio.to_thread

from mlmiddleware._stack import StackBuilder
from mlmiddleware.feedback.app import FeedbackApp
from mlmiddleware.feedback.capture import as_capture
from mlmiddleware.feedback.sinks import FeedbackSink

__all__ = ["wire_feedback"]


def wire_feedback(builder: StackBuilder, sink: FeedbackSink, *, path: str) -> None:
    """Mount ``FeedbackApp`` at ``path`` and tie the writer thread to the lifespan.

    The writer starts after the app's startup and is flushed and closed at shutdown, after
    the batchers drained (their hooks were added first). With health probes on, a
    ``feedback_sink`` readiness check fails while the sink cannot write.
    """
    capture = as_capture(sink, registry=builder.registry)
    app = FeedbackApp(capture, service=builder.service, model_version=builder.model_version)
    builder.add_route(path, app)

    async def start_feedback_writer() -> None:
        await anyio.to_thread.run_sync(capture.start)

    async def close_feedback_writer() -> None:
        await anyio.to_thread.run_sync(capture.close)

    builder.startup_hooks.append(start_feedback_writer)
    builder.shutdown_hooks.append(close_feedback_writer)
    if builder.health is not None:
        builder.health.add("feedback_sink", capture.check_ready, kind="readiness")
