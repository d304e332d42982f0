"""Compare mlmiddleware's Batcher with one-forward-per-request serving and with mosec.

Three regimes, because on a CPU box the HTTP front end and JSON can cost more than a small
model, and a GPU does not use the server's CPU at all:

- ``model``: MLP 1024->4096->4096->1024 (one torch thread). Its offline batch-32
  throughput is far below the server's HTTP ceiling, so batching decides the result.
- ``http``: MLP 512->2048->512 (one torch thread), 512 floats of JSON per item, so the
  front end decides the result.
- ``device``: a simulated accelerator. A batch takes 8 ms plus 0.25 ms per item, slept
  with the GIL released, so the model uses no CPU of the server's core, as a GPU kernel
  would not. Items are 1024 floats, as in ``model``. It isolates how well a server
  keeps the device busy from how much CPU its front end costs.

Each contender is a separate server process pinned to CPU 0, and the load generator is
pinned to CPU 1:

- ``bare``: uvicorn parsing the JSON and echoing it without a model, the round trip of
  the server alone.
- ``direct``: uvicorn running one forward per request in a thread.
- ``batcher``: uvicorn with ``instrument()`` and ``batching_endpoint``,
  ``max_batch_size=32`` and no access log, with the default policy: dispatch at once
  while the worker is idle.
- ``batcher_timer``: the same with the timer policy, ``dispatch_when_idle=False`` and
  ``max_wait_ms=10``, as mosec's window.
- ``mosec``: its Rust front end with one Python worker process, ``max_batch_size=32``,
  ``max_wait_time=10`` ms, and orjson in both directions.

Rounds interleave the contenders, and each figure is the median over rounds. Server CPU
per item is the user + system time of the server's whole process tree (mosec's worker
included), read from /proc before and after each load point and divided by every
response of that point, warmup included.

Concurrency runs from 1 to 256 in powers of two. After the load, the ``batcher`` server's
``/metrics`` is scraped and ``batch_inference_duration_seconds`` is kept per batch size
label, summed over every concurrency level and round.

Usage: python benchmarks/batching.py [--quick] [--rounds N] [--duration S] [--regime R]
    [--json F]
``--quick`` (1 round of 1.5 s at concurrency 1, 16 and 256) finishes in about 3 minutes
and writes ``benchmarks/results/batching-quick.json``. A full run writes
``benchmarks/results/batching.json`` (or ``--json F``). ``benchmarks/plots.py`` draws the
plots from ``benchmarks/results/batching.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SERVER_CPUS = {0}
LOAD_CPUS = {1}
MAX_BATCH_SIZE = 32
MOSEC_WAIT_MS = 10
CONTENDERS = ("bare", "direct", "batcher", "batcher_timer", "mosec")
CONCURRENCY = (1, 2, 4, 8, 16, 32, 64, 128, 256)
QUICK_CONCURRENCY = (1, 16, 256)


@dataclass(frozen=True)
class Regime:
    name: str
    # Layer widths of the MLP. The first is the item width.
    layers: tuple[int, ...]
    # (fixed ms, ms per item) of a simulated device batch, or None for a real MLP.
    device_ms: tuple[float, float] | None = None

    @property
    def title(self) -> str:
        """Describe the model in a table or plot heading."""
        if self.device_ms is None:
            return f"{self.name}: MLP {'->'.join(map(str, self.layers))}"
        fixed, per_item = self.device_ms
        return f"{self.name}: {fixed:g} ms + {per_item:g} ms per item, {self.layers[0]} floats"


REGIMES = {
    "model": Regime("model-bound", (1024, 4096, 4096, 1024)),
    "http": Regime("HTTP-bound", (512, 2048, 512)),
    "device": Regime("device-bound", (1024,), device_ms=(8.0, 0.25)),
}


# -- model and servers (run in the server processes) ---------------------------------


def build_model(regime: Regime) -> Any:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    layers: list[Any] = []
    for index, (width_in, width_out) in enumerate(
        zip(regime.layers, regime.layers[1:], strict=False)
    ):
        layers.append(torch.nn.Linear(width_in, width_out))
        if index < len(regime.layers) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers).eval()


def make_forward(regime: Regime) -> Any:
    """Return ``forward(list of float lists) -> list of float32 rows``."""
    import numpy as np
    import torch

    if regime.device_ms is not None:
        return _device_forward(*regime.device_ms)
    model = build_model(regime)

    def forward(items: list[Any]) -> list[Any]:
        batch = torch.from_numpy(np.asarray(items, dtype=np.float32))
        with torch.inference_mode():
            output = model(batch)
        return list(output.numpy())

    return forward


def _device_forward(fixed_ms: float, per_item_ms: float) -> Any:
    """Return a forward that converts the batch on the CPU, then waits like a device."""
    import threading

    import numpy as np

    # One device runs one batch at a time, so concurrent callers queue for it.
    device = threading.Lock()

    def forward(items: list[Any]) -> list[Any]:
        batch = np.asarray(items, dtype=np.float32)
        with device:
            # time.sleep releases the GIL, as a CUDA synchronize does while kernels run.
            time.sleep((fixed_ms + per_item_ms * len(items)) / 1000)
        return list(batch * np.float32(0.5))

    return forward


def uvicorn_app(kind: str, regime: Regime, *, freeze_gc: bool = True) -> Any:
    import anyio.to_thread
    import orjson
    from prometheus_client import CollectorRegistry

    from mlmiddleware import instrument
    from mlmiddleware.batching import Batcher, batching_endpoint

    forward = make_forward(regime)
    if kind in ("batcher", "batcher_timer"):
        timer = kind == "batcher_timer"
        batcher = Batcher(
            forward,
            max_batch_size=MAX_BATCH_SIZE,
            name="mlp",
            dispatch_when_idle=not timer,
            max_wait_ms=MOSEC_WAIT_MS,
        )
        return instrument(
            batching_endpoint(batcher),
            batchers=[batcher],
            registry=CollectorRegistry(),
            json_logs=False,
            access_log=False,
            freeze_gc=freeze_gc,
        )

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)

        item = orjson.loads(body)["inputs"]
        output = item
        if kind == "direct":
            output = (await anyio.to_thread.run_sync(forward, [item]))[0]
        payload = orjson.dumps({"outputs": output}, option=orjson.OPT_SERIALIZE_NUMPY)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    return app


def serve_uvicorn(kind: str, regime: Regime, port: int) -> None:
    run_uvicorn(uvicorn_app(kind, regime), port)


def run_uvicorn(app: Any, port: int) -> None:
    """Serve ``app`` on 127.0.0.1 the way every uvicorn contender is served."""
    import uvicorn

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
        lifespan="on",
    )


def serve_mosec(regime_key: str, port: int) -> None:
    import orjson
    from mosec import Server, Worker

    class MLPWorker(Worker):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.forward_items = make_forward(REGIMES[regime_key])

        def deserialize(self, data: bytes) -> Any:
            return orjson.loads(data)["inputs"]

        def serialize(self, data: Any) -> bytes:
            return orjson.dumps({"outputs": data}, option=orjson.OPT_SERIALIZE_NUMPY)

        def forward(self, data: list[Any]) -> list[Any]:
            return self.forward_items(data)

    # mosec reads its options from the command line.
    sys.argv = [
        sys.argv[0],
        "--address",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    server = Server()
    server.append_worker(
        MLPWorker,
        num=1,
        max_batch_size=MAX_BATCH_SIZE,
        max_wait_time=MOSEC_WAIT_MS,
        start_method="fork",
    )
    server.run()


def measure_offline(regime: Regime, seconds: float) -> dict[str, float]:
    """Time the model alone: one item per call, and batches of ``MAX_BATCH_SIZE``."""
    import numpy as np

    forward = make_forward(regime)
    width = regime.layers[0]
    single = [np.random.default_rng(0).random(width).tolist()]
    batch = single * MAX_BATCH_SIZE
    for _ in range(20):
        forward(batch)

    single_times = []
    for _ in range(200):
        started = time.perf_counter()
        forward(single)
        single_times.append(time.perf_counter() - started)

    calls = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        forward(batch)
        calls += 1
    elapsed = time.perf_counter() - started
    return {
        "single_forward_ms": statistics.median(single_times) * 1000,
        "batch_items_per_s": calls * MAX_BATCH_SIZE / elapsed,
    }


# -- driver (runs in the main process) -----------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pin_to_server_cpus() -> None:
    os.sched_setaffinity(0, SERVER_CPUS)


def start_server(kind: str, regime_key: str, port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, __file__, "--serve", kind, "--regime", regime_key]
    command += ["--port", str(port)]
    # One OpenMP thread for every thread of the server, the batcher's worker thread included,
    # not only for the thread that calls torch.set_num_threads().
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        command,
        preexec_fn=pin_to_server_cpus,
        env=env,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )


def request_bytes(kind: str, regime: Regime) -> tuple[str, bytes]:
    from _load import build_request

    body = json.dumps({"inputs": [0.5] * regime.layers[0]}).encode()
    path = "/inference" if kind == "mosec" else "/"
    return path, build_request(path, body)


def wait_ready(port: int, request: bytes, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(request)
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"server on port {port} did not return 200 within {timeout_s} s")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    # The server runs in its own session, so this also stops mosec's worker processes.
    try:
        os.killpg(process.pid, 15)
        process.wait(20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, 9)
        process.wait()


def run_contender(
    kind: str, regime_key: str, duration_s: float, levels: tuple[int, ...]
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Load one contender at every concurrency in ``levels``.

    Return its rows and, for ``batcher``, its inference histograms by batch size.
    """
    from _harness import cpu_seconds
    from _load import run_load

    regime = REGIMES[regime_key]
    _, request = request_bytes(kind, regime)
    port = free_port()
    process = start_server(kind, regime_key, port)
    rows = []
    inference: dict[str, dict[str, Any]] = {}
    try:
        wait_ready(port, request)
        for concurrency in levels:
            # The whole process tree, so that mosec's worker process counts too.
            cpu_before = cpu_seconds(process.pid, tree=True)
            result = asyncio.run(
                run_load(port, request, concurrency=concurrency, duration_s=duration_s)
            )
            cpu_used = cpu_seconds(process.pid, tree=True) - cpu_before
            rows.append(
                {
                    "regime": regime_key,
                    "contender": kind,
                    "concurrency": concurrency,
                    "items_per_s": result.rate,
                    "p50_ms": result.percentile_ms(0.5),
                    "p99_ms": result.percentile_ms(0.99),
                    "cpu_us_per_item": cpu_used * 1e6 / max(len(result.finished_s), 1),
                    "errors": result.errors,
                }
            )
        if kind == "batcher":
            inference = scrape_inference(port)
    finally:
        stop_server(process)
    return rows, inference


