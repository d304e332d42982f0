"""Feedback capture: prediction and feedback records written to JSONL files, logs or user code.

``instrument(app, feedback=JsonlFeedbackSink("/var/lib/feedback"))`` mounts
``POST /feedback``; ``Batcher(..., capture=sink, capture_rate=0.1)`` records sampled
predictions through the same queue.
"""

from mlmiddleware.feedback.app import FeedbackApp
from mlmiddleware.feedback.capture import (
    CaptureClosedError,
    FeedbackCapture,
    QueueFullError,
    SinkError,
    as_capture,
)
from mlmiddleware.feedback.jsonl import JsonlFeedbackSink
from mlmiddleware.feedback.records import (
    feedback_record,
    is_sampled,
    prediction_record,
    utc_timestamp,
)
from mlmiddleware.feedback.sinks import CallableFeedbackSink, FeedbackSink, LoggingFeedbackSink

__all__ = [
    "CallableFeedbackSink",
    "CaptureClosedError",
    "FeedbackApp",
    "FeedbackCapture",
    "FeedbackSink",
    "JsonlFeedbackSink",
    "LoggingFeedbackSink",
    "QueueFullError",
    "SinkError",
    "as_capture",
    "feedback_record",
    "is_sampled",
    "prediction_record",
    "utc_timestamp",
]
