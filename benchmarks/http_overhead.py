"""Measure what Prometheus HTTP middleware adds per request to a hello-world Starlette route.

Variants (see ``_apps.py``): bare Starlette, mlmiddleware's ``PrometheusMiddleware``,
starlette-exporter (``group_paths=True``) and prometheus-fastapi-instrumentator. Every
variant runs in its own uvicorn process (h11, asyncio loop, one worker, no access log),
all pinned to CPU 0; the load generator is pinned to CPU 1. Rounds are interleaved and
the variant order is shuffled per round, so drift on a shared machine hits every variant.

Reported per variant: median requests/s over the rounds, the ratio to bare, the added
cost per request from throughput (1e6 / rps - 1e6 / bare rps, in microseconds) and the
server CPU time per request read from /proc. A second table calls each app in-process
through the ASGI interface, pinned to CPU 0, and reports process CPU time per call. It
leaves out the server and the network, so it isolates the middleware's own cost and is
less disturbed by other load on the machine than the throughput figures.

Usage: python benchmarks/http_overhead.py [--quick] [--rounds N] [--duration S]
``--quick`` (3 rounds of 3 s) finishes in under 2 minutes. Needs Linux, ``taskset``
(util-linux) and ``wrk`` (Debian package ``wrk``). Without wrk a Python load generator
is used. It saturates sooner, so its figures are only comparable with each other.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
SERVER_CPU = "0"
LOAD_CPU = "1"
CONNECTIONS = 32
PATH = "/hello/world"

sys.path.insert(0, str(HERE))
from _apps import VARIANTS  # noqa: E402
from _harness import cpu_seconds, free_port, run_wrk, wait_listening  # noqa: E402


@dataclass
class Server:
    variant: str
    port: int
    process: subprocess.Popen[bytes]
    rps: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)


def start_server(variant: str) -> Server:
    port = free_port()
    command = [
        "taskset", "-c", SERVER_CPU, sys.executable, "-m", "uvicorn",
        "--factory", f"_apps:{VARIANTS[variant]}", "--app-dir", str(HERE),
        "--host", "127.0.0.1", "--port", str(port), "--http", "h11", "--loop", "asyncio",
        "--workers", "1", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    wait_listening(process, port)
    return Server(variant, port, process)


def load_wrk(port: int, duration: float) -> tuple[float, int]:
    """Run wrk against ``port``; return (requests/s, completed requests)."""
    return run_wrk(f"http://127.0.0.1:{port}{PATH}", duration, connections=CONNECTIONS)


async def _python_client(port: int, stop_at: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    try:
        while time.monotonic() < stop_at:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"expected a 200 response, got: {head[:40]!r}")
            counts[0] += 1
    finally:
        writer.close()


def load_python(port: int, duration: float) -> tuple[float, int]:
    """Bounded keep-alive load from one asyncio process; used when wrk is missing."""
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    counts = [0]

    async def run() -> None:
        stop_at = time.monotonic() + duration
        await asyncio.gather(*(_python_client(port, stop_at, counts) for _ in range(CONNECTIONS)))

    start = time.monotonic()
    asyncio.run(run())
    return counts[0] / (time.monotonic() - start), counts[0]


def measure(server: Server, duration: float, use_wrk: bool) -> None:
    before = cpu_seconds(server.process.pid)
    rps, total = (load_wrk if use_wrk else load_python)(server.port, duration)
    used = cpu_seconds(server.process.pid) - before
    server.rps.append(rps)
    server.cpu_us.append(used * 1e6 / total)


def in_process_costs(rounds: int, calls: int) -> dict[str, float]:
    """Return the median CPU microseconds per ASGI call of each variant, in-process."""
    import _apps

    os.sched_setaffinity(0, {int(SERVER_CPU)})
    apps = {variant: getattr(_apps, factory)() for variant, factory in VARIANTS.items()}
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": PATH, "raw_path": PATH.encode(), "root_path": "",
        "query_string": b"", "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: object) -> None:
        return None

    async def cost(app: object) -> float:
        for _ in range(200):
            await app(dict(scope), receive, send)  # type: ignore[operator]
        start = time.process_time()
        for _ in range(calls):
            await app(dict(scope), receive, send)  # type: ignore[operator]
        return (time.process_time() - start) * 1e6 / calls

    async def run() -> dict[str, list[float]]:
        samples: dict[str, list[float]] = {variant: [] for variant in apps}
        for _ in range(rounds):
            for variant, app in apps.items():
                samples[variant].append(await cost(app))
        return samples

    samples = asyncio.run(run())
    return {variant: statistics.median(values) for variant, values in samples.items()}


def report_in_process(costs: dict[str, float], *, rounds: int, calls: int) -> str:
    lines = [
        f"In-process ASGI calls: {rounds} rounds x {calls} calls per variant on CPU "
        f"{SERVER_CPU}; median process CPU time per call.",
        "",
        "| variant | CPU us/call | added us/call |",
        "|---|---:|---:|",
    ]
    for variant, cost in costs.items():
        lines.append(f"| {variant} | {cost:.1f} | {cost - costs['bare']:.1f} |")
    return "\n".join(lines)


def report(servers: dict[str, Server], *, load: str, rounds: int, duration: float) -> str:
    bare_rps = statistics.median(servers["bare"].rps)
    bare_cpu = statistics.median(servers["bare"].cpu_us)
    lines = [
        f"Load: {load}, {CONNECTIONS} connections, {rounds} rounds x {duration:g} s per variant; "
        f"server on CPU {SERVER_CPU}, load on CPU {LOAD_CPU}; medians over rounds.",
        "",
        "| variant | requests/s | ratio to bare | added us/request (from rps) "
        "| server CPU us/request | added CPU us/request |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for variant, server in servers.items():
        rps = statistics.median(server.rps)
        cpu = statistics.median(server.cpu_us)
        lines.append(
            f"| {variant} | {rps:,.0f} | {rps / bare_rps:.2f} | {1e6 / rps - 1e6 / bare_rps:.1f} "
            f"| {cpu:.1f} | {cpu - bare_cpu:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 3 s: under 2 minutes")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds of load per variant and round"
    )
    parser.add_argument(
        "--json", type=Path, help="also write the raw per-round figures to this file"
    )
    args = parser.parse_args()
    rounds, duration = (3, 3.0) if args.quick else (args.rounds, args.duration)
    if shutil.which("taskset") is None:
        sys.exit("taskset not found: install util-linux")
    use_wrk = shutil.which("wrk") is not None
    load = "wrk 1 thread" if use_wrk else "Python asyncio load generator (wrk not found)"

    servers: dict[str, Server] = {}
    try:
        for variant in VARIANTS:
            servers[variant] = start_server(variant)
        for server in servers.values():
            measure(server, 1.0, use_wrk)  # warm-up, discarded
            server.rps.clear()
            server.cpu_us.clear()

        order = list(servers)
        shuffle = random.Random(1)
        for round_index in range(rounds):
            shuffle.shuffle(order)
            for variant in order:
                measure(servers[variant], duration, use_wrk)
            print(f"round {round_index + 1}/{rounds} done", file=sys.stderr)
    finally:
        for server in servers.values():
            server.process.send_signal(signal.SIGTERM)
        for server in servers.values():
            server.process.wait(timeout=20)

    print(report(servers, load=load, rounds=rounds, duration=duration))
    calls = 2000 if args.quick else 10000
    costs = in_process_costs(rounds, calls)
    print()
    print(report_in_process(costs, rounds=rounds, calls=calls))
    if args.json is not None:
        raw = {
            name: {"rps": s.rps, "cpu_us": s.cpu_us, "in_process_us": costs[name]}
            for name, s in servers.items()
        }
        args.json.write_text(json.dumps(raw, indent=2))


if __name__ == "__main__":
    main()
