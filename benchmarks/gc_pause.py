"""Measure what freezing the startup heap does to the batcher's tail latency.

Two servers, identical but for ``instrument(freeze_gc=...)``, serve the device-bound model
of ``batching.py`` (a simulated accelerator that sleeps 8 ms + 0.25 ms per item with the
GIL released) through ``batching_endpoint`` with ``max_batch_size=32``. Each is pinned to
CPU 0 and loaded at concurrency 64 from CPU 1. Rounds interleave the two.

Reported per variant: items/s, p50, p99 and the longest gap between two consecutive
responses, medians over rounds. A full garbage collection stalls the event loop, so it
shows as a gap far longer than one batch (about 16 ms here).

Usage: python benchmarks/gc_pause.py [--rounds N] [--duration S] [--json F]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VARIANTS = {"freeze_gc=True": "on", "freeze_gc=False": "off"}
CONCURRENCY = 64


def serve(freeze: str, port: int) -> None:
    from batching import REGIMES, run_uvicorn, uvicorn_app

    run_uvicorn(uvicorn_app("batcher", REGIMES["device"], freeze_gc=freeze == "on"), port)


def measure(freeze: str, duration_s: float) -> dict[str, float]:
    """Start one server, load it, and return its figures."""
    import _load

    import batching

    port = batching.free_port()
    command = [sys.executable, __file__, "--serve", freeze, "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{HERE}", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        command, preexec_fn=batching.pin_to_server_cpus, env=env, start_new_session=True
    )
    try:
        _, request = batching.request_bytes("batcher", batching.REGIMES["device"])
        batching.wait_ready(port, request)
        result = asyncio.run(
            _load.run_load(port, request, concurrency=CONCURRENCY, duration_s=duration_s)
        )
    finally:
        batching.stop_server(process)

    finished = sorted(result.finished_s)
    gaps = [later - earlier for earlier, later in itertools.pairwise(finished)]
    return {
        "items_per_s": result.rate,
        "p50_ms": result.percentile_ms(0.5),
        "p99_ms": result.percentile_ms(0.99),
        "max_gap_ms": max(gaps) * 1000 if gaps else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load per run")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--serve", choices=("on", "off"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    sys.path.insert(0, str(HERE))
    if args.serve:
        serve(args.serve, args.port)
        return

    from _harness import machine_facts

    import batching

    os.sched_setaffinity(0, batching.LOAD_CPUS)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    for round_index in range(args.rounds):
        order = list(VARIANTS) if round_index % 2 == 0 else list(reversed(VARIANTS))
        for name in order:
            runs[name].append(measure(VARIANTS[name], args.duration))
            print(f"round {round_index + 1}: {name} done", file=sys.stderr)

    medians: dict[str, dict[str, Any]] = {
        name: {key: statistics.median(run[key] for run in values) for key in values[0]}
        for name, values in runs.items()
    }
    print(
        f"Device-bound batcher at concurrency {CONCURRENCY}, {args.rounds} rounds x "
        f"{args.duration:g} s, medians:\n"
    )
    print("| variant | items/s | p50 ms | p99 ms | longest gap between responses ms |")
    print("|---|---:|---:|---:|---:|")
    for name, figures in medians.items():
        print(
            f"| {name} | {figures['items_per_s']:.0f} | {figures['p50_ms']:.1f} | "
            f"{figures['p99_ms']:.1f} | {figures['max_gap_ms']:.1f} |"
        )
    if args.json is not None:
        document = {"machine": machine_facts(), "runs": runs, "medians": medians}
        args.json.write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
