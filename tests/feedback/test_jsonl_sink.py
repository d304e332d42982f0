"""JsonlFeedbackSink: per-process files, atomic rotation, recovery and option checks."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import orjson
import pytest

from mlmiddleware.feedback import JsonlFeedbackSink


def _record(index: int) -> dict[str, object]:
    return {"id": str(index), "kind": "feedback", "request_id": f"r{index}"}


def _lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_sink_file_name(tmp_path: Path) -> None:
    sink = JsonlFeedbackSink(tmp_path)
    sink.write(_record(1))
    sink.flush()
    host = socket.gethostname()
    assert sink.active_path == tmp_path / f"feedback-{host}-{os.getpid()}-1.jsonl.active"
    sink.close()
    assert [path.name for path in tmp_path.iterdir()] == [f"feedback-{host}-{os.getpid()}-1.jsonl"]


def test_sink_write_buffers_until_flush(tmp_path: Path) -> None:
    sink = JsonlFeedbackSink(tmp_path)
    sink.write(_record(1))
    assert list(tmp_path.iterdir()) == []
    sink.flush()
    assert sink.active_path is not None
    assert _lines(sink.active_path) == [_record(1)]
    sink.close()


def test_sink_rotation_renames(tmp_path: Path) -> None:
    sink = JsonlFeedbackSink(tmp_path, rotate_bytes=100)
    for index in range(10):
        sink.write(_record(index))
        sink.flush()
    closed = sorted(tmp_path.glob("*.jsonl"))
    active = list(tmp_path.glob("*.active"))
    assert len(closed) == 3
    assert len(active) == 1
    assert all(path.read_bytes().endswith(b"\n") for path in closed)
    sink.close()
    records = [record for path in sorted(tmp_path.glob("*.jsonl")) for record in _lines(path)]
    assert sorted(str(record["id"]) for record in records) == sorted(
        str(index) for index in range(10)
    )


def test_sink_close_without_records(tmp_path: Path) -> None:
    sink = JsonlFeedbackSink(tmp_path)
    sink.close()
    assert list(tmp_path.iterdir()) == []


def test_sink_write_after_close(tmp_path: Path) -> None:
    sink = JsonlFeedbackSink(tmp_path)
    sink.close()
    with pytest.raises(ValueError, match="closed"):
        sink.write(_record(1))


def test_sink_fsync_flush(tmp_path: Path) -> None:
    sink = JsonlFeedbackSink(tmp_path, fsync=True, rotate_bytes=60)
    sink.write(_record(1))
    sink.write(_record(2))
    sink.flush()
    sink.close()
    assert len(list(tmp_path.glob("*.jsonl"))) == 1


def test_sink_recovers_orphan(tmp_path: Path) -> None:
    host = socket.gethostname()
    orphan = tmp_path / f"feedback-{host}-{os.getpid()}-1.jsonl.active"
    orphan.write_bytes(b'{"id":"old"}\n{"id":"cut')
    sink = JsonlFeedbackSink(tmp_path)
    sink.write(_record(1))
    sink.flush()
    recovered = tmp_path / f"feedback-{host}-{os.getpid()}-1.jsonl"
    assert recovered.read_bytes() == b'{"id":"old"}\n'
    assert sink.active_path == tmp_path / f"feedback-{host}-{os.getpid()}-2.jsonl.active"
    sink.close()


def test_sink_skips_existing_names(tmp_path: Path) -> None:
    host = socket.gethostname()
    existing = tmp_path / f"feedback-{host}-{os.getpid()}-1.jsonl"
    existing.write_bytes(b'{"id":"old"}\n')
    sink = JsonlFeedbackSink(tmp_path)
    sink.write(_record(1))
    sink.close()
    assert existing.read_bytes() == b'{"id":"old"}\n'
    assert len(list(tmp_path.glob("*.jsonl"))) == 2


def test_sink_check_creates_directory(tmp_path: Path) -> None:
    sink = JsonlFeedbackSink(tmp_path / "new" / "dir")
    sink.check()
    assert (tmp_path / "new" / "dir").is_dir()
    assert list((tmp_path / "new" / "dir").iterdir()) == []


def test_sink_check_not_a_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    sink = JsonlFeedbackSink(blocker / "dir")
    with pytest.raises(OSError):
        sink.check()


@pytest.mark.parametrize("rotate_bytes", [0, -1, 1.5, True])
def test_sink_invalid_rotate_bytes(tmp_path: Path, rotate_bytes: object) -> None:
    with pytest.raises(ValueError, match="rotate_bytes"):
        JsonlFeedbackSink(tmp_path, rotate_bytes=rotate_bytes)  # type: ignore[arg-type]


def test_sink_invalid_prefix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="prefix"):
        JsonlFeedbackSink(tmp_path, prefix="a/b")
