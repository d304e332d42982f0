"""Child subreaper registration, zombie reaping and the descendants of this process."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import signal
import sys
from collections.abc import Iterable

from mlmiddleware.launcher.exit_codes import exit_code_of

__all__ = [
    "OrphanSweep",
    "become_subreaper",
    "descendants",
    "reap_children",
    "set_parent_death_signal",
    "signal_pids",
]

logger = logging.getLogger("mlmiddleware.launcher")

# From <linux/prctl.h>.
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make orphaned descendants reparent to this process instead of to PID 1.

    Returns ``True`` when this process is PID 1 (already the reaper of its PID namespace)
    or the ``prctl`` call succeeded, ``False`` on other systems or when it failed.
    """
    if os.getpid() == 1:
        logger.debug("Running as PID 1, orphans reparent to the launcher already")
        return True
    if not sys.platform.startswith("linux"):
        logger.warning(
            "Cannot register as child subreaper on %s: orphans are not reaped", sys.platform
        )
        return False

    result = _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    if result != 0:
        logger.warning(
            "prctl(PR_SET_CHILD_SUBREAPER) failed: %s; orphaned grandchildren are not reaped",
            os.strerror(result),
        )
        return False
    logger.debug("Registered as child subreaper, pid=%d", os.getpid())
    return True


def set_parent_death_signal(sig: int) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent exits (Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    return _prctl(_PR_SET_PDEATHSIG, sig) == 0


def _prctl(option: int, value: int) -> int:
    """Call prctl(2) with one argument; return 0 on success, else the errno."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0) != 0:
        return ctypes.get_errno() or errno.EINVAL
    return 0


def reap_children() -> list[tuple[int, int]]:
    """Reap every child that has exited, without blocking.

    Returns ``(pid, exit code)`` pairs, with 128+N for a child killed by signal N.
    """
    reaped: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.append((pid, exit_code_of(status)))


def descendants(root: int | None = None) -> list[int]:
    """List the pids of all live descendants of ``root`` (this process by default).

    Reads ``/proc``, so it returns an empty list where ``/proc`` is missing. Zombies are
    left out because they are already dead and only wait to be reaped.
    """
    parent_of: dict[int, int] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []

    for entry in entries:
        if entry.isdigit():
            stat = _read_stat(int(entry))
            if stat is not None and stat[0] != "Z":
                parent_of[int(entry)] = stat[1]

    children: dict[int, list[int]] = {}
    for pid, ppid in parent_of.items():
        children.setdefault(ppid, []).append(pid)

    found: list[int] = []
    pending = [os.getpid() if root is None else root]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def _read_stat(pid: int) -> tuple[str, int] | None:
    """Return (state, ppid) from ``/proc/PID/stat``, or ``None`` if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            data = stat_file.read()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces or ')' itself.
    fields = data[data.rfind(b")") + 2 :].split()
    if len(fields) < 2:
        return None
    return fields[0].decode("ascii", "replace"), int(fields[1])


def signal_pids(pids: Iterable[int], sig: int) -> int:
    """Send ``sig`` to each pid, skipping those already gone; return how many were signalled."""
    sent = 0
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            continue
        except PermissionError:
            logger.warning(
                "Cannot send %s to pid %d: permission denied", signal.Signals(sig).name, pid
            )
            continue
        sent += 1
    return sent


class OrphanSweep:
    """Stop the descendants left behind once the main process or the workers have exited.

    The first ``step`` sends SIGTERM to every live descendant; a ``step`` at or after
    ``deadline`` (a ``time.monotonic()`` value) sends SIGKILL to those still alive. The
    caller keeps reaping children between steps.
    """

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.killed = False
        self._terminated = False

    def step(self, now: float) -> bool:
        """Signal the remaining descendants; return ``True`` once none is left."""
        pids = descendants()
        if not pids:
            return True

        if not self._terminated:
            self._terminated = True
            logger.info("Sending SIGTERM to %d leftover descendant process(es)", len(pids))
            signal_pids(pids, signal.SIGTERM)
        if now >= self.deadline:
            self.killed = True
            logger.warning(
                "Graceful timeout over, sending SIGKILL to %d process(es): %s",
                len(pids),
                " ".join(map(str, pids)),
                extra={"pids": pids},
            )
            signal_pids(pids, signal.SIGKILL)
        return False
