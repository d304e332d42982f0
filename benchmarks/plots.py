"""Draw the benchmark plots in ``docs/`` from the result files in ``benchmarks/results/``.

- ``docs/batching-benchmark.svg``: items/s and p99 latency against concurrency for each
  contender of ``batching.py``, one column per regime, from ``batching.json``.
- ``docs/batching-inference-duration.svg``: ``batch_inference_duration_seconds`` by batch
  size, as scraped from the batcher's ``/metrics``: mean, and p50 and p99 estimated from
  the histogram buckets.
- ``docs/memory-rss.svg``: RSS of the served app against requests served, from ``memory.py``.

Usage: python benchmarks/plots.py [--results DIR] [--out DIR] [--suffix -quick]
A plot whose result file is missing is skipped with a message.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from batching import REGIMES, quantile_from_buckets

HERE = Path(__file__).resolve().parent
COLORS = {
    "bare": "#999999",
    "direct": "#d62728",
    "batcher": "#1f77b4",
    "batcher_timer": "#9467bd",
    "mosec": "#2ca02c",
}
LABELS = {
    "bare": "bare server, no model",
    "direct": "one forward per request",
    "batcher": "mlmiddleware Batcher (dispatch when idle)",
    "batcher_timer": "mlmiddleware Batcher (10 ms timer)",
    "mosec": "mosec",
}
# No creation date in the SVG, and fixed element ids, so a redraw of the same data is identical.
SVG_METADATA = {"Date": None}
matplotlib.rcParams["svg.hashsalt"] = "mlmiddleware"


def save(figure: Any, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, metadata=SVG_METADATA)
    plt.close(figure)
    print(f"wrote {path}")


def plot_concurrency(document: dict[str, Any], path: Path) -> None:
    rows = document["rows"]
    regimes = [key for key in REGIMES if any(row["regime"] == key for row in rows)]
    figure, axes = plt.subplots(2, len(regimes), figsize=(6 * len(regimes), 8), squeeze=False)
    for column, regime in enumerate(regimes):
        for contender, color in COLORS.items():
            points = sorted(
                (row["concurrency"], row["items_per_s"], row["p99_ms"])
                for row in rows
                if row["regime"] == regime and row["contender"] == contender
            )
            if not points:
                continue
            levels = [point[0] for point in points]
            label = LABELS[contender]
            axes[0][column].plot(levels, [p[1] for p in points], "o-", color=color, label=label)
            axes[1][column].plot(levels, [p[2] for p in points], "o-", color=color, label=label)

        name = REGIMES[regime].title
        axes[0][column].set_title(f"{name}\nitems/s (log scale)")
        axes[0][column].set_yscale("log")
        axes[1][column].set_title("p99 latency (ms, log scale)")
        axes[1][column].set_yscale("log")
        levels = sorted({row["concurrency"] for row in rows})
        for row_axes in axes:
            row_axes[column].set_xscale("log", base=2)
            row_axes[column].set_xticks(levels, [str(level) for level in levels])
            row_axes[column].set_xlabel("concurrent connections")
            row_axes[column].grid(True, alpha=0.3)
    axes[0][0].legend()
    save(figure, path)


def plot_inference(document: dict[str, Any], path: Path) -> None:
    by_regime = document.get("inference_by_batch_size") or {}
    regimes = [key for key in REGIMES if by_regime.get(key)]
    if not regimes:
        print(f"skipped {path}: no batch_inference_duration_seconds data", file=sys.stderr)
        return

    figure, axes = plt.subplots(1, len(regimes), figsize=(6 * len(regimes), 4), squeeze=False)
    for column, regime in enumerate(regimes):
        entries = by_regime[regime]
        labels = sorted((label for label in entries if entries[label]["count"]), key=int)
        sizes = [int(label) for label in labels]
        means = [entries[x]["sum_s"] / entries[x]["count"] * 1000 for x in labels]
        p50 = [quantile_from_buckets(entries[x]["buckets"], 0.5) * 1000 for x in labels]
        p99 = [quantile_from_buckets(entries[x]["buckets"], 0.99) * 1000 for x in labels]
        plot = axes[0][column]
        plot.plot(sizes, means, "o-", label="mean")
        plot.plot(sizes, p50, "s--", label="p50 (from buckets)")
        plot.plot(sizes, p99, "^--", label="p99 (from buckets)")
        plot.set_xscale("log", base=2)
        plot.set_xticks(sizes, [str(size) for size in sizes])
        plot.set_xlabel("batch_size label (batch size rounded up to a power of two)")
        plot.set_ylabel("ms per batch")
        plot.set_title(f"batch_inference_duration_seconds, {REGIMES[regime].name}")
        plot.grid(True, alpha=0.3)
        plot.legend()
    save(figure, path)


def plot_memory(document: dict[str, Any], path: Path) -> None:
    counts = [point["requests"] for point in document["checkpoints"]]
    rss = [point["rss_bytes"] / 2**20 for point in document["checkpoints"]]
    figure, plot = plt.subplots(figsize=(6, 3.5))
    plot.plot(counts, rss, "o-")
    plot.axhline(rss[0] * 1.05, color="#d62728", linestyle="--", label="+5% over 10,000")
    plot.set_ylim(0, max(rss) * 1.2)
    plot.set_xlabel("requests served")
    plot.set_ylabel("RSS (MiB)")
    plot.set_title("RSS of Starlette + instrument() under uvicorn")
    plot.grid(True, alpha=0.3)
    plot.legend()
    save(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=HERE / "results", help="result files")
    parser.add_argument("--out", type=Path, default=HERE.parent / "docs", help="plot folder")
    parser.add_argument("--suffix", default="", help="result file suffix, e.g. -quick")
    args = parser.parse_args()

    batching = args.results / f"batching{args.suffix}.json"
    if batching.exists():
        document = json.loads(batching.read_text())
        plot_concurrency(document, args.out / "batching-benchmark.svg")
        plot_inference(document, args.out / "batching-inference-duration.svg")
    else:
        print(f"skipped the batching plots: {batching} not found", file=sys.stderr)

    memory = args.results / f"memory{args.suffix}.json"
    if memory.exists():
        plot_memory(json.loads(memory.read_text()), args.out / "memory-rss.svg")
    else:
        print(f"skipped the memory plot: {memory} not found", file=sys.stderr)


if __name__ == "__main__":
    main()
