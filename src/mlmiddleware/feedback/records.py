"""Feedback and prediction records: one JSON object per line of a feedback file.

Every record has ``id``, ``ts`` (RFC 3339 UTC with microseconds, as in the JSON logs),
``kind`` (``prediction`` or ``feedback``), ``request_id``, ``service``, ``model`` and
``model_version``. ``docs/feedback.md`` lists the fields of each kind.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any

import orjson

__all__ = [
    "FEEDBACK_FIELDS",
    "encode_record",
    "feedback_record",
    "is_sampled",
    "new_record_id",
    "prediction_record",
    "utc_timestamp",
]

_SAMPLE_SCALE = float(2**64)

# Fields a client may send in a feedback item, besides ``request_id``.
FEEDBACK_FIELDS = ("model", "label", "score", "comment", "data")

_ENCODE_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def is_sampled(request_id: str, rate: float) -> bool:
    """Decide whether the prediction of ``request_id`` is captured at ``rate`` (0 to 1).

    The decision depends only on the request id, so every process (and a replay) makes the
    same one, and a feedback record can always be joined to a captured prediction.
    """
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    digest = hashlib.blake2b(request_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SAMPLE_SCALE < rate


def utc_timestamp(seconds: float | None = None) -> str:
    """Format ``seconds`` since the epoch (default: now) as ``2026-01-31T12:00:00.123456Z``."""
    if seconds is None:
        seconds = time.time()
    whole = int(seconds)
    micros = int((seconds - whole) * 1_000_000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(whole))}.{micros:06d}Z"


def new_record_id() -> str:
    """Return a new random record id (32 hex digits)."""
    return uuid.uuid4().hex


def prediction_record(
    *,
    request_id: str | None,
    model: str,
    input: Any,
    output: Any,
    service: str | None = None,
    model_version: str | None = None,
    max_payload_bytes: int | None = 16 * 2**10,
) -> dict[str, Any]:
    """Build a ``prediction`` record; payloads over ``max_payload_bytes`` become a digest.

    A replaced payload is ``{"sha256": ..., "size_bytes": ...}`` of its JSON encoding, so a
    training job can still tell identical inputs apart. ``None`` keeps every payload whole.
    """
    return {
        "id": new_record_id(),
        "ts": utc_timestamp(),
        "kind": "prediction",
        "request_id": request_id,
        "service": service,
        "model": model,
        "model_version": model_version,
        "input": _bounded(input, max_payload_bytes),
        "output": _bounded(output, max_payload_bytes),
    }


def feedback_record(
    item: dict[str, Any],
    *,
    service: str | None = None,
    model_version: str | None = None,
    feedback_request_id: str | None = None,
) -> dict[str, Any]:
    """Build a ``feedback`` record from a validated client item.

    ``item["request_id"]`` names the earlier prediction, and ``feedback_request_id`` is
    the id of the request that carried the feedback itself.
    """
    record: dict[str, Any] = {
        "id": new_record_id(),
        "ts": utc_timestamp(),
        "kind": "feedback",
        "request_id": item["request_id"],
        "service": service,
        "model": item.get("model"),
        "model_version": model_version,
    }
    for field in FEEDBACK_FIELDS[1:]:
        record[field] = item.get(field)
    record["feedback_request_id"] = feedback_request_id
    return record


def encode_record(record: dict[str, Any]) -> bytes:
    """Encode ``record`` as one JSON line, newline included.

    NumPy arrays become lists and values orjson cannot encode become their ``str()``, so a
    prediction output never makes its record unwritable.
    """
    return orjson.dumps(record, default=str, option=_ENCODE_OPTIONS | orjson.OPT_APPEND_NEWLINE)


def _bounded(payload: Any, max_bytes: int | None) -> Any:
    if max_bytes is None:
        return payload
    encoded = orjson.dumps(payload, option=_ENCODE_OPTIONS, default=str)
    if len(encoded) <= max_bytes:
        return payload
    return {"sha256": hashlib.sha256(encoded).hexdigest(), "size_bytes": len(encoded)}
