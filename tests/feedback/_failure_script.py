"""Drive a feedback capture against a failing directory and print what happened as JSON.

Run as ``python -m tests.feedback._failure_script MODE DIRECTORY`` in a subprocess.
In ``unwritable`` mode the caller has made DIRECTORY unwritable for this process. In
``full`` mode the script sets a 4 KiB file-size limit (``RLIMIT_FSIZE``) to act as a full
disk, then lifts it to show that the records kept in memory are written.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client import CollectorRegistry

from mlmiddleware.feedback import (
    FeedbackApp,
    FeedbackCapture,
    JsonlFeedbackSink,
    SinkError,
    prediction_record,
)

LIMIT_BYTES = 4096
WAIT_TIMEOUT = 20.0


def _wait_until(condition: Any) -> None:
    deadline = time.monotonic() + WAIT_TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in the failure script")
        time.sleep(0.01)


def _stored_lines(directory: Path) -> int:
    count = 0
    for path in directory.glob("feedback-*"):
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            raise AssertionError(f"{path.name} ends in a partial line")
        for line in data.splitlines():
            orjson.loads(line)
            count += 1
    return count


def _post_status(capture: FeedbackCapture) -> int:
    async def post() -> int:
        transport = httpx.ASGITransport(app=FeedbackApp(capture, max_items=1))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.post("/feedback", json={"request_id": "p1"})
            return response.status_code

    return asyncio.run(post())


def _ready_error(capture: FeedbackCapture) -> str | None:
    try:
        capture.check_ready()
    except SinkError as exc:
        return str(exc)
    return None


def _record(index: int) -> dict[str, Any]:
    return prediction_record(request_id=f"r{index}", model="m", input="x" * 40, output=index)


def run_unwritable(directory: Path) -> dict[str, Any]:
    registry = CollectorRegistry()
    capture = FeedbackCapture(JsonlFeedbackSink(directory), retry_interval=0.05, registry=registry)
    capture.start()
    result: dict[str, Any] = {"healthy_after_start": capture.healthy}
    for index in range(3):
        capture.write(_record(index))
    time.sleep(0.2)

    result["queued"] = capture.queued_records
    result["last_error"] = capture.last_error
    result["ready_error"] = _ready_error(capture)
    result["post_status"] = _post_status(capture)
    capture.close()
    result["dropped_at_close"] = registry.get_sample_value("feedback_records_dropped_total")
    return result


def run_full(directory: Path) -> dict[str, Any]:
    # Past RLIMIT_FSIZE the kernel sends SIGXFSZ, which kills the process unless ignored;
    # ignored, the write fails with EFBIG like a full disk fails with ENOSPC.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT_BYTES, hard))

    registry = CollectorRegistry()
    sink = JsonlFeedbackSink(directory)
    capture = FeedbackCapture(sink, max_queue=40, retry_interval=0.05, registry=registry)
    total = 100
    for index in range(total):
        capture.write(_record(index))
    _wait_until(lambda: not capture.healthy)
    time.sleep(0.2)

    result: dict[str, Any] = {"total": total}
    result["stored"] = _stored_lines(directory)
    result["stored_bytes"] = sum(path.stat().st_size for path in directory.glob("feedback-*"))
    result["queued"] = capture.queued_records
    result["dropped"] = registry.get_sample_value("feedback_records_dropped_total")
    result["last_error"] = capture.last_error
    result["ready_error"] = _ready_error(capture)
    result["post_status"] = _post_status(capture)

    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    _wait_until(lambda: capture.healthy and capture.queued_records == 0)
    result["stored_after_recovery"] = _stored_lines(directory)
    capture.close()
    result["stored_after_close"] = _stored_lines(directory)
    return result


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
    mode, directory = sys.argv[1], Path(sys.argv[2])
    result = run_unwritable(directory) if mode == "unwritable" else run_full(directory)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
