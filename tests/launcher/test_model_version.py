"""``mlmiddleware model-version``: newest matching tag in version order, clear errors."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mlmiddleware.launcher.model_version import ModelVersionError, newest_tag
from tests.launcher.support import LAUNCHER, launcher_env

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@localhost", *args],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q")
    git(tmp_path, "commit", "-q", "--allow-empty", "-m", "initial")
    for tag in ("model-v1.9.0", "model-v1.10.0", "model-v1.2.0", "other-v9"):
        git(tmp_path, "tag", tag)
    return tmp_path


def test_model_version_sorting(repo: Path) -> None:
    assert newest_tag(repository=str(repo)) == "model-v1.10.0"


def test_model_version_pattern(repo: Path) -> None:
    assert newest_tag("other-v*", repository=str(repo)) == "other-v9"


def test_model_version_no_match(repo: Path) -> None:
    with pytest.raises(ModelVersionError, match="no git tag matches 'serving-v\\*'"):
        newest_tag("serving-v*", repository=str(repo))


def test_model_version_no_repository(tmp_path: Path) -> None:
    with pytest.raises(ModelVersionError, match="not inside a git repository"):
        newest_tag(repository=str(tmp_path))


def test_model_version_cli(repo: Path) -> None:
    result = subprocess.run(
        [*LAUNCHER, "model-version", "--pattern", "model-v1.*"],
        cwd=repo,
        env=launcher_env({"GIT_CEILING_DIRECTORIES": str(repo.parent)}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout == "model-v1.10.0\n"


def test_model_version_cli_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [*LAUNCHER, "model-version"],
        cwd=tmp_path,
        env=launcher_env({"GIT_CEILING_DIRECTORIES": str(tmp_path.parent)}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "not inside a git repository" in result.stderr
