"""The JSON protocol of the batching endpoint: parse requests, encode responses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["ParsedRequest", "ProtocolError", "dump_json", "parse_json_request", "to_jsonable"]


class ProtocolError(Exception):
    """A request the endpoint cannot serve, with the HTTP status and error type to send."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """Items of one request, and how to name them in errors and in the response."""

    items: list[Any]
    # ``True`` for ``{"instances": [...]}`` (returned as ``predictions``), ``False`` for
    # ``{"inputs": ...}`` and raw bodies (returned as ``outputs``).
    batched: bool

    def field(self, index: int) -> str:
        """Name the JSON field of item ``index`` for an error message."""
        return f"instances[{index}]" if self.batched else "inputs"


def parse_json_request(body: bytes, *, max_items: int) -> ParsedRequest:
    """Parse ``{"inputs": item}`` or ``{"instances": [item, ...]}``, or raise ``ProtocolError``."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(
            400, "invalid_json", f"request body is not valid JSON ({exc}): send a JSON object"
        ) from exc

    if not isinstance(document, dict) or ("inputs" in document) == ("instances" in document):
        raise ProtocolError(
            422,
            "validation_error",
            'request body must be a JSON object with exactly one of "inputs" (one item) '
            'or "instances" (an array of items)',
        )

    if "inputs" in document:
        return ParsedRequest(items=[document["inputs"]], batched=False)

    instances = document["instances"]
    if not isinstance(instances, list):
        raise ProtocolError(
            422,
            "validation_error",
            f'"instances" must be a JSON array of items, got {type(instances).__name__}',
        )
    if len(instances) > max_items:
        raise ProtocolError(
            413,
            "payload_too_large",
            f'"instances" has {len(instances)} items, more than max_items_per_request='
            f"{max_items}: split the request",
        )
    return ParsedRequest(items=instances, batched=True)


def to_jsonable(value: Any) -> Any:
    """Convert what orjson cannot encode natively: tensors, non-contiguous arrays, bytes."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        tensor = value.detach().cpu()
        try:
            return tensor.numpy()
        except TypeError:
            # bfloat16 and other dtypes without a numpy equivalent.
            return tensor.float().numpy()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("latin-1")
    raise TypeError(f"{type(value).__name__} is not JSON serializable: pass encode= to convert it")


def dump_json(document: Any) -> bytes:
    """Encode ``document`` with orjson; numpy arrays and tensors are encoded without loops."""
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY, default=to_jsonable)
