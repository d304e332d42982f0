"""Exec mode: run one command as its init, forwarding signals and reaping zombies."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from mlmiddleware.launcher.exit_codes import EXIT_FAILURE
from mlmiddleware.launcher.reaper import OrphanSweep, become_subreaper, reap_children
from mlmiddleware.launcher.signals import (
    FORWARDED_SIGNALS,
    STOP_SIGNALS,
    SignalInbox,
    signal_name,
)

__all__ = ["run_exec"]

logger = logging.getLogger("mlmiddleware.launcher")

# Time left to the child after a second stop signal, before SIGKILL.
FAST_STOP_SECONDS = 3.0
_TICK_SECONDS = 0.25


def run_exec(command: Sequence[str], *, graceful_timeout: float, group: bool) -> int:
    """Run ``command`` until it exits and return its status: its exit code, or 128+N.

    Forwards every signal in ``FORWARDED_SIGNALS`` to the child, or to its process group
    when ``group`` is true. After SIGTERM or SIGINT the child gets ``graceful_timeout``
    seconds before SIGKILL; a second one shortens that to ``FAST_STOP_SECONDS``. Once the
    child has exited, leftover descendants get SIGTERM and, at the same deadline, SIGKILL.
    """
    become_subreaper()
    with SignalInbox(FORWARDED_SIGNALS) as inbox:
        try:
            child = _spawn(command, group=group)
        except OSError as exc:
            logger.error(
                "Cannot start %r: %s; check the command and its permissions", command[0], exc
            )
            return _spawn_failure_status(exc)
        logger.info(
            "Child started, pid=%d: %s",
            child.pid,
            " ".join(command),
            extra={"child_pid": child.pid},
        )
        return _supervise(child, inbox, graceful_timeout=graceful_timeout, group=group)


def _spawn_failure_status(exc: OSError) -> int:
    """Return the shell's status for a command that could not start: 127 missing, 126 denied."""
    if isinstance(exc, FileNotFoundError):
        return 127
    if isinstance(exc, PermissionError):
        return 126
    return EXIT_FAILURE


def _spawn(command: Sequence[str], *, group: bool) -> subprocess.Popen[bytes]:
    if group and sys.version_info >= (3, 11):
        child = subprocess.Popen(list(command), process_group=0)
    elif group:  # pragma: no cover - Python 3.10 has no process_group argument
        child = subprocess.Popen(list(command), preexec_fn=lambda: os.setpgid(0, 0))
    else:
        child = subprocess.Popen(list(command))
    if group:
        _give_terminal_to(child.pid)
    return child


def _give_terminal_to(process_group: int) -> None:
    """Make the child's process group the terminal's foreground group, if we own the terminal.

    Without it, a child in its own group that reads the terminal would be stopped by SIGTTIN.
    """
    try:
        if not os.isatty(0) or os.tcgetpgrp(0) != os.getpgrp():
            return
        previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        try:
            os.tcsetpgrp(0, process_group)
        finally:
            signal.signal(signal.SIGTTOU, previous)
    except OSError:
        logger.debug("Cannot hand the terminal to process group %d", process_group)


def _supervise(
    child: subprocess.Popen[bytes], inbox: SignalInbox, *, graceful_timeout: float, group: bool
) -> int:
    target = -child.pid if group else child.pid
    status: int | None = None
    kill_at: float | None = None
    stop_signals = 0
    sweep: OrphanSweep | None = None

    while True:
        with contextlib.suppress(InterruptedError):
            select.select([inbox.fileno()], [], [], 0.05 if sweep else _TICK_SECONDS)
        now = time.monotonic()

        for sig in inbox.drain():
            if sig == signal.SIGCHLD or status is not None:
                continue
            _forward(target, sig)
            if sig in STOP_SIGNALS:
                stop_signals += 1
                grace = graceful_timeout if stop_signals == 1 else FAST_STOP_SECONDS
                kill_at = min(kill_at or now + grace, now + grace)

        for pid, code in reap_children():
            if pid == child.pid:
                status = code
                child.returncode = code
                logger.info(
                    "Child exited with status %d, pid=%d", code, pid, extra={"status": code}
                )
            else:
                logger.debug("Reaped orphan pid=%d, status %d", pid, code)

        if status is None:
            if kill_at is not None and now >= kill_at:
                logger.warning("Graceful timeout over, sending SIGKILL to pid=%d", child.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(target, signal.SIGKILL)
                kill_at = now + graceful_timeout
            continue

        if sweep is None:
            sweep = OrphanSweep(kill_at if kill_at is not None else now + graceful_timeout)
        if sweep.step(now):
            return status


def _forward(target: int, sig: int) -> None:
    try:
        os.kill(target, sig)
    except ProcessLookupError:
        return
    logger.log(
        logging.DEBUG if sig == signal.SIGWINCH else logging.INFO,
        "Received %s, forwarded to %s %d",
        signal_name(sig),
        "process group" if target < 0 else "pid",
        abs(target),
        extra={"signal": signal_name(sig)},
    )
