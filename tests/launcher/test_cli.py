"""Command-line surface: help text with units and defaults, usage errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mlmiddleware.launcher.cli import build_parser
from tests.launcher.support import LAUNCHER, launcher_env


def help_text(command: str) -> str:
    parser = build_parser()
    subparsers = parser._subparsers
    assert subparsers is not None
    action = subparsers._group_actions[0]
    return action.choices[command].format_help()  # type: ignore[index,no-any-return]


@pytest.mark.parametrize(
    "fragment",
    [
        "env PORT; default 8000",
        "env WEB_CONCURRENCY; default 1",
        "default 5 under Kubernetes, else 0",
        "MLMW_GRACEFUL_TIMEOUT; default 20",
        "seconds",
        "exit status",
    ],
)
def test_cli_run_help(fragment: str) -> None:
    assert fragment in " ".join(help_text("run").split())


def test_cli_exec_help() -> None:
    text = " ".join(help_text("exec").split())
    assert "--group" in text
    assert "128+N" in text


def test_cli_python_m_help() -> None:
    result = subprocess.run(
        [*LAUNCHER, "--help"], env=launcher_env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert "model-version" in result.stdout


def test_cli_run_missing_app(tmp_path: Path) -> None:
    result = subprocess.run(
        [*LAUNCHER, "run"],
        cwd=tmp_path,
        env=launcher_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "missing app" in result.stderr
