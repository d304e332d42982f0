"""Compare mlmiddleware's Batcher with one-forward-per-request serving and with mosec.

Two regimes, because on a CPU box the HTTP front end and JSON can cost more than a small
model:

- ``model``: MLP 1024->4096->4096->1024 (one torch thread). Its offline batch-32
  throughput is far below the server's HTTP ceiling, so batching decides the result.
- ``http``: MLP 512->2048->512 (one torch thread), 512 floats of JSON per item, so the
  front end decides the result.

Each contender is a separate server process pinned to CPU 0, and the load generator is
pinned to CPU 1:

- ``bare``: uvicorn parsing the JSON and echoing it without a model, the round trip of
  the server alone.
- ``direct``: uvicorn running one forward per request in a thread.
- ``batcher``: uvicorn with ``instrument()`` and ``batching_endpoint``,
  ``max_batch_size=32`` and no access log.
- ``mosec``: its Rust front end with one Python worker process, ``max_batch_size=32``,
  ``max_wait_time=10`` ms, and orjson in both directions.

Rounds interleave the contenders, and each figure is the median over rounds.

Usage: python benchmarks/batching.py [--quick] [--rounds N] [--duration S] [--regime R]
``--quick`` (1 round of 1.5 s per point) finishes in under 2 minutes and writes
``benchmarks/results/batching-quick.json``. A full run writes
``benchmarks/results/batching.json`` and ``docs/batching-benchmark.svg``.
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
CONTENDERS = ("bare", "direct", "batcher", "mosec")
CONCURRENCY = (1, 8, 64)


@dataclass(frozen=True)
class Regime:
    name: str
    layers: tuple[int, ...]


REGIMES = {
    "model": Regime("model-bound", (1024, 4096, 4096, 1024)),
    "http": Regime("HTTP-bound", (512, 2048, 512)),
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

    model = build_model(regime)

    def forward(items: list[Any]) -> list[Any]:
        batch = torch.from_numpy(np.asarray(items, dtype=np.float32))
        with torch.inference_mode():
            output = model(batch)
        return list(output.numpy())

    return forward


def uvicorn_app(kind: str, regime: Regime) -> Any:
    import anyio.to_thread
    import orjson
    from prometheus_client import CollectorRegistry

    from mlmiddleware import instrument
    from mlmiddleware.batching import Batcher, batching_endpoint

    forward = make_forward(regime)
    if kind == "batcher":
        batcher = Batcher(forward, max_batch_size=MAX_BATCH_SIZE, name="mlp")
        return instrument(
            batching_endpoint(batcher),
            batchers=[batcher],
            registry=CollectorRegistry(),
            json_logs=False,
            access_log=False,
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
    import uvicorn

    uvicorn.run(
        uvicorn_app(kind, regime),
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


def run_contender(kind: str, regime_key: str, duration_s: float) -> list[dict[str, Any]]:
    from _load import run_load

    regime = REGIMES[regime_key]
    _, request = request_bytes(kind, regime)
    port = free_port()
    process = start_server(kind, regime_key, port)
    rows = []
    try:
        wait_ready(port, request)
        for concurrency in CONCURRENCY:
            result = asyncio.run(
                run_load(port, request, concurrency=concurrency, duration_s=duration_s)
            )
            rows.append(
                {
                    "regime": regime_key,
                    "contender": kind,
                    "concurrency": concurrency,
                    "items_per_s": result.rate,
                    "p50_ms": result.percentile_ms(0.5),
                    "p99_ms": result.percentile_ms(0.99),
                    "errors": result.errors,
                }
            )
    finally:
        stop_server(process)
    return rows


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
        lines.append(f"\n### {regime.name}: MLP {'->'.join(map(str, regime.layers))}\n")
        lines.append(
            f"Offline: single-item forward {numbers['single_forward_ms']:.2f} ms, "
            f"batch-{MAX_BATCH_SIZE} throughput {numbers['batch_items_per_s']:.0f} items/s.\n"
        )
        lines.append("| contender | concurrency | items/s | p50 ms | p99 ms | errors |")
        lines.append("|---|---:|---:|---:|---:|---:|")
        for contender in CONTENDERS:
            for concurrency in CONCURRENCY:
                row = lookup(rows, regime_key, contender, concurrency)
                if row is None:
                    continue
                lines.append(
                    f"| {contender} | {concurrency} | {row['items_per_s']:.0f} | "
                    f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['errors']} |"
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

    batcher_1 = lookup(rows, regime, "batcher", 1)
    bare_1 = lookup(rows, regime, "bare", 1)
    if batcher_1 is not None and bare_1 is not None:
        budget = numbers["single_forward_ms"] + bare_1["p50_ms"]
        lines.append(
            f"- concurrency 1: batcher p50 {batcher_1['p50_ms']:.2f} ms vs single forward + bare "
            f"round trip {budget:.2f} ms (excess {batcher_1['p50_ms'] - budget:+.2f} ms)"
        )
    return lines


def write_svg(rows: list[dict[str, Any]], path: Path) -> None:
    """Plot items/s and p99 against concurrency, one panel per regime and measure."""
    colors = {"bare": "#999999", "direct": "#d62728", "batcher": "#1f77b4", "mosec": "#2ca02c"}
    panels = [(regime, measure) for regime in REGIMES for measure in ("items_per_s", "p99_ms")]
    width, height, margin = 360, 240, 50
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width * 2}" '
        f'height="{height * 2 + 30}" font-family="sans-serif" font-size="11">'
    ]
    for index, (regime, measure) in enumerate(panels):
        left = (index % 2) * width
        top = (index // 2) * height + 30
        parts.extend(_panel(rows, regime, measure, left, top, width, height, margin, colors))
    for index, (contender, color) in enumerate(colors.items()):
        parts.append(
            f'<text x="{10 + index * 90}" y="16" fill="{color}" font-weight="bold">'
            f"{contender}</text>"
        )
    parts.append("</svg>")
    path.write_text("\n".join(parts))


def _panel(
    rows: list[dict[str, Any]],
    regime: str,
    measure: str,
    left: int,
    top: int,
    width: int,
    height: int,
    margin: int,
    colors: dict[str, str],
) -> list[str]:
    values = [row[measure] for row in rows if row["regime"] == regime]
    top_value = max(values, default=1.0) * 1.1 or 1.0
    plot_w, plot_h = width - margin - 10, height - margin - 20

    def x_of(position: int) -> float:
        return left + margin + position * plot_w / (len(CONCURRENCY) - 1)

    def y_of(value: float) -> float:
        return top + 20 + plot_h - value / top_value * plot_h

    label = "items/s" if measure == "items_per_s" else "p99 ms"
    parts = [
        f'<text x="{left + margin}" y="{top + 12}">{REGIMES[regime].name}: {label} '
        "against concurrency</text>",
        f'<line x1="{left + margin}" y1="{top + 20 + plot_h}" x2="{left + margin + plot_w}" '
        f'y2="{top + 20 + plot_h}" stroke="black"/>',
        f'<line x1="{left + margin}" y1="{top + 20}" x2="{left + margin}" '
        f'y2="{top + 20 + plot_h}" stroke="black"/>',
        f'<text x="{left + 4}" y="{top + 26}">{top_value:.0f}</text>',
    ]
    for position, concurrency in enumerate(CONCURRENCY):
        parts.append(f'<text x="{x_of(position) - 6}" y="{top + 34 + plot_h}">{concurrency}</text>')
    for contender, color in colors.items():
        points = []
        for position, concurrency in enumerate(CONCURRENCY):
            row = lookup(rows, regime, contender, concurrency)
            if row is not None:
                points.append(f"{x_of(position):.1f},{y_of(row[measure]):.1f}")
        if points:
            parts.append(
                f'<polyline points="{" ".join(points)}" fill="none" stroke="{color}" '
                'stroke-width="2"/>'
            )
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 1.5 s per point")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per point")
    parser.add_argument("--regime", choices=sorted(REGIMES), action="append", help="repeatable")
    parser.add_argument("--contender", choices=CONTENDERS, action="append", help="repeatable")
    parser.add_argument("--serve", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--offline", choices=sorted(REGIMES), help=argparse.SUPPRESS)
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
    regimes = args.regime or list(REGIMES)
    contenders = args.contender or list(CONTENDERS)
    sys.path.insert(0, str(HERE))
    os.sched_setaffinity(0, LOAD_CPUS)

    offline = {key: offline_in_subprocess(key, 1.0 if args.quick else 3.0) for key in regimes}
    rows: list[dict[str, Any]] = []
    for round_index in range(rounds):
        for regime_key in regimes:
            # Rotate the order each round so drift on a shared machine hits every contender.
            shift = round_index % len(contenders)
            for kind in contenders[shift:] + contenders[:shift]:
                rows.extend(run_contender(kind, regime_key, duration_s))
                print(f"round {round_index + 1}: {regime_key} {kind} done", file=sys.stderr)

    merged = median_rows(rows)
    results_dir = HERE / "results"
    results_dir.mkdir(exist_ok=True)
    document = {"offline": offline, "rows": merged, "rounds": rounds, "duration_s": duration_s}
    # A quick run never overwrites the recorded figures behind docs/batching.md.
    if args.quick:
        (results_dir / "batching-quick.json").write_text(json.dumps(document, indent=2))
    else:
        (results_dir / "batching.json").write_text(json.dumps(document, indent=2))
        write_svg(merged, ROOT / "docs" / "batching-benchmark.svg")
    print(report(merged, offline))


if __name__ == "__main__":
    main()
