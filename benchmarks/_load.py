"""A bounded closed-loop HTTP/1.1 load generator on raw asyncio streams.

Each of ``concurrency`` keep-alive connections sends one POST, reads the whole response,
and sends the next, until ``duration_s`` has passed. Latencies of responses completed
after ``warmup_s`` are kept. It parses only the status line and ``content-length``, so one
core drives about ten thousand small requests per second, and the figures near that rate
measure the generator as much as the server.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    """Completed requests, errors, and per-request latencies in seconds."""

    concurrency: int
    duration_s: float
    completed: int = 0
    errors: int = 0
    latencies_s: list[float] = field(default_factory=list)
    # When each response arrived, warmup and the tail after the window included: every
    # response the server CPU time measured over the whole load was spent on.
    finished_s: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Completed requests per second over the measured window."""
        return self.completed / self.duration_s

    def percentile_ms(self, fraction: float) -> float:
        """Latency at ``fraction`` (0.5 for p50) in milliseconds."""
        if not self.latencies_s:
            return float("nan")
        ordered = sorted(self.latencies_s)
        index = min(int(fraction * len(ordered)), len(ordered) - 1)
        return ordered[index] * 1000

    def median_ms(self) -> float:
        return statistics.median(self.latencies_s) * 1000 if self.latencies_s else float("nan")


def build_request(path: str, body: bytes, host: str = "127.0.0.1") -> bytes:
    """Build one raw HTTP/1.1 JSON POST that keeps the connection open."""
    head = (
        f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
            break
    if length:
        await reader.readexactly(length)
    return status


async def _connection(
    port: int, request: bytes, result: LoadResult, measure_from: float, stop_at: float
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while True:
            started = time.perf_counter()
            if started >= stop_at:
                return
            writer.write(request)
            status = await read_response(reader)
            finished = time.perf_counter()
            result.finished_s.append(finished)
            if finished < measure_from or finished > stop_at:
                continue
            if status == 200:
                result.completed += 1
                result.latencies_s.append(finished - started)
            else:
                result.errors += 1
    finally:
        writer.close()


async def run_load(
    port: int,
    request: bytes,
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 0.5,
) -> LoadResult:
    """Drive ``concurrency`` connections for ``warmup_s + duration_s`` and measure the rest."""
    start = time.perf_counter()
    measure_from = start + warmup_s
    stop_at = measure_from + duration_s
    result = LoadResult(concurrency=concurrency, duration_s=duration_s)
    connections = [
        _connection(port, request, result, measure_from, stop_at) for _ in range(concurrency)
    ]
    outcomes = await asyncio.gather(*connections, return_exceptions=True)
    result.errors += sum(1 for outcome in outcomes if isinstance(outcome, BaseException))
    return result
