"""An unwritable directory and a full disk, each in a subprocess with its own limits."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support import ROOT

_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE = 1
_CAP_DAC_READ_SEARCH = 2


def _drop_file_permission_override() -> None:
    # Root ignores directory permissions through CAP_DAC_OVERRIDE; dropping it from the
    # bounding set before exec makes the child obey them like any other user.
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def _run_script(
    mode: str, directory: Path, preexec: Callable[[], None] | None = None
) -> tuple[dict[str, Any], str]:
    command = [sys.executable, "-m", "tests.feedback._failure_script", mode, str(directory)]
    completed = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=preexec,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return orjson.loads(completed.stdout.strip().splitlines()[-1]), completed.stderr


def test_unwritable_directory(tmp_path: Path) -> None:
    directory = tmp_path / "readonly"
    directory.mkdir()
    directory.chmod(0o555)
    preexec = _drop_file_permission_override if os.geteuid() == 0 else None

    result, stderr = _run_script("unwritable", directory, preexec)

    assert result["healthy_after_start"] is False
    assert result["queued"] == 3
    assert "Permission denied" in result["last_error"]
    assert str(directory) in result["last_error"]
    assert "Permission denied" in result["ready_error"]
    assert result["post_status"] == 503
    assert result["dropped_at_close"] == 3.0
    assert f"ERROR Feedback sink JsonlFeedbackSink('{directory}') failed" in stderr
    assert list(directory.iterdir()) == []


def test_not_a_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")

    result, stderr = _run_script("unwritable", blocker / "feedback")

    assert result["healthy_after_start"] is False
    assert "Not a directory" in result["last_error"]
    assert result["post_status"] == 503
    assert "ERROR" in stderr


def test_full_disk_keeps_records(tmp_path: Path) -> None:
    result, stderr = _run_script("full", tmp_path)

    assert result["stored_bytes"] <= 4096
    assert 0 < result["queued"] <= 40
    assert result["dropped"] > 0
    assert result["stored"] + result["queued"] + result["dropped"] == result["total"]
    assert "File too large" in result["last_error"]
    assert str(tmp_path) in result["last_error"]
    assert "File too large" in result["ready_error"]
    assert result["post_status"] == 503
    assert "ERROR Feedback sink" in stderr
    assert result["stored_after_recovery"] == result["stored"] + result["queued"]
    assert result["stored_after_close"] == result["stored_after_recovery"]
    assert list(tmp_path.glob("*.active")) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping capabilities needs root")
def test_capability_drop_applies(tmp_path: Path) -> None:
    # Guards test_unwritable_directory: the child must really lose its override.
    directory = tmp_path / "readonly"
    directory.mkdir()
    directory.chmod(0o555)
    command = [sys.executable, "-c", f"open({str(directory / 'x')!r}, 'w')"]
    completed = subprocess.run(
        command, capture_output=True, preexec_fn=_drop_file_permission_override, check=False
    )
    assert completed.returncode != 0
