"""Record builders: sampling, timestamps, payload digests and feedback fields."""

from __future__ import annotations

import re

import numpy as np

from mlmiddleware.feedback.records import (
    encode_record,
    feedback_record,
    is_sampled,
    prediction_record,
    utc_timestamp,
)

_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def test_sampling_is_deterministic() -> None:
    first = [is_sampled(f"req-{index}", 0.1) for index in range(2000)]
    second = [is_sampled(f"req-{index}", 0.1) for index in range(2000)]
    assert first == second


def test_sampling_rate_is_close() -> None:
    # Bound, not a timing: 10 % of 20,000 hashed ids lands well inside 8-12 %.
    sampled = sum(is_sampled(f"req-{index}", 0.1) for index in range(20_000))
    assert 1600 < sampled < 2400


def test_sampling_rate_bounds() -> None:
    assert is_sampled("any", 1.0)
    assert not is_sampled("any", 0.0)


def test_timestamp_format() -> None:
    assert utc_timestamp(0.25) == "1970-01-01T00:00:00.250000Z"
    assert _TIMESTAMP.match(utc_timestamp())


def test_prediction_record_fields() -> None:
    record = prediction_record(
        request_id="r1", model="m", input=[1, 2], output={"y": 3}, service="s", model_version="v"
    )
    assert record["kind"] == "prediction"
    assert record["request_id"] == "r1"
    assert record["input"] == [1, 2]
    assert record["output"] == {"y": 3}
    assert record["model_version"] == "v"
    assert len(record["id"]) == 32
    assert _TIMESTAMP.match(record["ts"])


def test_prediction_record_digest_large() -> None:
    record = prediction_record(
        request_id="r1", model="m", input="x" * 100, output=1, max_payload_bytes=50
    )
    assert set(record["input"]) == {"sha256", "size_bytes"}
    assert record["input"]["size_bytes"] == 102
    assert record["output"] == 1


def test_feedback_record_fields() -> None:
    item = {"request_id": "r1", "label": "cat", "score": 0.9, "data": {"k": 1}}
    record = feedback_record(item, service="s", model_version="v", feedback_request_id="f1")
    assert record["kind"] == "feedback"
    assert record["request_id"] == "r1"
    assert record["label"] == "cat"
    assert record["score"] == 0.9
    assert record["comment"] is None
    assert record["data"] == {"k": 1}
    assert record["feedback_request_id"] == "f1"


def test_encode_record_numpy() -> None:
    line = encode_record({"output": np.array([1.5, 2.0]), "other": object.__name__})
    assert line == b'{"output":[1.5,2.0],"other":"object"}\n'
