"""Command line of the ``mlmiddleware`` console script: ``run``, ``exec`` and ``model-version``.

Each command imports its own modules when it runs. The supervisor of ``run`` never
imports the app, which only its worker processes load.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from mlmiddleware.launcher.exit_codes import (
    EXIT_CRASH_LOOP,
    EXIT_FAILURE,
    EXIT_USAGE,
    EXIT_WORKERS_KILLED,
)

__all__ = ["build_parser", "main"]

_EXIT_STATUS_HELP = f"""\
exit status:
  run   0 after a clean drain on SIGTERM or SIGINT; {EXIT_WORKERS_KILLED} when workers had to be
        killed at the end of the graceful timeout; {EXIT_CRASH_LOOP} when workers failed during
        startup 5 times within 60 s; a worker's status (128+N for signal N) when one failed
        during shutdown; {EXIT_USAGE} for invalid settings; {EXIT_FAILURE} when the socket cannot
        be bound.
  exec  the command's own status (0-255), or 128+N when it was killed by signal N; 127 when
        the command is not found, 126 when it cannot be executed.
"""


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``mlmiddleware`` command."""
    parser = argparse.ArgumentParser(
        prog="mlmiddleware",
        description="Launcher for ASGI model servers in containers: a PID 1 that forwards "
        "signals, reaps zombies and drains uvicorn workers.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EXIT_STATUS_HELP,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run_parser(commands)
    _add_exec_parser(commands)
    _add_model_version_parser(commands)
    return parser


def _add_run_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = commands.add_parser(
        "run",
        help="serve an ASGI app with N uvicorn workers sharing one socket",
        description="Serve an ASGI app with uvicorn workers that share one listening socket. "
        "Each setting is read from the command line, else its environment variable, else "
        "[tool.mlmiddleware] in ./pyproject.toml or the --config file, else its default.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EXIT_STATUS_HELP,
    )
    run.add_argument("app", nargs="?", help="the app as MODULE:ATTR (env MLMW_APP, key app)")

    run.add_argument("--host", help="address to bind (env MLMW_HOST; default 0.0.0.0)")
    run.add_argument("--port", type=int, help="TCP port to bind (env PORT; default 8000)")
    run.add_argument(
        "--workers", type=int, help="number of worker processes (env WEB_CONCURRENCY; default 1)"
    )
    run.add_argument(
        "--drain-seconds",
        type=float,
        help="seconds between a stop signal and closing the listener, while /readyz fails "
        "(env MLMW_DRAIN_SECONDS; default 5 under Kubernetes, else 0)",
    )
    run.add_argument(
        "--graceful-timeout",
        type=float,
        help="seconds after the drain for in-flight requests and lifespan shutdown before "
        "SIGKILL (env MLMW_GRACEFUL_TIMEOUT; default 20)",
    )
    run.add_argument(
        "--startup-timeout",
        type=float,
        help="seconds a worker may take to load the app and finish lifespan startup before "
        "it is killed and restarted (env MLMW_STARTUP_TIMEOUT; default 300)",
    )
    run.add_argument(
        "--worker-timeout",
        type=float,
        help="seconds without a heartbeat from a ready worker's event loop before it is "
        "killed and restarted, 0 to disable (env MLMW_WORKER_TIMEOUT; default 60)",
    )

    run.add_argument(
        "--log-level",
        help="log level of the launcher and workers: critical, error, warning, info, debug "
        "(env MLMW_LOG_LEVEL; default info)",
    )
    run.add_argument(
        "--factory",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="treat MODULE:ATTR as a function that returns the app (env MLMW_FACTORY; default off)",
    )
    run.add_argument(
        "--config",
        metavar="FILE",
        help="TOML file with the settings, at the top level or in [tool.mlmiddleware] "
        "(default ./pyproject.toml when it exists)",
    )


def _add_exec_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    exec_parser = commands.add_parser(
        "exec",
        help="run any command as its init: forward signals, reap zombies",
        description="Run CMD as a child, forward signals to it, reap every zombie and exit "
        "with its status. Put -- before CMD.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EXIT_STATUS_HELP,
    )
    exec_parser.add_argument(
        "--graceful-timeout",
        type=float,
        help="seconds from SIGTERM or SIGINT until the child and its descendants get SIGKILL "
        "(env MLMW_GRACEFUL_TIMEOUT; default 20)",
    )
    exec_parser.add_argument(
        "--group",
        action="store_true",
        help="start CMD in its own process group and send signals to the whole group",
    )
    exec_parser.add_argument(
        "--log-level",
        help="log level of the launcher's own JSON lines (env MLMW_LOG_LEVEL; default warning)",
    )
    exec_parser.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")


def _add_model_version_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    version = commands.add_parser(
        "model-version",
        help="print the newest git tag matching a pattern",
        description="Print the newest git tag matching --pattern, in version order "
        "(model-v1.10 is newer than model-v1.9). Exits 1 with an error when there is no git "
        "repository or no matching tag.",
    )
    version.add_argument(
        "--pattern", default="model-v*", help="glob for the tag names (default: model-v*)"
    )
    version.add_argument(
        "--repo", default=".", help="directory inside the git repository (default: .)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``mlmiddleware`` command line and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        return _run(parser, args)
    if args.command == "exec":
        return _exec(parser, args)
    return _model_version(args)


def _configure_logging(level: str) -> None:
    from mlmiddleware.jsonlog import configure_logging

    configure_logging(level.upper())


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from mlmiddleware.launcher.config import ConfigError, load_run_config

    cli = {
        "app": args.app,
        "host": args.host,
        "port": args.port,
        "workers": args.workers,
        "drain_seconds": args.drain_seconds,
        "graceful_timeout": args.graceful_timeout,
        "startup_timeout": args.startup_timeout,
        "worker_timeout": args.worker_timeout,
        "log_level": args.log_level,
        "factory": args.factory,
    }
    try:
        config = load_run_config(cli, os.environ, config_path=args.config)
    except ConfigError as exc:
        parser.exit(EXIT_USAGE, f"mlmiddleware run: error: {exc}\n")
    if config.app is None:
        parser.exit(
            EXIT_USAGE,
            "mlmiddleware run: error: missing app: pass MODULE:ATTR, set MLMW_APP or add "
            "app = 'MODULE:ATTR' to [tool.mlmiddleware]\n",
        )

    from mlmiddleware.jsonlog import configure_logging
    from mlmiddleware.launcher.relay import OutputQueue, QueuedTextStream
    from mlmiddleware.launcher.supervisor import Supervisor

    # The launcher's own records and the workers' relayed lines share one queue per fd, so
    # they keep their order and a stalled reader never blocks the supervisor loop.
    outputs = (OutputQueue(1), OutputQueue(2))
    configure_logging(config.log_level.upper(), stream=QueuedTextStream(outputs[1]))  # type: ignore[arg-type]
    try:
        return Supervisor(config, environ=os.environ, outputs=outputs).run()
    finally:
        for output in outputs:
            output.close()


def _exec(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    command = list(args.cmd)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        parser.exit(EXIT_USAGE, "mlmiddleware exec: error: missing command: use exec -- CMD\n")

    try:
        graceful_timeout = _env_seconds("MLMW_GRACEFUL_TIMEOUT", args.graceful_timeout, 20.0)
    except ValueError as exc:
        parser.exit(EXIT_USAGE, f"mlmiddleware exec: error: {exc}\n")
    _configure_logging(args.log_level or os.environ.get("MLMW_LOG_LEVEL") or "warning")

    from mlmiddleware.launcher.exec_mode import run_exec

    return run_exec(command, graceful_timeout=graceful_timeout, group=args.group)


def _env_seconds(variable: str, option_value: float | None, default: float) -> float:
    seconds = option_value
    if seconds is None:
        raw = os.environ.get(variable)
        try:
            seconds = default if raw is None else float(raw)
        except ValueError:
            raise ValueError(f"invalid {variable}={raw!r}: use a number of seconds") from None
    if seconds <= 0:
        raise ValueError(f"invalid graceful timeout {seconds!r}: use more than 0 seconds")
    return seconds


def _model_version(args: argparse.Namespace) -> int:
    from mlmiddleware.launcher.model_version import ModelVersionError, newest_tag

    try:
        tag = newest_tag(args.pattern, repository=args.repo)
    except ModelVersionError as exc:
        print(f"mlmiddleware model-version: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(tag)
    return 0
