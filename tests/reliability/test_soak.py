"""Soak: mixed traffic at a fixed rate through ``mlmiddleware run --workers 2``.

``MLMW_SOAK_SECONDS`` (default 120, what CI runs) sets the duration; developers can shorten
it, for example ``MLMW_SOAK_SECONDS=20 python -m pytest tests/reliability/test_soak.py``.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.reliability.support import Launcher, metric_samples, process_usage, scrape

SOAK_SECONDS = float(os.environ.get("MLMW_SOAK_SECONDS", "120"))
REQUESTS_PER_SECOND = 20.0
# Usage is compared from the end of the warm-up, once thread pools and caches have grown.
WARMUP_SECONDS = min(15.0, SOAK_SECONDS / 4)
# Slack for pool threads that start and stop with the load. anyio's pool runs FastAPI's
# sync routes and the item decoding, and stops a thread after 10 s idle (anyio 4.16,
# MAX_IDLE_TIME). A leak of one fd or thread per request would exceed these by far.
FD_SLACK = 8
THREAD_SLACK = 8
CLIENT_THREADS = 8


@dataclass(frozen=True)
class Outcome:
    kind: str
    status: int | None
    error_type: str | None = None
    exception: str | None = None


Call = Callable[[httpx.Client, int], httpx.Response]

# One cycle of the traffic mix; every 20th request requests a model failure on purpose.
MIX: list[tuple[str, Call]] = [
    ("predict", lambda c, n: c.post("/v1/predict", json={"inputs": n})),
    ("page", lambda c, n: c.get("/")),
    ("predict_batch", lambda c, n: c.post("/v1/predict", json={"instances": [n, n + 1, n + 2]})),
    ("item", lambda c, n: c.get(f"/items/{n}")),
    ("predict_slow", lambda c, n: c.post("/v1/predict", json={"inputs": {"x": n, "delay_ms": 20}})),
    ("readyz", lambda c, n: c.get("/readyz")),
    ("echo", lambda c, n: c.post("/echo", json={"n": n})),
    ("feedback", lambda c, n: c.post("/feedback", json={"request_id": f"soak-{n}", "label": 1})),
    ("predict", lambda c, n: c.post("/v1/predict", json={"inputs": n})),
    ("livez", lambda c, n: c.get("/livez")),
    ("predict_fail", lambda c, n: c.post("/v1/predict", json={"inputs": {"x": n, "fail": True}})),
    ("item", lambda c, n: c.get(f"/items/{n}")),
    ("predict_batch", lambda c, n: c.post("/v1/predict", json={"instances": [n] * 8})),
    ("startupz", lambda c, n: c.get("/startupz")),
    ("predict", lambda c, n: c.post("/v1/predict", json={"inputs": n})),
    ("page", lambda c, n: c.get("/")),
    ("feedback", lambda c, n: c.post("/feedback", json={"request_id": f"soak-{n}", "label": 0})),
    ("predict_slow", lambda c, n: c.post("/v1/predict", json={"inputs": {"x": n, "delay_ms": 5}})),
    ("metrics", lambda c, n: c.get("/metrics")),
    ("item", lambda c, n: c.get(f"/items/{n}")),
]


class Traffic:
    """Send the mix at ``REQUESTS_PER_SECOND`` from a pool of client threads."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.local = threading.local()
        self.pool = ThreadPoolExecutor(CLIENT_THREADS)
        self.futures: list[Future[Outcome]] = []
        self.clients: list[httpx.Client] = []

    def client(self) -> httpx.Client:
        client: httpx.Client | None = getattr(self.local, "client", None)
        if client is None:
            client = httpx.Client(base_url=self.url, timeout=30.0)
            self.local.client = client
            self.clients.append(client)
        return client

    def send(self, index: int) -> Outcome:
        kind, call = MIX[index % len(MIX)]
        try:
            response = call(self.client(), index)
        except httpx.HTTPError as exc:
            return Outcome(kind, None, exception=repr(exc))

        error_type = None
        if response.status_code >= 400:
            error_type = _error_type(response)
        return Outcome(kind, response.status_code, error_type)

    def run(self, seconds: float, on_tick: Callable[[float], None]) -> None:
        started = time.monotonic()
        index = 0
        while (elapsed := time.monotonic() - started) < seconds:
            self.futures.append(self.pool.submit(self.send, index))
            index += 1
            on_tick(elapsed)
            time.sleep(max(0.0, started + index / REQUESTS_PER_SECOND - time.monotonic()))

    def outcomes(self) -> list[Outcome]:
        self.pool.shutdown(wait=True)
        for client in self.clients:
            client.close()
        return [future.result() for future in self.futures]


def _error_type(response: httpx.Response) -> str | None:
    try:
        document: Any = response.json()
        return str(document["error"]["type"])
    except (ValueError, KeyError, TypeError):
        return None


@pytest.mark.slow
@pytest.mark.timeout(SOAK_SECONDS + 180)
def test_soak_mixed_traffic(launcher_factory: Callable[..., Launcher]) -> None:
    launcher = launcher_factory(workers=2, args=("--drain-seconds", "0"))
    pids = launcher.wait_ready()
    traffic = Traffic(launcher.url)
    usage: dict[str, dict[int, tuple[int, int]]] = {}

    def on_tick(elapsed: float) -> None:
        if "warm" not in usage and elapsed >= WARMUP_SECONDS:
            usage["warm"] = {pid: process_usage(pid) for pid in pids}

    traffic.run(SOAK_SECONDS, on_tick)
    outcomes = traffic.outcomes()
    usage["end"] = {pid: process_usage(pid) for pid in pids}
    text = scrape(launcher.url)
    pids_at_end = launcher.worker_pids()
    status = launcher.stop()

    counts = Counter((outcome.kind, outcome.status) for outcome in outcomes)
    print(f"soak: {len(outcomes)} requests in {SOAK_SECONDS:.0f} s: {dict(counts)}")
    print(f"soak: worker (fds, threads) after warm-up {usage['warm']}, at end {usage['end']}")

    exceptions = [outcome for outcome in outcomes if outcome.exception is not None]
    unexpected_5xx = [
        outcome
        for outcome in outcomes
        if outcome.status is not None
        and outcome.status >= 500
        and not (outcome.kind == "predict_fail" and outcome.error_type == "model_error")
    ]
    failed_on_purpose = [outcome for outcome in outcomes if outcome.kind == "predict_fail"]
    other_errors = [
        outcome
        for outcome in outcomes
        if outcome.kind != "predict_fail" and (outcome.status is None or outcome.status >= 400)
    ]
    assert len(outcomes) >= SOAK_SECONDS * REQUESTS_PER_SECOND * 0.9
    assert exceptions == []
    assert unexpected_5xx == []
    assert other_errors == []
    assert all(outcome.status == 500 for outcome in failed_on_purpose)

    in_progress = metric_samples(text, "http_requests_in_progress")
    queue_depth = metric_samples(text, "batch_queue_depth")
    assert in_progress
    assert all(value == 0 for _, value in in_progress), in_progress
    assert all(value == 0 for _, value in queue_depth), queue_depth

    assert pids_at_end == pids
    for pid in pids:
        fds_warm, threads_warm = usage["warm"][pid]
        fds_end, threads_end = usage["end"][pid]
        assert fds_end <= fds_warm + FD_SLACK, f"worker {pid}: fds {fds_warm} -> {fds_end}"
        assert threads_end <= threads_warm + THREAD_SLACK, (
            f"worker {pid}: threads {threads_warm} -> {threads_end}"
        )

    assert status == 0
    assert launcher.records()
