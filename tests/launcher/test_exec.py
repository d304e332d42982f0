"""Exec mode end to end: status pass-through, signal forwarding and cleanup.

Orphan reaping is tested side by side with tini and dumb-init in test_peers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.launcher.support import (
    APP_DIR,
    LAUNCHER,
    children_of,
    descendants_of,
    is_alive,
    kill_tree,
    launcher_env,
    wait_for_child,
    wait_until,
)


def start_exec(*args: str, new_session: bool = False) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*LAUNCHER, "exec", *args],
        env=launcher_env(),
        start_new_session=new_session,
        stdout=subprocess.DEVNULL,
    )


def test_exec_status_all_codes() -> None:
    result = subprocess.run(
        [sys.executable, str(APP_DIR / "exec_statuses.py")],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )
    statuses = {int(code): status for code, status in json.loads(result.stdout).items()}
    mismatches = {code: status for code, status in statuses.items() if status != code}
    assert len(statuses) == 256
    assert mismatches == {}


@pytest.mark.parametrize("code", [0, 1, 42, 255])
def test_exec_status_cli(code: int) -> None:
    launcher = start_exec("--", "sh", "-c", f"exit {code}")
    assert launcher.wait(timeout=30) == code


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2])
def test_exec_signal_untrapped(sig: signal.Signals) -> None:
    launcher = start_exec("--", "sleep", "1000")
    try:
        child = wait_for_child(launcher)
        os.kill(launcher.pid, sig)
        status = launcher.wait(timeout=30)
    finally:
        kill_tree(launcher)
    assert status == 128 + sig
    assert not is_alive(child)


def test_exec_signal_trapped_by_child() -> None:
    launcher = start_exec("--", "sh", "-c", "trap 'exit 9' USR1; while :; do sleep 0.05; done")
    try:
        wait_for_child(launcher)
        time.sleep(0.3)  # Let sh install its trap before the signal arrives.
        os.kill(launcher.pid, signal.SIGUSR1)
        status = launcher.wait(timeout=30)
    finally:
        kill_tree(launcher)
    assert status == 9


def test_exec_missing_command() -> None:
    launcher = start_exec("--", "/nonexistent/command")
    assert launcher.wait(timeout=30) == 127


def test_exec_no_command() -> None:
    launcher = start_exec()
    assert launcher.wait(timeout=30) == 2


@pytest.mark.slow
def test_exec_kills_setsid_grandchild(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = f'setsid sleep 1000 & echo $! > "{pidfile}"; exec sleep 1000'
    launcher = start_exec("--graceful-timeout", "2", "--", "sh", "-c", script)
    try:
        wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=20)
        grandchild = int(pidfile.read_text())
        os.kill(launcher.pid, signal.SIGTERM)
        status = launcher.wait(timeout=30)
        survivors = descendants_of(launcher.pid)
    finally:
        kill_tree(launcher)
    assert status == 128 + signal.SIGTERM
    assert not is_alive(grandchild)
    assert survivors == []


@pytest.mark.slow
def test_exec_kills_orphans_of_killed_child(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    # The grandchildren ignore SIGTERM, so only the SIGKILL at the graceful timeout ends them.
    script = (
        f'for i in 1 2 3; do sh -c \'trap "" TERM; sleep 1000\' & done; echo $! > "{pidfile}"; wait'
    )
    launcher = start_exec("--graceful-timeout", "1", "--", "sh", "-c", script)
    try:
        wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=20)
        child = int(children_of(launcher.pid, zombies=False)[0])
        wait_until(lambda: len(descendants_of(launcher.pid)) >= 7, timeout=20)
        os.kill(child, signal.SIGKILL)
        time.sleep(0.3)
        orphans = descendants_of(launcher.pid)
        started = time.monotonic()
        os.kill(launcher.pid, signal.SIGTERM)
        status = launcher.wait(timeout=30)
        elapsed = time.monotonic() - started
        survivors = [pid for pid in orphans if is_alive(pid)]
    finally:
        kill_tree(launcher)
    assert len(orphans) >= 3
    assert status == 128 + signal.SIGKILL
    assert survivors == []
    # A bound, not a timing target: SIGKILL comes at the 1 s graceful timeout.
    assert elapsed < 10


@pytest.mark.slow
def test_exec_graceful_timeout_kills_child() -> None:
    launcher = start_exec("--graceful-timeout", "1", "--", "sh", "-c", "trap '' TERM; sleep 1000")
    try:
        wait_for_child(launcher)
        time.sleep(0.3)
        os.kill(launcher.pid, signal.SIGTERM)
        status = launcher.wait(timeout=30)
    finally:
        kill_tree(launcher)
    assert status == 128 + signal.SIGKILL


def test_exec_group_forwarding(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = f'sleep 1000 & echo $! > "{pidfile}"; wait'
    launcher = start_exec("--group", "--", "sh", "-c", script)
    try:
        wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=20)
        grandchild = int(pidfile.read_text())
        os.kill(launcher.pid, signal.SIGTERM)
        status = launcher.wait(timeout=30)
    finally:
        kill_tree(launcher)
    # sh waits in `wait`, so SIGTERM to the group ends sh and its sleep together.
    assert status == 128 + signal.SIGTERM
    assert not is_alive(grandchild)
