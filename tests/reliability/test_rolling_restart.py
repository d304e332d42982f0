"""Rolling restart: SIGTERM to the launcher while clients keep sending requests."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.reliability.support import Launcher

CLIENT_THREADS = 4
DRAIN_SECONDS = 2.0
# A bound, not the target: the documented target is 100 ms from SIGTERM to a failing
# /readyz. The bound is generous because other suites share the 2 CPU cores.
READINESS_FALL_BOUND_S = 1.0


@dataclass(frozen=True)
class Sent:
    started: float
    status: int | None
    exception: str | None


def keep_sending(url: str, index: int, stop: threading.Event, sent: list[Sent]) -> None:
    """Send requests on one keep-alive connection until ``stop``, recording each outcome."""
    with httpx.Client(base_url=url, timeout=30.0) as client:
        n = 0
        while not stop.is_set():
            n += 1
            started = time.monotonic()
            try:
                if n % 2:
                    response = client.post("/v1/predict", json={"inputs": {"x": n, "delay_ms": 30}})
                else:
                    response = client.get(f"/items/{index}")
            except httpx.HTTPError as exc:
                sent.append(Sent(started, None, repr(exc)))
                time.sleep(0.01)
                continue
            sent.append(Sent(started, response.status_code, None))


def send_during_drain(url: str, sigterm_at: float, statuses: list[int | None]) -> None:
    """Send GET requests on fresh connections during the first half of the drain."""
    for offset in (0.2, 0.4, 0.6, 0.8):
        time.sleep(max(0.0, sigterm_at + offset - time.monotonic()))
        try:
            statuses.append(httpx.get(f"{url}/items/7", timeout=10.0).status_code)
        except httpx.HTTPError:
            statuses.append(None)


def watch_readiness(url: str, stop: threading.Event, seen: list[tuple[float, int]]) -> None:
    """Poll /readyz on fresh connections, so that both workers are sampled."""
    while not stop.is_set():
        try:
            status = httpx.get(f"{url}/readyz", timeout=5.0).status_code
        except httpx.HTTPError:
            status = 0
        seen.append((time.monotonic(), status))
        time.sleep(0.005)


def log_time(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(record["ts"]).replace("Z", "+00:00")).timestamp()


def server_side_fall_s(records: list[dict[str, Any]], sigterm_wall: float) -> float | None:
    """Return the time from sending SIGTERM to the last worker's drain record.

    Each worker calls ``begin_shutdown()``, which fails /readyz, just before it logs
    "Received SIGTERM, draining", so this is the readiness fall as the server saw it.
    """
    draining = [
        log_time(record)
        for record in records
        if str(record.get("message", "")).startswith("Received SIGTERM, draining")
    ]
    if len(draining) < 2:
        return None
    return max(draining) - sigterm_wall


@pytest.mark.slow
def test_sigterm_under_load(launcher_factory: Callable[..., Launcher]) -> None:
    launcher = launcher_factory(
        workers=2, args=("--drain-seconds", str(DRAIN_SECONDS), "--graceful-timeout", "10")
    )
    launcher.wait_ready()
    stop = threading.Event()
    sent: list[list[Sent]] = [[] for _ in range(CLIENT_THREADS)]
    readiness: list[tuple[float, int]] = []
    threads = [
        threading.Thread(target=keep_sending, args=(launcher.url, i, stop, sent[i]), daemon=True)
        for i in range(CLIENT_THREADS)
    ]
    threads.append(
        threading.Thread(target=watch_readiness, args=(launcher.url, stop, readiness), daemon=True)
    )
    slow: list[httpx.Response] = []
    slow_thread = threading.Thread(
        target=lambda: slow.append(
            httpx.post(
                f"{launcher.url}/v1/predict",
                json={"inputs": {"x": 1, "delay_ms": 1500}},
                timeout=30.0,
            )
        ),
        daemon=True,
    )
    for thread in threads:
        thread.start()

    time.sleep(2.0)
    slow_thread.start()
    time.sleep(0.3)
    sigterm_at = time.monotonic()
    sigterm_wall = time.time()
    os.kill(launcher.pid, signal.SIGTERM)
    # The keep-alive clients may all be waiting behind the slow batch during the first half
    # of the drain, so fresh connections check that the workers still accept and serve.
    in_drain: list[int | None] = []
    drain_thread = threading.Thread(
        target=send_during_drain, args=(launcher.url, sigterm_at, in_drain), daemon=True
    )
    drain_thread.start()
    status = launcher.wait(timeout=30)
    drain_thread.join(timeout=30)
    stop.set()
    for thread in [*threads, slow_thread]:
        thread.join(timeout=30)

    outcomes = [outcome for per_client in sent for outcome in per_client]
    before = [outcome for outcome in outcomes if outcome.started < sigterm_at]
    failed_before = [outcome for outcome in before if outcome.status != 200]
    fell = [at for at, code in readiness if at >= sigterm_at and code == 503]
    readiness_fall_s = fell[0] - sigterm_at if fell else None
    after = [outcome for outcome in outcomes if outcome.started >= sigterm_at]
    # Workers keep serving during the drain. Only its first half is checked, because the
    # listener may close at its end while a request is on its way.
    served_in_drain = [
        outcome
        for outcome in after
        if outcome.started < sigterm_at + DRAIN_SECONDS / 2 and outcome.status == 200
    ]
    server_fall_s = server_side_fall_s(launcher.records(), sigterm_wall)
    # The client-side figure includes up to one /readyz round trip, which can take 100 ms or
    # more on a loaded 2-core machine. The server-side figure comes from log timestamps.
    print(
        f"rolling restart: {len(before)} requests before SIGTERM, {len(after)} after "
        f"({sum(outcome.status == 200 for outcome in after)} served, "
        f"{len(served_in_drain)} of them started in the first half of the drain); readiness fell "
        f"{server_fall_s} s after SIGTERM in the server logs, first 503 seen by a client "
        f"after {readiness_fall_s} s (target 0.1 s)"
    )

    assert status == 0
    assert len(before) > 20
    assert failed_before == []
    assert in_drain == [200, 200, 200, 200]
    assert [response.status_code for response in slow] == [200]
    assert readiness_fall_s is not None
    assert readiness_fall_s < READINESS_FALL_BOUND_S
    assert server_fall_s is not None
    assert server_fall_s < READINESS_FALL_BOUND_S
