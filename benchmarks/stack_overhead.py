"""Measure what the whole ``instrument()`` stack adds per request, against its peers.

Variants (see ``_stack_apps.py``): bare Starlette, Starlette under ``instrument()`` with
everything on, Starlette with the peer stack (asgi-correlation-id + starlette-exporter +
python-json-logger access log), bare FastAPI and FastAPI under ``instrument()``. Each
variant serves ``GET /hello/world`` and a 1 KiB JSON ``POST /echo``.

Every variant runs in its own uvicorn process (h11, asyncio loop, one worker) pinned to
CPU 0, with its stderr, and so its JSON access log, written to a file in a temporary
directory. wrk (one thread, 32 connections) runs pinned to CPU 1. Rounds interleave every
(variant, route) pair in a shuffled order, and figures are medians over rounds. Added CPU
per request is the server's user + system time divided by the completed requests, minus
the same figure for the bare app of the same framework. A second table calls each app
in-process through ASGI, without server or network.

Usage: python benchmarks/stack_overhead.py [--quick] [--rounds N] [--duration S] [--json F]
``--quick`` (2 rounds of 2 s) finishes in about 2 minutes. Needs Linux, taskset and wrk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _harness import (
    HERE,
    LOAD_CPU,
    SERVER_CPU,
    cpu_seconds,
    free_port,
    machine_facts,
    run_wrk,
    stop_group,
    wait_listening,
    write_post_script,
)
from _stack_apps import ECHO_PATH, HELLO_PATH, PARTS, VARIANTS, echo_body

ROUTES = {"hello": HELLO_PATH, "echo": ECHO_PATH}
TARGET_US = 20.0


@dataclass
class Server:
    variant: str
    port: int
    process: subprocess.Popen[bytes]
    rps: dict[str, list[float]] = field(default_factory=dict)
    cpu_us: dict[str, list[float]] = field(default_factory=dict)


def start_server(variant: str, log_dir: Path) -> Server:
    factory, _, uvicorn_access_log = VARIANTS[variant]
    port = free_port()
    command = [
        "taskset", "-c", str(SERVER_CPU), sys.executable, "-m", "uvicorn",
        "--factory", f"_stack_apps:{factory}", "--app-dir", str(HERE),
        "--host", "127.0.0.1", "--port", str(port), "--http", "h11", "--loop", "asyncio",
        "--workers", "1", "--log-level", "info" if uvicorn_access_log else "warning",
        "--access-log" if uvicorn_access_log else "--no-access-log",
    ]  # fmt: skip
    log_path = log_dir / f"{variant.replace(' ', '_').replace('+', '_')}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True
        )
    wait_listening(process, port)
    return Server(variant, port, process)


def measure(server: Server, route: str, duration_s: float, script: Path) -> None:
    url = f"http://127.0.0.1:{server.port}{ROUTES[route]}"
    before = cpu_seconds(server.process.pid)
    rps, total = run_wrk(url, duration_s, script=script if route == "echo" else None)
    used = cpu_seconds(server.process.pid) - before
    server.rps.setdefault(route, []).append(rps)
    server.cpu_us.setdefault(route, []).append(used * 1e6 / total)


def run_servers(rounds: int, duration_s: float) -> dict[str, Server]:
    servers: dict[str, Server] = {}
    with tempfile.TemporaryDirectory(prefix="mlmw-bench-") as directory:
        script = write_post_script(Path(directory), echo_body())
        try:
            for variant in VARIANTS:
                servers[variant] = start_server(variant, Path(directory))

            pairs = [(variant, route) for variant in VARIANTS for route in ROUTES]
            for variant, route in pairs:
                measure(servers[variant], route, 1.0, script)  # warm-up, discarded
            for server in servers.values():
                server.rps.clear()
                server.cpu_us.clear()

            shuffle = random.Random(1)
            for round_index in range(rounds):
                shuffle.shuffle(pairs)
                for variant, route in pairs:
                    measure(servers[variant], route, duration_s, script)
                print(f"stack overhead: round {round_index + 1}/{rounds} done", file=sys.stderr)
        finally:
            for server in servers.values():
                stop_group(server.process)
    return servers


# -- in-process ASGI calls (run in a subprocess whose stderr goes to /dev/null) ------------


def _scope(route: str) -> dict[str, Any]:
    path = ROUTES[route]
    headers = [(b"host", b"127.0.0.1")]
    if route == "echo":
        headers += [(b"content-type", b"application/json"), (b"content-length", b"1024")]
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "method": "POST" if route == "echo" else "GET", "scheme": "http", "path": path,
        "raw_path": path.encode(), "root_path": "", "query_string": b"", "headers": headers,
        "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip


async def _cost_per_call(app: Any, route: str, calls: int) -> float:
    scope = _scope(route)
    body = echo_body() if route == "echo" else b""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        return None

    for _ in range(200):
        await app(dict(scope), receive, send)
    started = time.process_time()
    for _ in range(calls):
        await app(dict(scope), receive, send)
    return (time.process_time() - started) * 1e6 / calls


def in_process_main(rounds: int, calls: int) -> None:
    import _stack_apps

    os.sched_setaffinity(0, {SERVER_CPU})
    factories = {variant: spec[0] for variant, spec in VARIANTS.items()} | PARTS
    apps = {variant: getattr(_stack_apps, factory)() for variant, factory in factories.items()}

    async def run() -> dict[str, dict[str, float]]:
        samples: dict[tuple[str, str], list[float]] = {}
        for _ in range(rounds):
            for variant, app in apps.items():
                for route in ROUTES:
                    cost = await _cost_per_call(app, route, calls)
                    samples.setdefault((variant, route), []).append(cost)
        medians: dict[str, dict[str, float]] = {}
        for (variant, route), values in samples.items():
            medians.setdefault(variant, {})[route] = statistics.median(values)
        return medians

    print(json.dumps(asyncio.run(run())))


def in_process_costs(rounds: int, calls: int) -> dict[str, dict[str, float]]:
    command = [sys.executable, __file__, "--in-process", "--rounds", str(rounds)]
    command += ["--calls", str(calls)]
    output = subprocess.run(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=True, timeout=900
    )
    costs: dict[str, dict[str, float]] = json.loads(output.stdout)
    return costs


# -- report -------------------------------------------------------------------------


def summarize(servers: dict[str, Server]) -> dict[str, dict[str, dict[str, float]]]:
    """Return variant -> route -> medians, ratios and added microseconds."""
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for variant, server in servers.items():
        baseline = servers[VARIANTS[variant][1]]
        for route in ROUTES:
            rps = statistics.median(server.rps[route])
            cpu = statistics.median(server.cpu_us[route])
            bare_rps = statistics.median(baseline.rps[route])
            bare_cpu = statistics.median(baseline.cpu_us[route])
            summary.setdefault(variant, {})[route] = {
                "rps": rps,
                "ratio": rps / bare_rps,
                "added_us_from_rps": 1e6 / rps - 1e6 / bare_rps,
                "cpu_us": cpu,
                "added_cpu_us": cpu - bare_cpu,
            }
    return summary


def report(
    summary: dict[str, dict[str, dict[str, float]]],
    costs: dict[str, dict[str, float]],
    *,
    rounds: int,
    duration_s: float,
    calls: int,
) -> str:
    lines = [
        f"wrk 1 thread, 32 connections, {rounds} rounds x {duration_s:g} s per pair; server on "
        f"CPU {SERVER_CPU}, wrk on CPU {LOAD_CPU}; medians over rounds. Ratios and added "
        "figures are against the bare app of the same framework.",
    ]
    for route, path in ROUTES.items():
        method = "POST" if route == "echo" else "GET"
        lines += [
            "",
            f"{method} {path}",
            "",
            "| variant | requests/s | ratio to bare | added us/request (from rps) "
            "| server CPU us/request | added CPU us/request | in-process us/call "
            "| added in-process us/call |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for variant, routes in summary.items():
            row = routes[route]
            cost = costs[variant][route]
            bare_cost = costs[VARIANTS[variant][1]][route]
            lines.append(
                f"| {variant} | {row['rps']:,.0f} | {row['ratio']:.2f} "
                f"| {row['added_us_from_rps']:.1f} | {row['cpu_us']:.1f} "
                f"| {row['added_cpu_us']:.1f} | {cost:.1f} | {cost - bare_cost:.1f} |"
            )
    lines += ["", f"In-process: {rounds} rounds x {calls} calls per pair on CPU {SERVER_CPU}."]
    lines += ["", "Where the in-process cost of instrument() goes (against bare Starlette):", ""]
    lines += [
        "| variant | hello us/call | added | echo us/call | added |",
        "|---|---:|---:|---:|---:|",
    ]
    for variant in ["starlette+instrument", *PARTS]:
        hello_us, echo_us = costs[variant]["hello"], costs[variant]["echo"]
        lines.append(
            f"| {variant} | {hello_us:.1f} | {hello_us - costs['starlette']['hello']:.1f} "
            f"| {echo_us:.1f} | {echo_us - costs['starlette']['echo']:.1f} |"
        )
    lines.append("")
    lines.append(verdict(summary, costs))
    return "\n".join(lines)


def verdict(summary: dict[str, dict[str, dict[str, float]]], costs: Any) -> str:
    lines = [f"Target: instrument() adds at most {TARGET_US:g} us of server CPU per request."]
    for variant in ("starlette+instrument", "fastapi+instrument"):
        baseline = VARIANTS[variant][1]
        for route in ROUTES:
            added = summary[variant][route]["added_cpu_us"]
            in_process = costs[variant][route] - costs[baseline][route]
            state = "met" if added <= TARGET_US else "missed"
            lines.append(
                f"- {variant} {route}: +{added:.1f} us server CPU, +{in_process:.1f} us "
                f"in-process: {state}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 s: about 2 minutes")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load per pair")
    parser.add_argument("--calls", type=int, help="in-process calls per pair and round")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    rounds, duration_s = (2, 2.0) if args.quick else (args.rounds, args.duration)
    calls = args.calls or (1000 if args.quick else 5000)
    if args.in_process:
        in_process_main(args.rounds, calls)
        return

    facts = machine_facts()
    servers = run_servers(rounds, duration_s)
    summary = summarize(servers)
    costs = in_process_costs(rounds, calls)
    print(report(summary, costs, rounds=rounds, duration_s=duration_s, calls=calls))
    if args.json is not None:
        raw = {
            variant: {"rps": server.rps, "cpu_us": server.cpu_us}
            for variant, server in servers.items()
        }
        document = {
            "machine": facts,
            "load_average_after": os.getloadavg(),
            "rounds": rounds,
            "duration_s": duration_s,
            "calls": calls,
            "summary": summary,
            "in_process_us": costs,
            "raw": raw,
        }
        args.json.write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
