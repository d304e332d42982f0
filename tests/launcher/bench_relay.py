"""Throughput of the launcher's line relay against a plain pipe read, one worker's output.

Run: ``python tests/launcher/bench_relay.py [LINES] [LINE_BYTES]``. A forked producer
writes JSON-sized lines into a pipe. The parent either only reads them (plain) or relays
them with ``LineRelay`` to /dev/null, as ``mlmiddleware run`` does for each worker.
"""

from __future__ import annotations

import os
import select
import sys
import time

from mlmiddleware.launcher.relay import LineRelay


def produce(fd: int, lines: int, line: bytes) -> None:
    block = line * 1000
    for _ in range(lines // 1000):
        os.write(fd, block)
    os.close(fd)


def consume(fd: int, relay: bool) -> None:
    if not relay:
        while os.read(fd, 65536):
            pass
        os.close(fd)
        return

    sink = os.open(os.devnull, os.O_WRONLY)
    line_relay = LineRelay(fd, sink)
    while True:
        select.select([fd], [], [])
        if not line_relay.pump():
            break
    line_relay.close()
    os.close(sink)


def measure(lines: int, line_bytes: int, relay: bool) -> float:
    """Return the seconds the parent spends consuming ``lines`` lines."""
    line = b"{" + b"x" * (line_bytes - 3) + b"}\n"
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        produce(write_fd, lines, line)
        os._exit(0)

    os.close(write_fd)
    started = time.perf_counter()
    consume(read_fd, relay)
    elapsed = time.perf_counter() - started
    os.waitpid(pid, 0)
    return elapsed


def main() -> None:
    lines = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    line_bytes = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    for relay in (False, True, False, True):
        elapsed = measure(lines, line_bytes, relay)
        print(
            f"{'relay' if relay else 'plain'}: {elapsed:.3f} s, "
            f"{lines / elapsed / 1e6:.2f} M lines/s, {lines * line_bytes / elapsed / 1e6:.0f} MB/s"
        )


if __name__ == "__main__":
    main()
