"""Crash-loop detection: fast failures inside the window, and slow ones in a row."""

from __future__ import annotations

from mlmiddleware.launcher.config import load_run_config
from mlmiddleware.launcher.supervisor import CRASH_LOOP_FAILURES, Supervisor


def supervisor() -> Supervisor:
    return Supervisor(load_run_config({"app": "app:app"}, {}, config_path=None), environ={})


def test_crash_loop_slow_failures_in_a_row() -> None:
    launcher = supervisor()

    # One failure every 20 s: never 5 inside the 60 s window, but 5 in a row.
    decisions = [launcher._crash_looping(index * 20.0) for index in range(CRASH_LOOP_FAILURES)]

    assert decisions == [False] * (CRASH_LOOP_FAILURES - 1) + [True]


def test_crash_loop_reset_by_ready_worker() -> None:
    launcher = supervisor()
    for index in range(CRASH_LOOP_FAILURES - 1):
        launcher._crash_looping(index * 20.0)

    launcher._failures_since_ready = 0  # what a worker reporting ready does

    assert launcher._crash_looping(200.0) is False
