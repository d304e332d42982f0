"""Log records per second: mlmiddleware's JSON formatter vs python-json-logger and structlog.

Every contender formats the same stdlib ``LogRecord`` calls and writes one line per record
to /dev/null. Contenders run interleaved, round after round, in one process, and the
report gives the median records/s of each and its ratio to python-json-logger.

    python benchmarks/logging_bench.py [--records 20000] [--rounds 7] [--json OUT]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
import structlog
from pythonjsonlogger.json import JsonFormatter as PythonJsonFormatter

from mlmiddleware.jsonlog import JsonFormatter, JsonHandler

KINDS = ("plain", "with_extra", "with_exception")


def make_exception() -> BaseException:
    try:
        raise ValueError("model input had the wrong shape")
    except ValueError as exc:
        return exc


EXCEPTION = make_exception()


def emit(logger: logging.Logger, kind: str, count: int) -> None:
    if kind == "plain":
        for i in range(count):
            logger.info("batch %d finished", i)
    elif kind == "with_extra":
        extra = {"model": "embedder", "batch_size": 32, "duration_ms": 12.5, "route": "/v1/embed"}
        for i in range(count):
            logger.info("batch %d finished", i, extra=extra)
    else:
        for i in range(count):
            logger.error("batch %d failed", i, exc_info=EXCEPTION)


def devnull_stream() -> Any:
    return open(os.devnull, "w")


def ours() -> logging.Handler:
    return JsonHandler(devnull_stream(), formatter=JsonFormatter(service="bench"))


def python_json_logger() -> logging.Handler:
    handler = logging.StreamHandler(devnull_stream())
    fields = "{asctime}{levelname}{name}{message}{process}"
    handler.setFormatter(
        PythonJsonFormatter(fields, style="{", timestamp=True, static_fields={"service": "bench"})
    )
    return handler


def structlog_renderer() -> logging.Handler:
    handler = logging.StreamHandler(devnull_stream())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(),
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.format_exc_info,
            ],
        )
    )
    return handler


CONTENDERS: dict[str, Callable[[], logging.Handler]] = {
    "mlmiddleware": ours,
    "python-json-logger": python_json_logger,
    "structlog": structlog_renderer,
}


def measure(factory: Callable[[], logging.Handler], kind: str, count: int) -> float:
    logger = logging.getLogger(f"bench.{kind}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = factory()
    logger.handlers[:] = [handler]

    started = time.perf_counter()
    emit(logger, kind, count)
    elapsed = time.perf_counter() - started

    logger.handlers.clear()
    return count / elapsed


def run(records: int, rounds: int) -> dict[str, dict[str, float]]:
    samples: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for kind in KINDS:
            for name, factory in CONTENDERS.items():
                samples.setdefault((name, kind), []).append(measure(factory, kind, records))

    medians: dict[str, dict[str, float]] = {}
    for (name, kind), values in samples.items():
        medians.setdefault(kind, {})[name] = statistics.median(values)
    return medians


def report(medians: dict[str, dict[str, float]]) -> str:
    lines = [
        "| record kind | mlmiddleware rec/s | python-json-logger rec/s | structlog rec/s "
        "| mlmiddleware / python-json-logger | mlmiddleware / structlog |",
        "|---|---|---|---|---|---|",
    ]
    for kind in KINDS:
        row = medians[kind]
        ours_rate = row["mlmiddleware"]
        lines.append(
            f"| {kind} | {ours_rate:,.0f} | {row['python-json-logger']:,.0f} | "
            f"{row['structlog']:,.0f} | {ours_rate / row['python-json-logger']:.2f}x | "
            f"{ours_rate / row['structlog']:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000, help="records per sample")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median taken)")
    parser.add_argument("--json", help="also write the medians to this JSON file")
    args = parser.parse_args()

    medians = run(args.records, args.rounds)
    print(f"Python {sys.version.split()[0]} on {platform.machine()}, {os.cpu_count()} CPUs")
    print(f"{args.records} records per sample, median of {args.rounds} interleaved rounds\n")
    print(report(medians))
    if args.json:
        with open(args.json, "wb") as out:
            out.write(orjson.dumps(medians, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
