"""Leak check: RSS of a served instrumented app after 10,000 and after 100,000 requests.

The app is Starlette under ``instrument()`` with everything on (``_stack_apps``), served
by uvicorn (one worker, httptools and uvloop) pinned to CPU 0 with its access log written
to a file. A bounded Python client pinned to CPU 1 sends an exact number of requests over
16 keep-alive connections, cycling through four kinds, each with a fresh X-Request-ID:

- ``GET /hello/name-<n>``: a new path every time, one route template.
- ``POST /echo`` with 1 KiB of JSON.
- ``GET /missing/<n>``: a new unmatched path every time, which returns 404.
- ``GET /readyz``: the readiness probe.

RSS is read from /proc/<pid>/status after every 10,000 requests. Target: RSS after
100,000 requests at most 5% above RSS after 10,000.

Usage: python benchmarks/memory.py [--quick] [--requests N] [--json F]
``--quick`` sends 20,000 requests and compares RSS after 20,000 with RSS after 10,000.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _harness import (
    HERE,
    LOAD_CPU,
    SERVER_CPU,
    free_port,
    machine_facts,
    rss_bytes,
    stop_group,
    wait_listening,
)
from _load import read_response
from _stack_apps import echo_body

CONNECTIONS = 16
CHECKPOINT = 10_000
TARGET_GROWTH = 0.05


def build_request(index: int) -> tuple[bytes, int]:
    """Return the raw request number ``index`` and the status it must get."""
    kind = index % 4
    headers = f"host: 127.0.0.1\r\nx-request-id: mem-{index:08d}\r\n"
    if kind == 0:
        return f"GET /hello/name-{index} HTTP/1.1\r\n{headers}\r\n".encode(), 200
    if kind == 1:
        body = echo_body()
        head = (
            f"POST /echo HTTP/1.1\r\n{headers}content-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body, 200
    if kind == 2:
        return f"GET /missing/{index} HTTP/1.1\r\n{headers}\r\n".encode(), 404
    return f"GET /readyz HTTP/1.1\r\n{headers}\r\n".encode(), 200


async def send_requests(port: int, indexes: range) -> int:
    """Send the requests numbered ``indexes`` over keep-alive connections.

    Return the number of responses whose status was not the expected one.
    """
    numbers = iter(indexes)
    errors = 0

    async def connection() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for index in numbers:
                request, expected = build_request(index)
                writer.write(request)
                if await read_response(reader) != expected:
                    errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))
    return errors


def start_server(log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    command = [
        "taskset", "-c", str(SERVER_CPU), sys.executable, "-m", "uvicorn",
        "--factory", "_stack_apps:starlette_instrumented", "--app-dir", str(HERE),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--no-access-log",
        "--log-level", "warning",
    ]  # fmt: skip
    with log.open("wb") as stream:
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=stream, start_new_session=True
        )
    wait_listening(process, port)
    return process, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 requests: under a minute")
    parser.add_argument("--requests", type=int, default=100_000, help="total requests to send")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    total = 2 * CHECKPOINT if args.quick else args.requests
    if total < 2 * CHECKPOINT or total % CHECKPOINT:
        sys.exit(f"invalid --requests={total}: use a multiple of {CHECKPOINT} of at least 20000")
    os.sched_setaffinity(0, {LOAD_CPU})

    facts = machine_facts()
    checkpoints: list[tuple[int, int]] = []
    errors = 0
    with tempfile.TemporaryDirectory(prefix="mlmw-memory-") as directory:
        process, port = start_server(Path(directory) / "server.log")
        try:
            initial = rss_bytes(process.pid)
            for start in range(0, total, CHECKPOINT):
                errors += asyncio.run(send_requests(port, range(start, start + CHECKPOINT)))
                checkpoints.append((start + CHECKPOINT, rss_bytes(process.pid)))
                print(f"memory: {start + CHECKPOINT} requests sent", file=sys.stderr)
        finally:
            stop_group(process)

    first, last = checkpoints[0][1], checkpoints[-1][1]
    growth = last / first - 1
    state = "met" if growth <= TARGET_GROWTH and errors == 0 else "missed"
    print(f"RSS before load: {initial / 2**20:.1f} MiB; unexpected statuses: {errors}")
    print()
    print("| requests | RSS MiB |")
    print("|---:|---:|")
    for count, rss in checkpoints:
        print(f"| {count:,} | {rss / 2**20:.1f} |")
    print()
    print(
        f"Growth from {CHECKPOINT:,} to {total:,} requests: {growth * 100:+.1f}% "
        f"(target at most +{TARGET_GROWTH * 100:.0f}%): {state}"
    )
    if args.json is not None:
        document = {
            "machine": facts,
            "requests": total,
            "initial_rss_bytes": initial,
            "checkpoints": [{"requests": c, "rss_bytes": r} for c, r in checkpoints],
            "growth": growth,
            "unexpected_statuses": errors,
        }
        args.json.write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
