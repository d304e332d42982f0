"""A newcomer's first steps: the README's development commands in a fresh clone.

The clone contains only what is committed, so a file that exists in this working tree but was
never committed, or a dependency missing from ``pyproject.toml`` or the noxfile, fails here.
``nox -s demo`` runs in full. ``nox -s tests`` runs with ``-- --collect-only -q``: the whole
suite would run this test again inside itself and take several minutes more, while
collecting still proves that the session installs, and that every test module imports in
the clone. The first run builds two nox virtualenvs with torch and the examples extra.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import ROOT

README = ROOT / "README.md"
# Bounds for a first run on 2 busy cores, when nox installs torch into a new virtualenv.
DEMO_TIMEOUT_S = 1200
TESTS_TIMEOUT_S = 900
CLONE_TIMEOUT_S = 120


def readme_commands() -> list[str]:
    """Return the commands of the first code block under the README's Development heading.

    Comments after ``#`` are dropped, the way a shell drops them.
    """
    text = README.read_text(encoding="utf-8")
    section = re.search(r"^## Development\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert section is not None, f"{README} has no '## Development' section"

    block = re.search(r"^```[^\n]*\n(.*?)^```", section.group(1), re.MULTILINE | re.DOTALL)
    assert block is not None, "the Development section of README.md has no code block"

    commands = []
    for line in block.group(1).splitlines():
        command = line.split("#", 1)[0].strip()
        if command:
            commands.append(command)
    return commands


def nox_directory() -> str | None:
    """Return the directory of the ``nox`` executable: on PATH, else beside this Python."""
    found = shutil.which("nox")
    if found is not None:
        return str(Path(found).parent)
    beside = Path(sys.executable).parent / "nox"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside.parent)
    return None


def newcomer_env(nox_dir: str) -> dict[str, str]:
    env = dict(os.environ)
    # Appended, so that a virtualenv around this test does not provide nox's python3.11.
    env["PATH"] = os.pathsep.join([env.get("PATH", ""), nox_dir])
    # Settings of this test run that a newcomer's shell would not have.
    for name in ("PROMETHEUS_MULTIPROC_DIR", "PYTHONPATH", "PYTEST_ADDOPTS", "VIRTUAL_ENV"):
        env.pop(name, None)
    # A nested suite run must not clone and build again.
    env["MLMW_SKIP_NEWCOMER"] = "1"
    return env


def run_logged(
    command: list[str], *, cwd: Path, env: dict[str, str], log: Path, timeout: float
) -> tuple[int, float]:
    """Run ``command`` with its output in ``log``, and return its exit status and duration in s."""
    started = time.monotonic()
    with log.open("wb") as output:
        try:
            completed = subprocess.run(
                command,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"{shlex.join(command)} did not finish within {timeout} s; see {log}")
    return completed.returncode, time.monotonic() - started


def tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def test_readme_development_commands() -> None:
    assert readme_commands() == ["nox -s demo", "nox -s tests"]


@pytest.mark.slow
@pytest.mark.timeout(DEMO_TIMEOUT_S + TESTS_TIMEOUT_S + CLONE_TIMEOUT_S + 60)
def test_newcomer_clean_clone(tmp_path: Path) -> None:
    if os.environ.get("MLMW_SKIP_NEWCOMER") == "1":
        pytest.skip("MLMW_SKIP_NEWCOMER=1 is set")
    nox_dir = nox_directory()
    if nox_dir is None:
        pytest.skip("nox is not installed: run `python3 -m pip install nox`")
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip(f"{ROOT} is not a git checkout, so there is nothing to clone")

    demo, tests = (shlex.split(command) for command in readme_commands())
    clone = tmp_path / "clone"
    logs = tmp_path / "logs"
    logs.mkdir()
    env = newcomer_env(nox_dir)

    try:
        subprocess.run(
            ["git", "clone", "--quiet", str(ROOT), str(clone)],
            check=True,
            timeout=CLONE_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )

        demo_log = logs / "demo.log"
        status, demo_seconds = run_logged(
            demo, cwd=clone, env=env, log=demo_log, timeout=DEMO_TIMEOUT_S
        )
        print(f"{shlex.join(demo)}: status {status} after {demo_seconds:.0f} s")
        assert status == 0, f"{shlex.join(demo)} exited with {status}:\n{tail(demo_log)}"
        assert "The launcher exited with status 0" in demo_log.read_text(encoding="utf-8")

        collect = [*tests, "--", "--collect-only", "-q"]
        tests_log = logs / "tests.log"
        status, tests_seconds = run_logged(
            collect, cwd=clone, env=env, log=tests_log, timeout=TESTS_TIMEOUT_S
        )
        print(f"{shlex.join(collect)}: status {status} after {tests_seconds:.0f} s")
        assert status == 0, f"{shlex.join(collect)} exited with {status}:\n{tail(tests_log)}"
        collected = re.search(r"^(\d+) tests? collected", tests_log.read_text(), re.MULTILINE)
        assert collected is not None, f"no collection summary in:\n{tail(tests_log)}"
        assert int(collected.group(1)) > 0
    finally:
        # The clone contains two nox virtualenvs with torch in each.
        shutil.rmtree(clone, ignore_errors=True)
