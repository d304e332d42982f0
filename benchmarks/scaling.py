"""Measure requests/s through ``mlmiddleware run`` with 1 and 2 worker processes.

The app is Starlette under ``instrument()`` with everything on (``_stack_apps``), served
by the launcher with its defaults (uvicorn with httptools and uvloop when installed) and
its JSON access log relayed to a file. wrk (one thread, 32 connections) is pinned to
CPU 1. Configurations:

- ``1 worker, CPU 0``: the launcher and its worker pinned to CPU 0, the single-core figure.
- ``1 worker``: not pinned, so it shares CPU 1 with wrk.
- ``2 workers``: not pinned, so the second worker shares CPU 1 with wrk.

On a 2-core machine the load generator takes most of one core, so 2 workers cannot reach
2x. The scaling shown there is what the cores left to the server allow. Server CPU per
request sums the launcher and every worker, read from /proc.

Usage: python benchmarks/scaling.py [--quick] [--rounds N] [--duration S] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _harness import (
    HERE,
    LOAD_CPU,
    ROOT,
    SERVER_CPU,
    cpu_seconds,
    free_port,
    machine_facts,
    run_wrk,
    stop_group,
    wait_listening,
)
from _stack_apps import HELLO_PATH

# Configuration -> (workers, CPUs the launcher and its workers may use, or None for all).
CONFIGURATIONS: dict[str, tuple[int, set[int] | None]] = {
    "1 worker, CPU 0": (1, {SERVER_CPU}),
    "1 worker": (1, None),
    "2 workers": (2, None),
}
CONNECTIONS = 32


def start_launcher(workers: int, cpus: set[int] | None, log: Path) -> tuple[Any, int]:
    port = free_port()
    command = [
        sys.executable, "-m", "mlmiddleware", "run", "_stack_apps:starlette_instrumented",
        "--factory", "--workers", str(workers), "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "info", "--drain-seconds", "0",
    ]  # fmt: skip
    pythonpath = os.pathsep.join([str(HERE), str(ROOT / "src")])
    env = {**os.environ, "PYTHONPATH": pythonpath}

    def pin() -> None:
        if cpus is not None:
            os.sched_setaffinity(0, cpus)

    with log.open("ab") as stream:
        process = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stream,
            preexec_fn=pin,
            start_new_session=True,
        )
    wait_listening(process, port)
    # The socket listens before every worker has loaded the app, so warm up past that.
    run_wrk(f"http://127.0.0.1:{port}{HELLO_PATH}", 2.0, connections=CONNECTIONS)
    return process, port


def measure(name: str, duration_s: float, log: Path) -> tuple[float, float]:
    """Start one configuration, load it once; return (requests/s, server CPU us/request)."""
    workers, cpus = CONFIGURATIONS[name]
    process, port = start_launcher(workers, cpus, log)
    try:
        before = cpu_seconds(process.pid, tree=True)
        rps, total = run_wrk(
            f"http://127.0.0.1:{port}{HELLO_PATH}", duration_s, connections=CONNECTIONS
        )
        used = cpu_seconds(process.pid, tree=True) - before
    finally:
        stop_group(process)
    return rps, used * 1e6 / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 3 s: about 1 minute")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of load per run")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    rounds, duration_s = (1, 3.0) if args.quick else (args.rounds, args.duration)

    facts = machine_facts()
    samples: dict[str, dict[str, list[float]]] = {
        name: {"rps": [], "cpu_us": []} for name in CONFIGURATIONS
    }
    with tempfile.TemporaryDirectory(prefix="mlmw-scaling-") as directory:
        log = Path(directory) / "launcher.log"
        for round_index in range(rounds):
            # Rotate the order each round so drift on a shared machine hits every configuration.
            names = list(CONFIGURATIONS)
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                rps, cpu_us = measure(name, duration_s, log)
                samples[name]["rps"].append(rps)
                samples[name]["cpu_us"].append(cpu_us)
            print(f"scaling: round {round_index + 1}/{rounds} done", file=sys.stderr)

    medians = {
        name: {key: statistics.median(values) for key, values in figures.items()}
        for name, figures in samples.items()
    }
    base = medians["1 worker, CPU 0"]["rps"]
    print(
        f"wrk 1 thread, {CONNECTIONS} connections on CPU {LOAD_CPU}, {rounds} rounds x "
        f"{duration_s:g} s; GET {HELLO_PATH} on Starlette + instrument(); medians."
    )
    print()
    print("| configuration | requests/s | ratio to 1 worker on CPU 0 | server CPU us/request |")
    print("|---|---:|---:|---:|")
    for name, row in medians.items():
        print(f"| {name} | {row['rps']:,.0f} | {row['rps'] / base:.2f} | {row['cpu_us']:.1f} |")
    if args.json is not None:
        document = {
            "machine": facts,
            "rounds": rounds,
            "duration_s": duration_s,
            "connections": CONNECTIONS,
            "medians": medians,
            "samples": samples,
        }
        args.json.write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
