"""Measure the launcher's line relay: CPU per log line with 4 workers writing at once.

Four forked producers stand in for four workers. Each writes JSON-sized lines (330 bytes,
the size of an access log line) into its own pipe with one ``write`` per line, as a
logging handler does. The parent, pinned to CPU 0, either relays the lines with
``LineRelay`` to /dev/null from one selector loop, as ``mlmiddleware run`` does, or only
reads and discards them (``plain``, the floor for any reader). Producers run on CPU 1.

Reported: the parent's user + system CPU time per line, the relay's extra over plain,
and lines/s through the parent. The medians are taken over interleaved rounds.

Usage: python benchmarks/log_relay.py [--quick] [--lines N] [--rounds N] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import statistics
import time
from pathlib import Path

from _harness import LOAD_CPU, SERVER_CPU, machine_facts

from mlmiddleware.launcher.relay import LineRelay

WORKERS = 4
LINE_BYTES = 330


def produce(fd: int, lines: int) -> None:
    os.sched_setaffinity(0, {LOAD_CPU})
    line = b'{"level":"INFO","message":"' + b"x" * (LINE_BYTES - 30) + b'"}\n'
    for _ in range(lines):
        os.write(fd, line)
    os.close(fd)


def start_producers(lines: int) -> tuple[list[int], list[int]]:
    """Fork the producers; return their pids and the read ends of their pipes."""
    pids, fds = [], []
    for _ in range(WORKERS):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            produce(write_fd, lines)
            os._exit(0)
        os.close(write_fd)
        pids.append(pid)
        fds.append(read_fd)
    return pids, fds


def consume(fds: list[int], relay: bool, sink: int) -> None:
    selector = selectors.DefaultSelector()
    for fd in fds:
        if relay:
            selector.register(fd, selectors.EVENT_READ, LineRelay(fd, sink))
        else:
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ, None)

    open_fds = len(fds)
    while open_fds:
        for key, _ in selector.select():
            if not pump(key, relay):
                selector.unregister(key.fd)
                open_fds -= 1
    selector.close()


def pump(key: selectors.SelectorKey, relay: bool) -> bool:
    """Drain one ready pipe; return ``False`` at end of file."""
    if relay:
        line_relay: LineRelay = key.data
        return line_relay.pump()

    while True:
        try:
            chunk = os.read(key.fd, 65536)
        except BlockingIOError:
            return True
        if not chunk:
            return False


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(lines: int, relay: bool) -> dict[str, float]:
    sink = os.open(os.devnull, os.O_WRONLY)
    pids, fds = start_producers(lines)
    cpu_before = cpu_self()
    started = time.perf_counter()

    consume(fds, relay, sink)

    elapsed = time.perf_counter() - started
    cpu_used = cpu_self() - cpu_before
    for pid in pids:
        os.waitpid(pid, 0)
    for fd in fds:
        os.close(fd)
    os.close(sink)
    total = lines * WORKERS
    return {"cpu_us_per_line": cpu_used * 1e6 / total, "lines_per_s": total / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 20,000 lines per worker")
    parser.add_argument("--lines", type=int, default=100_000, help="lines per worker and round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    lines, rounds = (20_000, 3) if args.quick else (args.lines, args.rounds)
    os.sched_setaffinity(0, {SERVER_CPU})

    samples: dict[str, list[dict[str, float]]] = {"plain": [], "relay": []}
    for _ in range(rounds):
        for mode in samples:
            samples[mode].append(measure(lines, relay=mode == "relay"))

    medians = {
        mode: {name: statistics.median(s[name] for s in values) for name in values[0]}
        for mode, values in samples.items()
    }
    extra = medians["relay"]["cpu_us_per_line"] - medians["plain"]["cpu_us_per_line"]
    print(
        f"{WORKERS} producers x {lines:,} lines of {LINE_BYTES} bytes, one write per line; "
        f"parent on CPU {SERVER_CPU}, producers on CPU {LOAD_CPU}; median of {rounds} rounds."
    )
    print()
    print("| reader | parent CPU us/line | lines/s through the parent |")
    print("|---|---:|---:|")
    for mode, row in medians.items():
        print(f"| {mode} | {row['cpu_us_per_line']:.2f} | {row['lines_per_s']:,.0f} |")
    print()
    print(f"LineRelay adds {extra:.2f} us of launcher CPU per line over a plain read.")
    if args.json is not None:
        document = {
            "machine": machine_facts(),
            "workers": WORKERS,
            "lines_per_worker": lines,
            "rounds": rounds,
            "medians": medians,
            "relay_extra_us_per_line": extra,
            "samples": samples,
        }
        args.json.write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
