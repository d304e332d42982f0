"""Reaping, descendants, exit-code conversion and subreaper registration."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from mlmiddleware.launcher.exit_codes import exit_code_of
from mlmiddleware.launcher.reaper import descendants, reap_children
from tests.launcher.support import wait_until


def test_exit_code_of_exit() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(42)
    _, status = os.waitpid(pid, 0)
    assert exit_code_of(status) == 42


def test_exit_code_of_signal() -> None:
    pid = os.fork()
    if pid == 0:
        os.kill(os.getpid(), signal.SIGUSR2)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert exit_code_of(status) == 128 + signal.SIGUSR2


def test_reap_children_collects_all() -> None:
    processes = [subprocess.Popen(["sh", "-c", f"exit {code}"]) for code in (3, 4, 5)]
    pids = {process.pid: code for process, code in zip(processes, (3, 4, 5), strict=True)}
    reaped: dict[int, int] = {}

    def collect() -> bool:
        reaped.update(reap_children())
        return set(pids) <= set(reaped)

    wait_until(collect, timeout=20)
    for process in processes:
        process.returncode = reaped[process.pid]
    assert {pid: reaped[pid] for pid in pids} == pids


def test_descendants_includes_grandchildren() -> None:
    child = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & wait"])
    try:
        found = wait_until(lambda: len(descendants(child.pid)) == 2 and descendants(), timeout=20)
        assert child.pid in found
        assert len(descendants(child.pid)) == 2
    finally:
        for pid in [*descendants(child.pid), child.pid]:
            os.kill(pid, signal.SIGKILL)
        child.wait(timeout=10)


SUBREAPER_CHECK = """
import os, sys, time
from mlmiddleware.launcher.reaper import become_subreaper
assert become_subreaper()
pid = os.fork()
if pid == 0:
    # The middle process exits at once, leaving its own child as an orphan.
    if os.fork() == 0:
        time.sleep(0.5)
        os._exit(0)
    os._exit(0)
os.waitpid(pid, 0)
time.sleep(0.2)
orphan_pid, status = os.waitpid(-1, 0)
print("adopted" if orphan_pid != pid else "missing")
"""


def test_become_subreaper_adopts_orphans() -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", SUBREAPER_CHECK], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "adopted"
    assert time.monotonic() - started < 30
