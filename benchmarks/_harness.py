"""Shared parts of the server benchmarks: ports, readiness, wrk, CPU time and machine facts."""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SERVER_CPU = 0
LOAD_CPU = 1
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PACKAGES = (
    "mlmiddleware", "starlette", "fastapi", "uvicorn", "h11", "httptools", "uvloop",
    "prometheus-client", "orjson", "starlette-exporter", "asgi-correlation-id",
    "prometheus-fastapi-instrumentator", "python-json-logger", "structlog", "torch", "mosec",
    "numpy", "matplotlib",
)  # fmt: skip


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(process: subprocess.Popen[bytes], port: int, timeout_s: float = 60.0) -> None:
    """Wait until ``port`` accepts connections, or raise if ``process`` exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server pid {process.pid} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"server pid {process.pid} did not listen on port {port} in {timeout_s} s")


def stop_group(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """Send SIGTERM to the process group that ``process`` leads, then SIGKILL if it lingers."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout_s)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def tree_pids(pid: int) -> list[int]:
    """Return ``pid`` and all its descendants, read from /proc/<pid>/task/*/children."""
    pids = [pid]
    index = 0
    while index < len(pids):
        for task in Path(f"/proc/{pids[index]}/task").glob("*"):
            with contextlib.suppress(OSError):
                pids.extend(int(child) for child in (task / "children").read_text().split())
        index += 1
    return pids


def cpu_seconds(pid: int, *, tree: bool = False) -> float:
    """Return user + system CPU seconds of ``pid`` (and its live descendants if ``tree``)."""
    total = 0.0
    for member in tree_pids(pid) if tree else [pid]:
        try:
            stat = Path(f"/proc/{member}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def rss_bytes(pid: int) -> int:
    """Return the resident set size of ``pid`` from /proc/<pid>/status."""
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    if match is None:
        raise RuntimeError(f"no VmRSS line in /proc/{pid}/status")
    return int(match.group(1)) * 1024


def write_post_script(directory: Path, body: bytes) -> Path:
    """Write a wrk Lua script that sends ``body`` as a JSON POST."""
    script = directory / "post.lua"
    escaped = body.decode().replace("\\", "\\\\").replace('"', '\\"')
    script.write_text(
        f'wrk.method = "POST"\nwrk.body = "{escaped}"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    return script


def run_wrk(
    url: str,
    duration_s: float,
    *,
    connections: int = 32,
    script: Path | None = None,
    cpu: int | None = LOAD_CPU,
) -> tuple[float, int]:
    """Run wrk with one thread against ``url``; return (requests/s, completed requests).

    The 10 s response timeout (wrk's default is 2 s) keeps slow responses on a loaded
    machine from counting as socket errors, which abort the measurement.
    """
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s:g}s", "--timeout", "10s"]
    if script is not None:
        command += ["-s", str(script)]
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout

    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    if rps is None or total is None:
        raise RuntimeError(f"cannot read the wrk output:\n{output}")
    if "Non-2xx" in output or "Socket errors" in output:
        raise RuntimeError(f"wrk saw failed requests against {url}:\n{output}")
    return float(rps.group(1)), int(total.group(1))


def cpu_model() -> str:
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    match = re.search(r"Model name:\s+(.+)", output)
    return match.group(1).strip() if match else "unknown"


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def machine_facts() -> dict[str, Any]:
    """Describe the machine, the software and the current load, for the result files."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": sys.version.split()[0],
        "kernel": platform.release(),
        "load_average": os.getloadavg(),
        "packages": package_versions(),
    }