def scrape_inference(port: int) -> dict[str, dict[str, Any]]:
    """Read ``batch_inference_duration_seconds`` from ``/metrics``, keyed by batch size label."""
    from urllib.request import urlopen

    from prometheus_client.parser import text_string_to_metric_families

    with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()

    histograms: dict[str, dict[str, Any]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "batch_inference_duration_seconds":
            continue
        for sample in family.samples:
            entry = histograms.setdefault(
                sample.labels["batch_size"], {"count": 0.0, "sum_s": 0.0, "buckets": {}}
            )
            if sample.name.endswith("_bucket"):
                entry["buckets"][sample.labels["le"]] = sample.value
            elif sample.name.endswith("_count"):
                entry["count"] = sample.value
            elif sample.name.endswith("_sum"):
                entry["sum_s"] = sample.value
    return histograms


def merge_inference(
    total: dict[str, dict[str, Any]], more: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Add the histograms of ``more`` to ``total`` (same buckets) and return ``total``."""
    for label, entry in more.items():
        into = total.setdefault(label, {"count": 0.0, "sum_s": 0.0, "buckets": {}})
        into["count"] += entry["count"]
        into["sum_s"] += entry["sum_s"]
        for bound, value in entry["buckets"].items():
            into["buckets"][bound] = into["buckets"].get(bound, 0.0) + value
    return total


def quantile_from_buckets(buckets: dict[str, float], fraction: float) -> float:
    """Estimate a quantile from cumulative buckets by linear interpolation within a bucket.

    This is how PromQL's ``histogram_quantile`` estimates it. A quantile in the +Inf
    bucket returns the highest finite bound.
    """
    ordered = sorted((float(bound), count) for bound, count in buckets.items())
    total = ordered[-1][1] if ordered else 0.0
    if total == 0:
        return float("nan")
    rank = fraction * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 1.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound


def inference_table(inference: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = [
        "\nbatch_inference_duration_seconds from the batcher's /metrics "
        "(p50 and p99 estimated from the buckets):\n",
        "| regime | batch size label | batches | mean ms | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for regime_key, by_size in inference.items():
        for label in sorted(by_size, key=int):
            entry = by_size[label]
            if not entry["count"]:
                continue
            mean_ms = entry["sum_s"] / entry["count"] * 1000
            p50_ms = quantile_from_buckets(entry["buckets"], 0.5) * 1000
            p99_ms = quantile_from_buckets(entry["buckets"], 0.99) * 1000
            lines.append(
                f"| {regime_key} | {label} | {entry['count']:.0f} | {mean_ms:.2f} "
                f"| {p50_ms:.2f} | {p99_ms:.2f} |"
            )
    return "\n".join(lines)


def offline_in_subprocess(regime_key: str, seconds: float) -> dict[str, float]:
    command = [sys.executable, __file__, "--offline", regime_key, "--duration", str(seconds)]
    output = subprocess.run(
        command, preexec_fn=pin_to_server_cpus, capture_output=True, check=True, timeout=300
    )
    return dict(json.loads(output.stdout))


def median_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    grouped: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault((row["regime"], row["contender"], row["concurrency"]), []).append(row)

    merged = []
    for (regime, contender, concurrency), group in grouped.items():
        merged.append(
            {
                "regime": regime,
                "contender": contender,
                "concurrency": concurrency,
                "items_per_s": statistics.median(row["items_per_s"] for row in group),
                "p50_ms": statistics.median(row["p50_ms"] for row in group),
                "p99_ms": statistics.median(row["p99_ms"] for row in group),
                "cpu_us_per_item": statistics.median(row["cpu_us_per_item"] for row in group),
                "errors": sum(row["errors"] for row in group),
                "rounds": len(group),
            }
        )
    return merged


def lookup(rows: list[dict[str, Any]], regime: str, contender: str, concurrency: int) -> Any:
    for row in rows:
        if (row["regime"], row["contender"], row["concurrency"]) == (
            regime,
            contender,
            concurrency,
        ):
            return row
    return None


def report(rows: list[dict[str, Any]], offline: dict[str, dict[str, float]]) -> str:
    lines = []
    for regime_key, numbers in offline.items():
        regime = REGIMES[regime_key]
        lines.append(f"\n### {regime.title}\n")
        lines.append(
            f"Offline: single-item forward {numbers['single_forward_ms']:.2f} ms, "
            f"batch-{MAX_BATCH_SIZE} throughput {numbers['batch_items_per_s']:.0f} items/s.\n"
        )
        lines.append(
            "| contender | concurrency | items/s | p50 ms | p99 ms | server CPU us/item | errors |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---:|")
        for contender in CONTENDERS:
            for concurrency in CONCURRENCY:
                row = lookup(rows, regime_key, contender, concurrency)
                if row is None:
                    continue
                lines.append(
                    f"| {contender} | {concurrency} | {row['items_per_s']:.0f} | "
                    f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['cpu_us_per_item']:.0f} | "
                    f"{row['errors']} |"
                )
        lines.extend(summary(rows, regime_key, numbers))
    return "\n".join(lines)


def summary(rows: list[dict[str, Any]], regime: str, numbers: dict[str, float]) -> list[str]:
    lines = [""]
    batcher_64 = lookup(rows, regime, "batcher", 64)
    mosec_64 = lookup(rows, regime, "mosec", 64)
    if batcher_64 is not None:
        share = batcher_64["items_per_s"] / numbers["batch_items_per_s"]
        lines.append(f"- batcher at concurrency 64 / offline batch-{MAX_BATCH_SIZE}: {share:.2f}")
    if batcher_64 is not None and mosec_64 is not None:
        ratio = batcher_64["items_per_s"] / mosec_64["items_per_s"]
        lines.append(f"- batcher / mosec items/s at concurrency 64: {ratio:.2f}")

    bare_1 = lookup(rows, regime, "bare", 1)
    for kind in ("batcher", "batcher_timer"):
        batcher_1 = lookup(rows, regime, kind, 1)
        if batcher_1 is None or bare_1 is None:
            continue
        budget = numbers["single_forward_ms"] + bare_1["p50_ms"]
        lines.append(
            f"- concurrency 1: {kind} p50 {batcher_1['p50_ms']:.2f} ms vs single forward + "
            f"bare round trip {budget:.2f} ms (excess {batcher_1['p50_ms'] - budget:+.2f} ms)"
        )

    timer_64 = lookup(rows, regime, "batcher_timer", 64)
    if batcher_64 is not None and timer_64 is not None:
        ratio = batcher_64["items_per_s"] / timer_64["items_per_s"]
        lines.append(f"- batcher / batcher_timer items/s at concurrency 64: {ratio:.2f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="1 round of 1.5 s at concurrency 1, 16 and 256"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per point")
    parser.add_argument("--regime", choices=sorted(REGIMES), action="append", help="repeatable")
    parser.add_argument("--contender", choices=CONTENDERS, action="append", help="repeatable")
    parser.add_argument("--serve", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--offline", choices=sorted(REGIMES), help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.offline:
        print(json.dumps(measure_offline(REGIMES[args.offline], args.duration)))
        return
    if args.serve:
        regime_key = args.regime[0]
        if args.serve == "mosec":
            serve_mosec(regime_key, args.port)
        else:
            serve_uvicorn(args.serve, REGIMES[regime_key], args.port)
        return

    rounds, duration_s = (1, 1.5) if args.quick else (args.rounds, args.duration)
    levels = QUICK_CONCURRENCY if args.quick else CONCURRENCY
    regimes = args.regime or list(REGIMES)
    contenders = args.contender or list(CONTENDERS)
    sys.path.insert(0, str(HERE))
    from _harness import machine_facts

    os.sched_setaffinity(0, LOAD_CPUS)

    offline = {key: offline_in_subprocess(key, 1.0 if args.quick else 3.0) for key in regimes}
    rows: list[dict[str, Any]] = []
    inference: dict[str, dict[str, dict[str, Any]]] = {key: {} for key in regimes}
    for round_index in range(rounds):
        for regime_key in regimes:
            # Rotate the order each round so drift on a shared machine hits every contender.
            shift = round_index % len(contenders)
            for kind in contenders[shift:] + contenders[:shift]:
                contender_rows, histograms = run_contender(kind, regime_key, duration_s, levels)
                rows.extend(contender_rows)
                merge_inference(inference[regime_key], histograms)
                print(f"round {round_index + 1}: {regime_key} {kind} done", file=sys.stderr)

    merged = median_rows(rows)
    document = {
        "machine": machine_facts(),
        "offline": offline,
        "rows": merged,
        "inference_by_batch_size": inference,
        "concurrency": list(levels),
        "rounds": rounds,
        "duration_s": duration_s,
    }
    # A quick run never overwrites the recorded figures behind docs/batching.md.
    default_name = "batching-quick.json" if args.quick else "batching.json"
    output = args.json or HERE / "results" / default_name
    output.parent.mkdir(exist_ok=True)
    output.write_text(json.dumps(document, indent=2))
    print(report(merged, offline))
    print(inference_table(inference))


if __name__ == "__main__":
    main()
