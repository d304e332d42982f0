"""Helpers shared by the launcher tests: commands, free ports, polling and process lookups."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

APP_DIR = Path(__file__).resolve().parent
LAUNCHER = [sys.executable, "-m", "mlmiddleware"]
# Readiness waits are generous because other test suites share the 2 CPU cores.
STARTUP_WAIT_SECONDS = 30.0


# The child forks 100 subshells that each leave one `sleep 3` behind and exit at once, so
# every sleep is an orphan that the init must adopt and, 3 s later, reap. The first marker
# file appears when all are started, the second once every sleep has finished, while the
# child itself still runs.
ORPHAN_COUNT = 100
ORPHAN_SCRIPT = (
    f'for i in $(seq {ORPHAN_COUNT}); do (sleep 3 &); done; touch "$1"; '
    "while pgrep -x -P $PPID sleep >/dev/null; do sleep 0.1; done; "
    'sleep 0.5; touch "$2"; sleep 2; exit 0'
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until(condition: Callable[[], Any], timeout: float, interval: float = 0.02) -> Any:
    """Poll ``condition`` until it returns a truthy value, which is returned.

    Raises ``TimeoutError`` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        time.sleep(interval)


def proc_stat(pid: int) -> tuple[str, int] | None:
    """Return (state, ppid) of ``pid`` from /proc, or ``None`` once it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    return fields[0].decode(), int(fields[1])


def children_of(pid: int, *, zombies: bool) -> list[int]:
    """List the pids whose parent is ``pid``: only zombies, or only live processes."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = proc_stat(int(entry))
            if stat is not None and stat[1] == pid and (stat[0] == "Z") == zombies:
                found.append(int(entry))
    return found


def descendants_of(pid: int) -> list[int]:
    """List the live descendants of ``pid``."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = proc_stat(int(entry))
            if stat is not None and stat[0] != "Z":
                tree.setdefault(stat[1], []).append(int(entry))
    found: list[int] = []
    pending = [pid]
    while pending:
        for child in tree.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def is_alive(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def kill_tree(root: subprocess.Popen[bytes]) -> None:
    """Clean up after a failed test: SIGKILL the launcher and everything below it."""
    for pid in [*descendants_of(root.pid), root.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        root.wait(timeout=10)


def log_records(path: Path) -> Iterator[dict[str, Any]]:
    """Yield the JSON log records in ``path``, skipping lines that are not JSON objects."""
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{"):
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def launcher_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("MLMW_")
        and key not in ("PORT", "WEB_CONCURRENCY", "PROMETHEUS_MULTIPROC_DIR")
        and key != "KUBERNETES_SERVICE_HOST"
    }
    env.update(extra or {})
    return env


def peer_path(name: str) -> str | None:
    return shutil.which(name)


UNSHARE_WORKS: bool | None = None


def unshare_available() -> bool:
    """Return ``True`` when ``unshare --pid --fork --mount-proc`` runs here (root or userns)."""
    global UNSHARE_WORKS
    if UNSHARE_WORKS is None:
        if shutil.which("unshare") is None:
            UNSHARE_WORKS = False
        else:
            result = subprocess.run(
                ["unshare", "--pid", "--fork", "--mount-proc", "true"],
                capture_output=True,
                timeout=20,
                check=False,
            )
            UNSHARE_WORKS = result.returncode == 0
    return UNSHARE_WORKS


def wait_for_child(launcher: subprocess.Popen[bytes]) -> int:
    """Wait until the launcher has started its child; return the child's pid."""
    children = wait_until(lambda: children_of(launcher.pid, zombies=False), timeout=20)
    return int(children[0])


def orphan_sleeps(init_pid: int) -> list[int]:
    """List the live `sleep 3` processes whose parent is ``init_pid``."""
    found = []
    for pid in children_of(init_pid, zombies=False):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x003\x00":
                found.append(pid)
        except OSError:
            continue
    return found


def run_orphans(init_command: list[str], tmp_path: Path, *, under_unshare: bool) -> None:
    """Run the orphan script under an init and check that it adopts and reaps every sleep."""
    started, done = tmp_path / "started", tmp_path / "done"
    command = [*init_command, "sh", "-c", ORPHAN_SCRIPT, "orphans", str(started), str(done)]
    if under_unshare:
        command = ["unshare", "--pid", "--fork", "--mount-proc", *command]
    outer = subprocess.Popen(command, env=launcher_env())
    try:
        # Under unshare the init (PID 1 inside) is the child of unshare.
        init_pid = wait_for_child(outer) if under_unshare else outer.pid
        wait_until(started.exists, timeout=60)
        adopted = wait_until(lambda: len(orphan_sleeps(init_pid)) == ORPHAN_COUNT, timeout=20)
        wait_until(done.exists, timeout=60)
        zombies = children_of(init_pid, zombies=True)
        remaining = orphan_sleeps(init_pid)
        status = outer.wait(timeout=30)
    finally:
        kill_tree(outer)
    assert adopted
    assert zombies == []
    assert remaining == []
    assert status == 0
