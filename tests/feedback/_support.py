"""Helpers for the feedback tests: feedback servers on 127.0.0.1, load and file readers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.support import ServerProcess


def feedback_server(directory: Path, **env: str) -> ServerProcess:
    """Build (not start) a uvicorn server of ``_server_app`` writing to ``directory``."""
    environment = {"FEEDBACK_DIR": str(directory), **env}
    args = ("--log-level", "warning", "--no-access-log")
    return ServerProcess("tests.feedback._server_app:app", args=args, env=environment)


@contextmanager
def running_servers(directory: Path, count: int, **env: str) -> Iterator[list[ServerProcess]]:
    """Run ``count`` uvicorn processes sharing ``directory``; stop them with SIGTERM."""
    servers = [feedback_server(directory, **env) for _ in range(count)]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop(timeout=30.0)


async def post_many(
    base_url: str, count: int, *, concurrency: int = 16, prefix: str = "r"
) -> list[str]:
    """POST ``count`` feedback items to one server; return the ids from the 202 responses."""
    acknowledged: list[str] = []
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits) as client:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in range(count):
            queue.put_nowait(index)

        async def worker() -> None:
            while not queue.empty():
                index = queue.get_nowait()
                body = {"request_id": f"{prefix}-{index}", "label": index % 3, "score": 0.5}
                response = await client.post("/feedback", json=body, timeout=30.0)
                if response.status_code == 202:
                    acknowledged.append(response.json()["id"])

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return acknowledged


def read_records(directory: Path, pattern: str = "*.jsonl") -> list[dict[str, Any]]:
    """Parse every line of the files matching ``pattern``; fail on a partial line."""
    records: list[dict[str, Any]] = []
    for path in sorted(directory.glob(pattern)):
        data = path.read_bytes()
        assert data.endswith(b"\n"), f"{path.name} ends in a partial line"
        for line in data.splitlines():
            record = orjson.loads(line)
            record["_file"] = path.name
            records.append(record)
    return records
