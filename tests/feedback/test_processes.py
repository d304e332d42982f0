"""Feedback files written by real uvicorn processes on 127.0.0.1 sharing one directory."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import orjson
import pytest

from tests.feedback._support import feedback_server, post_many, read_records, running_servers

pytestmark = pytest.mark.slow


def test_four_processes_store_every_acknowledged_record(tmp_path: Path) -> None:
    with running_servers(tmp_path, 4) as servers:

        async def burst() -> list[list[str]]:
            return await asyncio.gather(
                *(post_many(server.base_url, 1000, concurrency=8) for server in servers)
            )

        acknowledged = asyncio.run(burst())

    ids = [record_id for server_ids in acknowledged for record_id in server_ids]
    records = read_records(tmp_path)
    stored = Counter(record["id"] for record in records)
    assert len(ids) == 4000
    assert all(stored[record_id] == 1 for record_id in ids)
    assert len(records) == 4000
    assert not list(tmp_path.glob("*.active"))


def test_four_processes_write_separate_files(tmp_path: Path) -> None:
    with running_servers(tmp_path, 4) as servers:

        async def burst() -> None:
            await asyncio.gather(*(post_many(server.base_url, 50) for server in servers))

        asyncio.run(burst())
        pids = {str(server.process.pid) for server in servers if server.process is not None}

    files_by_pid: dict[str, set[str]] = {}
    for record in read_records(tmp_path):
        pid = record["_file"].split("-")[-2]
        files_by_pid.setdefault(pid, set()).add(record["_file"])
    assert set(files_by_pid) == pids


def test_sigterm_during_burst_keeps_acknowledged(tmp_path: Path) -> None:
    server = feedback_server(tmp_path).start()
    acknowledged: list[str] = []
    signalled = threading.Event()
    process = server.process
    assert process is not None

    async def burst() -> None:
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(base_url=server.base_url, limits=limits) as client:

            async def worker(worker_id: int) -> None:
                # Bounded: the server stops accepting within a few hundred posts of SIGTERM.
                for index in range(500):
                    body = {"request_id": f"w{worker_id}-{index}", "label": "ok"}
                    try:
                        response = await client.post("/feedback", json=body, timeout=30.0)
                    except httpx.TransportError:
                        return
                    if response.status_code == 202:
                        acknowledged.append(response.json()["id"])
                    if len(acknowledged) >= 300 and not signalled.is_set():
                        signalled.set()
                        os.kill(process.pid, signal.SIGTERM)

            await asyncio.gather(*(worker(worker_id) for worker_id in range(16)))

    asyncio.run(burst())
    returncode = server.stop(timeout=30.0)
    records = read_records(tmp_path)
    stored = {record["id"] for record in records}

    # uvicorn re-raises SIGTERM after its graceful shutdown, so -15 is a clean exit too.
    assert returncode in (0, -signal.SIGTERM)
    assert len(acknowledged) >= 300
    assert len(records) == len(acknowledged)
    assert stored == set(acknowledged)


def test_rotation_under_load_shows_complete_files(tmp_path: Path) -> None:
    stop = threading.Event()
    problems: list[str] = []
    reads = 0

    def reader() -> None:
        # A shipper that globs closed files and parses each one whole.
        nonlocal reads
        while not stop.is_set():
            for path in tmp_path.glob("*.jsonl"):
                data = path.read_bytes()
                reads += 1
                if not data.endswith(b"\n"):
                    problems.append(f"{path.name} ends in a partial line")
                for line in data.splitlines():
                    try:
                        orjson.loads(line)
                    except orjson.JSONDecodeError:
                        problems.append(f"{path.name} has an invalid line")
            time.sleep(0.005)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        with running_servers(tmp_path, 2, FEEDBACK_ROTATE_BYTES="4096") as servers:

            async def burst() -> list[list[str]]:
                return await asyncio.gather(
                    *(post_many(server.base_url, 300) for server in servers)
                )

            acknowledged = asyncio.run(burst())
    finally:
        stop.set()
        thread.join()

    stored = {record["id"] for record in read_records(tmp_path)}
    assert problems == []
    assert reads > 0
    assert len(list(tmp_path.glob("*.jsonl"))) > 10
    assert all(record_id in stored for ids in acknowledged for record_id in ids)
