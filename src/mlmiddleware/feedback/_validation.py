"""Validation of feedback bodies: ``{"request_id": ...}`` or ``{"items": [...]}``."""

from __future__ import annotations

from typing import Any

from mlmiddleware.feedback.records import FEEDBACK_FIELDS

__all__ = ["FeedbackValidationError", "parse_feedback"]

MAX_REQUEST_ID_LENGTH = 256
_ALLOWED_FIELDS = frozenset({"request_id", *FEEDBACK_FIELDS})
_SCALAR_TYPES = (str, int, float, bool)


class FeedbackValidationError(ValueError):
    """A feedback body that parses as JSON but does not have the documented shape."""


def parse_feedback(payload: Any, *, max_items: int) -> list[dict[str, Any]]:
    """Return the validated feedback items of ``payload``, a single item or a batch."""
    if not isinstance(payload, dict):
        raise FeedbackValidationError(
            f"invalid body: expected a JSON object, got {_json_type(payload)}; send "
            '{"request_id": ...} or {"items": [...]}'
        )
    if "items" not in payload:
        return [_check_item(payload, "")]

    extra = sorted(set(payload) - {"items"})
    if extra:
        raise FeedbackValidationError(
            f"unexpected field {extra[0]!r} next to 'items': move it into each item"
        )
    items = payload["items"]
    if not isinstance(items, list) or not items:
        raise FeedbackValidationError("invalid 'items': expected a non-empty array of objects")
    if len(items) > max_items:
        raise FeedbackValidationError(
            f"too many items: got {len(items)}, the maximum is {max_items}; split the batch"
        )
    return [_check_item(item, f"items[{index}].") for index, item in enumerate(items)]


def _check_item(item: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise FeedbackValidationError(
            f"invalid {prefix.rstrip('.') or 'body'}: expected an object, got {_json_type(item)}"
        )
    unknown = sorted(set(item) - _ALLOWED_FIELDS)
    if unknown:
        raise FeedbackValidationError(
            f"unknown field '{prefix}{unknown[0]}': put free-form fields under 'data'"
        )

    _check_request_id(item.get("request_id"), prefix)
    _check_optional(item, "model", prefix, str, "a string")
    _check_label(item.get("label"), prefix)
    _check_score(item.get("score"), prefix)
    _check_optional(item, "comment", prefix, str, "a string")
    _check_optional(item, "data", prefix, dict, "an object")
    return item


def _check_request_id(value: Any, prefix: str) -> None:
    if value is None:
        raise FeedbackValidationError(
            f"missing '{prefix}request_id': set it to the request id of the prediction"
        )
    if not isinstance(value, str) or not value:
        raise FeedbackValidationError(
            f"invalid '{prefix}request_id': expected a non-empty string, got {_json_type(value)}"
        )
    if len(value) > MAX_REQUEST_ID_LENGTH or not value.isprintable():
        raise FeedbackValidationError(
            f"invalid '{prefix}request_id': use at most {MAX_REQUEST_ID_LENGTH} printable "
            "characters, as in the X-Request-ID response header of the prediction"
        )


def _check_optional(
    item: dict[str, Any], field: str, prefix: str, kind: type, expected: str
) -> None:
    value = item.get(field)
    if value is not None and not isinstance(value, kind):
        raise FeedbackValidationError(
            f"invalid '{prefix}{field}': expected {expected} or null, got {_json_type(value)}"
        )


def _check_label(value: Any, prefix: str) -> None:
    if value is None or isinstance(value, _SCALAR_TYPES):
        return
    if isinstance(value, list) and all(isinstance(part, _SCALAR_TYPES) for part in value):
        return
    raise FeedbackValidationError(
        f"invalid '{prefix}label': expected a string, number, boolean or an array of them, "
        f"got {_json_type(value)}"
    )


def _check_score(value: Any, prefix: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FeedbackValidationError(
            f"invalid '{prefix}score': expected a number or null, got {_json_type(value)}"
        )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
