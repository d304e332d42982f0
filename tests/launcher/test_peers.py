"""The launcher side by side with Debian's tini and dumb-init on the same init scenarios.

Each peer is skipped with its reason when its binary is absent (``apt-get install tini
dumb-init``). docs/launcher.md has the resulting table.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.launcher.support import (
    LAUNCHER,
    is_alive,
    kill_tree,
    launcher_env,
    peer_path,
    run_orphans,
    unshare_available,
    wait_for_child,
    wait_until,
)

# How each init runs a command as PID 1 and, where it has one, in child-subreaper mode.
INITS: dict[str, dict[str, list[str] | None]] = {
    "mlmiddleware": {"pid1": [*LAUNCHER, "exec", "--"], "subreaper": [*LAUNCHER, "exec", "--"]},
    "tini": {"pid1": ["tini", "--"], "subreaper": ["tini", "-s", "--"]},
    # dumb-init has no subreaper mode: as a non-PID-1 init it leaves orphans to PID 1.
    "dumb-init": {"pid1": ["dumb-init"], "subreaper": None},
}


def init_command(name: str, mode: str) -> list[str]:
    if name != "mlmiddleware" and peer_path(name) is None:
        pytest.skip(f"{name} is not installed: apt-get install {name}")
    modes = INITS[name]
    # "plain": the subreaper form where the init has one, else its PID 1 form run as is.
    command = (modes["subreaper"] or modes["pid1"]) if mode == "plain" else modes[mode]
    if command is None:
        pytest.skip(f"{name} has no {mode} mode")
    return command


@pytest.mark.parametrize("name", sorted(INITS))
def test_peer_exit_status(name: str) -> None:
    command = init_command(name, "plain")
    # test_exec sweeps all 256 codes for the launcher. One interpreter start per code would
    # take most of a minute here, so this test passes a sample through its command line.
    codes = range(256) if name != "mlmiddleware" else (0, 1, 2, 126, 127, 128, 200, 255)
    mismatches = {}
    for code in codes:
        result = subprocess.run(
            [*command, "sh", "-c", f"exit {code}"], env=launcher_env(), timeout=30, check=False
        )
        if result.returncode != code:
            mismatches[code] = result.returncode
    assert mismatches == {}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2])
@pytest.mark.parametrize("name", sorted(INITS))
def test_peer_signal_status(name: str, sig: signal.Signals) -> None:
    command = init_command(name, "plain")
    init = subprocess.Popen([*command, "sleep", "1000"], env=launcher_env())
    try:
        wait_for_child(init)
        os.kill(init.pid, sig)
        status = init.wait(timeout=30)
    finally:
        kill_tree(init)
    assert status == 128 + sig


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["pid1", "subreaper"])
@pytest.mark.parametrize("name", sorted(INITS))
def test_peer_reaps_orphans(name: str, mode: str, tmp_path: Path) -> None:
    command = init_command(name, mode)
    if mode == "pid1" and not unshare_available():
        pytest.skip("unshare --pid --fork --mount-proc does not work here (needs root or userns)")
    run_orphans(command, tmp_path, under_unshare=mode == "pid1")


# Whether a `setsid` grandchild outlives the init after SIGTERM when the init is not PID 1,
# as docs/launcher.md tabulates it: the launcher stops leftover descendants, the peers
# leave them to whatever reaps orphans above them.
SETSID_SURVIVES = {"mlmiddleware": False, "tini": True, "dumb-init": True}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(INITS))
def test_peer_setsid_grandchild(name: str, tmp_path: Path) -> None:
    command = init_command(name, "plain")
    pidfile = tmp_path / "pid"
    script = f'setsid sleep 1000 & echo $! > "{pidfile}"; exec sleep 1000'
    init = subprocess.Popen([*command, "sh", "-c", script], env=launcher_env())
    grandchild = None
    try:
        wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=20)
        grandchild = int(pidfile.read_text())
        wait_for_child(init)
        os.kill(init.pid, signal.SIGTERM)
        status = init.wait(timeout=30)
        survived = is_alive(grandchild)
    finally:
        kill_tree(init)
        if grandchild is not None and is_alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)
    assert status == 128 + signal.SIGTERM
    assert survived is SETSID_SURVIVES[name]
