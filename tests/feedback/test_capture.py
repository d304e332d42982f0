"""FeedbackCapture: queueing, full-queue policies, sink failures, metrics and sinks."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mlmiddleware.feedback import (
    CallableFeedbackSink,
    FeedbackCapture,
    LoggingFeedbackSink,
    QueueFullError,
    SinkError,
    as_capture,
)
from tests.feedback._fakes import FailingSink, GateSink, wait_until


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _record(index: int, kind: str = "feedback") -> dict[str, object]:
    return {"id": str(index), "kind": kind, "request_id": f"r{index}"}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def _fill(capture: FeedbackCapture, sink: GateSink, count: int) -> None:
    """Hold the writer inside ``flush`` on record 0, then queue records 1..count."""
    capture.write(_record(0))
    assert sink.entered.wait(20.0)
    for index in range(1, count + 1):
        capture.write(_record(index))


def test_capture_writes_and_counts(registry: CollectorRegistry) -> None:
    sink = GateSink()
    capture = FeedbackCapture(sink, registry=registry)
    capture.write(_record(1))
    capture.write(_record(2, kind="prediction"))
    capture.flush(20.0)
    capture.close()
    samples = _samples(registry)
    assert [record["id"] for record in sink.records] == ["1", "2"]
    assert samples[("feedback_records_total", (("kind", "feedback"),))] == 1.0
    assert samples[("feedback_records_total", (("kind", "prediction"),))] == 1.0
    assert samples[("feedback_records_dropped_total", ())] == 0.0
    assert sink.closed


def test_capture_drop_policy_counts(registry: CollectorRegistry) -> None:
    sink = GateSink(open_gate=False)
    capture = FeedbackCapture(sink, max_queue=3, registry=registry)
    _fill(capture, sink, 2)
    capture.write(_record(3))
    assert capture.queued_records == 3
    assert _samples(registry)[("feedback_records_dropped_total", ())] == 1.0
    sink.gate.set()
    capture.close()
    assert [record["id"] for record in sink.records] == ["0", "1", "2"]


def test_capture_block_policy_waits(registry: CollectorRegistry) -> None:
    sink = GateSink(open_gate=False)
    capture = FeedbackCapture(
        sink, max_queue=3, policy="block", block_timeout=20.0, registry=registry
    )
    _fill(capture, sink, 2)
    writer = threading.Thread(target=capture.write, args=(_record(3),))
    writer.start()
    sink.gate.set()
    writer.join()
    capture.close()
    assert [record["id"] for record in sink.records] == ["0", "1", "2", "3"]
    assert _samples(registry)[("feedback_records_dropped_total", ())] == 0.0


def test_capture_block_policy_times_out(registry: CollectorRegistry) -> None:
    sink = GateSink(open_gate=False)
    capture = FeedbackCapture(
        sink, max_queue=3, policy="block", block_timeout=0.01, registry=registry
    )
    _fill(capture, sink, 2)
    capture.write(_record(3))
    assert _samples(registry)[("feedback_records_dropped_total", ())] == 1.0
    sink.gate.set()
    capture.close()


def test_capture_write_on_loop_never_waits(registry: CollectorRegistry) -> None:
    sink = GateSink(open_gate=False)
    # A 600 s block_timeout would trip the test timeout if write() waited on the loop.
    capture = FeedbackCapture(
        sink, max_queue=3, policy="block", block_timeout=600.0, registry=registry
    )
    _fill(capture, sink, 2)

    async def write_on_loop() -> None:
        capture.write(_record(3))

    asyncio.run(write_on_loop())
    assert _samples(registry)[("feedback_records_dropped_total", ())] == 1.0
    sink.gate.set()
    capture.close()


def test_capture_wait_queue_full(registry: CollectorRegistry) -> None:
    sink = GateSink(open_gate=False)
    capture = FeedbackCapture(sink, max_queue=3, registry=registry)
    _fill(capture, sink, 2)
    with pytest.raises(QueueFullError, match="queue is full"):
        asyncio.run(capture.write_and_wait([_record(3)]))
    sink.gate.set()
    capture.close()


def test_capture_wait_returns_after_flush(registry: CollectorRegistry) -> None:
    sink = GateSink()
    capture = FeedbackCapture(sink, registry=registry)
    asyncio.run(capture.write_and_wait([_record(1), _record(2)]))
    assert [record["id"] for record in sink.records] == ["1", "2"]
    capture.close()


def test_capture_failure_keeps_records(registry: CollectorRegistry) -> None:
    sink = FailingSink()
    capture = FeedbackCapture(sink, retry_interval=0.01, registry=registry)
    capture.write(_record(1))
    wait_until(lambda: sink.failures >= 2)
    assert not capture.healthy
    assert capture.queued_records == 1
    assert capture.last_error is not None
    assert sink.path in capture.last_error
    with pytest.raises(SinkError, match="No space left"):
        capture.check_ready()

    sink.recover()
    wait_until(lambda: capture.healthy)
    capture.close()
    assert [record["id"] for record in sink.records] == ["1"]
    assert _samples(registry)[("feedback_records_dropped_total", ())] == 0.0


def test_capture_failure_logs_path(
    registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    sink = FailingSink()
    capture = FeedbackCapture(sink, retry_interval=0.01, registry=registry)
    with caplog.at_level(logging.ERROR, logger="mlmiddleware.feedback"):
        capture.write(_record(1))
        wait_until(lambda: not capture.healthy)
        sink.recover()
        capture.close()
    errors = [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 1
    assert sink.path in errors[0]
    assert "No space left on device" in errors[0]


def test_capture_failure_fails_waiter(registry: CollectorRegistry) -> None:
    sink = FailingSink()
    capture = FeedbackCapture(sink, retry_interval=0.01, registry=registry)
    with pytest.raises(SinkError):
        asyncio.run(capture.write_and_wait([_record(1)]))
    assert capture.queued_records == 0
    sink.recover()
    capture.close()
    assert sink.records == []


def test_capture_close_while_failing(
    registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    sink = FailingSink()
    capture = FeedbackCapture(sink, retry_interval=0.01, registry=registry)
    capture.write(_record(1))
    capture.write(_record(2))
    wait_until(lambda: not capture.healthy)
    with caplog.at_level(logging.ERROR, logger="mlmiddleware.feedback"):
        capture.close()
    assert _samples(registry)[("feedback_records_dropped_total", ())] == 2.0
    assert "dropped 2 unwritten records" in caplog.text


def test_capture_bad_record_dropped(
    registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    sink = GateSink()
    capture = FeedbackCapture(sink, registry=registry)
    with caplog.at_level(logging.ERROR, logger="mlmiddleware.feedback"):
        capture.write({"id": "bad1", "kind": "prediction", "request_id": "r9", "bad": True})
        capture.write(_record(2))
        capture.flush(20.0)
    capture.close()
    assert [record["id"] for record in sink.records] == ["2"]
    assert _samples(registry)[("feedback_records_dropped_total", ())] == 1.0
    assert "bad1" in caplog.text
    assert "r9" in caplog.text


def test_capture_write_after_close(registry: CollectorRegistry) -> None:
    sink = GateSink()
    capture = FeedbackCapture(sink, registry=registry)
    capture.close()
    capture.write(_record(1))
    assert sink.records == []
    assert _samples(registry)[("feedback_records_dropped_total", ())] == 1.0


def test_capture_close_drains_queue(registry: CollectorRegistry) -> None:
    sink = GateSink()
    capture = FeedbackCapture(sink, batch_size=3, registry=registry)
    for index in range(10):
        capture.write(_record(index))
    capture.close()
    assert [record["id"] for record in sink.records] == [str(index) for index in range(10)]


def test_capture_flush_timeout(registry: CollectorRegistry) -> None:
    sink = GateSink(open_gate=False)
    capture = FeedbackCapture(sink, registry=registry)
    capture.write(_record(1))
    with pytest.raises(TimeoutError, match="timed out"):
        capture.flush(0.01)
    sink.gate.set()
    capture.close()


def test_capture_shared_registry(registry: CollectorRegistry) -> None:
    first = FeedbackCapture(GateSink(), registry=registry)
    second = FeedbackCapture(GateSink(), registry=registry)
    first.write(_record(1))
    second.write(_record(2))
    first.close()
    second.close()
    assert _samples(registry)[("feedback_records_total", (("kind", "feedback"),))] == 2.0


def test_as_capture_reuses(registry: CollectorRegistry) -> None:
    sink = GateSink()
    capture = as_capture(sink, registry=registry)
    assert as_capture(sink) is capture
    assert as_capture(capture) is capture
    capture.close()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_queue", 0),
        ("policy", "wait"),
        ("block_timeout", -1.0),
        ("batch_size", 0),
        ("retry_interval", 0.0),
    ],
)
def test_capture_invalid_option(option: str, value: object) -> None:
    with pytest.raises(ValueError, match=option):
        FeedbackCapture(GateSink(), **{option: value})  # type: ignore[arg-type]


def test_capture_rejects_non_sink() -> None:
    with pytest.raises(TypeError, match="no write"):
        FeedbackCapture(object())  # type: ignore[arg-type]


def test_logging_sink_record(caplog: pytest.LogCaptureFixture) -> None:
    sink = LoggingFeedbackSink()
    with caplog.at_level(logging.INFO, logger="mlmiddleware.feedback"):
        sink.write(_record(1))
        sink.flush()
    assert len(caplog.records) == 1
    assert caplog.records[0].name == "mlmiddleware.feedback"
    assert caplog.records[0].feedback_record == _record(1)  # type: ignore[attr-defined]


def test_callable_sink_calls() -> None:
    calls: list[object] = []
    sink = CallableFeedbackSink(
        calls.append, flush=lambda: calls.append("flush"), close=lambda: calls.append("close")
    )
    sink.write(_record(1))
    sink.close()
    assert calls == [_record(1), "flush", "close"]
