"""Run every benchmark in sequence, write the result files and print the tables.

Each benchmark runs as its own process, one after another, so no two of them share the
CPUs. Results go to ``benchmarks/results/<name>.json`` and the plots to ``docs/``. A
full run takes about 45 minutes on 2 cores, 30 of them for the batching benchmark. With
``--quick`` every benchmark does a short smoke run (about 7 minutes in all), the results
go to ``benchmarks/results/<name>-quick.json`` and the plots to
``benchmarks/results/plots-quick/``, so the recorded figures stay untouched.

Usage: python benchmarks/run_all.py [--quick] [--only NAME ...]
Needs Linux, taskset (util-linux) and wrk (Debian package ``wrk``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _harness import HERE, ROOT, machine_facts

# Name -> (script, arguments of a full run). The full arguments are those behind the
# figures in docs/benchmarks.md.
BENCHMARKS: dict[str, tuple[str, list[str]]] = {
    "logging": ("logging_bench.py", ["--records", "20000", "--rounds", "7"]),
    "log_relay": ("log_relay.py", ["--lines", "100000", "--rounds", "5"]),
    "http_overhead": ("http_overhead.py", ["--rounds", "5", "--duration", "5"]),
    "stack_overhead": ("stack_overhead.py", ["--rounds", "5", "--duration", "5"]),
    "batching": ("batching.py", ["--rounds", "3", "--duration", "3"]),
    "gc_pause": ("gc_pause.py", ["--rounds", "3", "--duration", "5"]),
    "scaling": ("scaling.py", ["--rounds", "3", "--duration", "8"]),
    "memory": ("memory.py", ["--requests", "100000"]),
}
QUICK_ARGUMENTS = {
    "logging": ["--records", "5000", "--rounds", "3"],
    "log_relay": ["--quick"],
    "http_overhead": ["--quick"],
    "stack_overhead": ["--quick"],
    "batching": ["--quick"],
    "gc_pause": ["--rounds", "1", "--duration", "2"],
    "scaling": ["--quick"],
    "memory": ["--quick"],
}


def run_benchmark(name: str, quick: bool, results: Path) -> bool:
    """Run one benchmark; return whether it exited with status 0."""
    script, full_arguments = BENCHMARKS[name]
    arguments = QUICK_ARGUMENTS[name] if quick else full_arguments
    output = results / f"{name}{'-quick' if quick else ''}.json"
    command = [sys.executable, str(HERE / script), *arguments, "--json", str(output)]
    print(f"\n## {name}: {' '.join(command[1:])}\n", flush=True)

    started = time.monotonic()
    completed = subprocess.run(command, cwd=ROOT, check=False)
    elapsed = time.monotonic() - started
    if completed.returncode != 0:
        print(f"{name} failed with exit status {completed.returncode}", file=sys.stderr)
        return False
    print(f"\n({name} took {elapsed:.0f} s)", flush=True)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run of each benchmark")
    parser.add_argument(
        "--only", choices=sorted(BENCHMARKS), action="append", help="run only this (repeatable)"
    )
    args = parser.parse_args()
    for tool in ("taskset", "wrk"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: install util-linux and the Debian package wrk")

    results = HERE / "results"
    results.mkdir(exist_ok=True)
    suffix = "-quick" if args.quick else ""
    facts = machine_facts()
    (results / f"machine{suffix}.json").write_text(json.dumps(facts, indent=2))
    print(json.dumps(facts, indent=2))

    failed = [
        name for name in args.only or BENCHMARKS if not run_benchmark(name, args.quick, results)
    ]

    plot_dir = results / "plots-quick" if args.quick else ROOT / "docs"
    plot_dir.mkdir(exist_ok=True)
    plot_command = [sys.executable, str(HERE / "plots.py"), "--out", str(plot_dir)]
    subprocess.run([*plot_command, f"--suffix={suffix}"], cwd=ROOT, check=False)
    if failed:
        sys.exit(f"benchmarks that failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
