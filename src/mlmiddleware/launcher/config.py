"""Run-mode settings from the command line, the environment and a TOML file, in that order."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found, no-redef, unused-ignore]

__all__ = ["ENV_VARS", "LOG_LEVELS", "ConfigError", "RunConfig", "load_run_config"]

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")

# Environment variable read for each setting: the standard name where one exists.
ENV_VARS: dict[str, str] = {
    "app": "MLMW_APP",
    "host": "MLMW_HOST",
    "port": "PORT",
    "workers": "WEB_CONCURRENCY",
    "drain_seconds": "MLMW_DRAIN_SECONDS",
    "graceful_timeout": "MLMW_GRACEFUL_TIMEOUT",
    "startup_timeout": "MLMW_STARTUP_TIMEOUT",
    "worker_timeout": "MLMW_WORKER_TIMEOUT",
    "log_level": "MLMW_LOG_LEVEL",
    "factory": "MLMW_FACTORY",
}

_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off", ""})


class ConfigError(ValueError):
    """An invalid or unknown setting; the message names the setting, its source and the fix."""


@dataclass(frozen=True)
class RunConfig:
    """Settings of ``mlmiddleware run``; durations are in seconds."""

    app: str | None = None
    host: str = "0.0.0.0"
    port: int = 8000
    workers: int = 1
    # None means: 5 under Kubernetes (KUBERNETES_SERVICE_HOST is set), else 0.
    drain_seconds: float | None = None
    graceful_timeout: float = 20.0
    startup_timeout: float = 300.0
    worker_timeout: float = 60.0
    log_level: str = "info"
    factory: bool = False

    def effective_drain_seconds(self, environ: Mapping[str, str]) -> float:
        """Return the drain time, defaulting to 5 s under Kubernetes and 0 s elsewhere."""
        if self.drain_seconds is not None:
            return self.drain_seconds
        return 5.0 if environ.get("KUBERNETES_SERVICE_HOST") else 0.0


_FIELD_TYPES: dict[str, type] = {
    "app": str,
    "host": str,
    "port": int,
    "workers": int,
    "drain_seconds": float,
    "graceful_timeout": float,
    "startup_timeout": float,
    "worker_timeout": float,
    "log_level": str,
    "factory": bool,
}


def load_run_config(
    cli: Mapping[str, Any],
    environ: Mapping[str, str],
    *,
    config_path: str | None = None,
    cwd: Path | None = None,
) -> RunConfig:
    """Merge settings with the precedence command line > environment > TOML file > default.

    ``cli`` maps setting names to values, with ``None`` for options not given. The file is
    ``config_path`` when given, else ``pyproject.toml`` in ``cwd`` if it exists.

    Raises ``ConfigError`` for an unknown key in the file, a value of the wrong type or out
    of range, or a config file that cannot be read.
    """
    merged: dict[str, Any] = {}
    merged.update(_from_file(config_path, cwd or Path.cwd()))
    merged.update(_from_environment(environ))
    merged.update({key: value for key, value in cli.items() if value is not None})

    config = RunConfig(**merged)
    _validate(config)
    return config


def _from_file(config_path: str | None, cwd: Path) -> dict[str, Any]:
    if config_path is not None:
        path = Path(config_path)
        if not path.is_file():
            raise ConfigError(f"config file {config_path!r} not found: check the --config path")
    else:
        path = cwd / "pyproject.toml"
        if not path.is_file():
            return {}

    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc}") from exc

    # A pyproject.toml, or any file with a [tool] table, has the settings in
    # [tool.mlmiddleware]. Another file passed with --config has them at the top level.
    if "tool" in document or (config_path is None):
        table = document.get("tool", {}).get("mlmiddleware", {})
        where = f"[tool.mlmiddleware] in {str(path)!r}"
    else:
        table = document
        where = repr(str(path))
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table of settings")

    return {
        name: _convert_file_value(name, value, where) for name, value in _normalized(table, where)
    }


def _normalized(table: dict[str, Any], where: str) -> list[tuple[str, Any]]:
    known = sorted(_FIELD_TYPES)
    items = []
    for key, value in table.items():
        name = key.replace("-", "_")
        if name not in _FIELD_TYPES:
            raise ConfigError(f"unknown key {key!r} in {where}: known keys are {', '.join(known)}")
        items.append((name, value))
    return items


def _convert_file_value(name: str, value: Any, where: str) -> Any:
    expected = _FIELD_TYPES[name]
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, bool):
        raise ConfigError(f"invalid {name}={value!r} in {where}: use an integer")
    if not isinstance(value, expected):
        raise ConfigError(f"invalid {name}={value!r} in {where}: use a {expected.__name__}")
    return value


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, variable in ENV_VARS.items():
        raw = environ.get(variable)
        if raw is None:
            continue
        values[name] = _convert_text(name, raw.strip(), f"environment variable {variable}")
    return values


def _convert_text(name: str, raw: str, where: str) -> Any:
    expected = _FIELD_TYPES[name]
    if expected is bool:
        word = raw.lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
        raise ConfigError(f"invalid {where}={raw!r}: use 1 or 0 (true/false, yes/no, on/off)")
    if expected is str:
        return raw
    try:
        return expected(raw)
    except ValueError:
        kind = "an integer" if expected is int else "a number of seconds"
        raise ConfigError(f"invalid {where}={raw!r}: use {kind}") from None


def _validate(config: RunConfig) -> None:
    checks: list[tuple[str, bool, str]] = [
        ("port", 0 <= config.port <= 65535, "use a TCP port from 0 to 65535"),
        ("workers", config.workers >= 1, "use 1 or more worker processes"),
        (
            "drain_seconds",
            config.drain_seconds is None or config.drain_seconds >= 0,
            "use 0 or more seconds",
        ),
        ("graceful_timeout", config.graceful_timeout > 0, "use more than 0 seconds"),
        ("startup_timeout", config.startup_timeout > 0, "use more than 0 seconds"),
        ("worker_timeout", config.worker_timeout >= 0, "use 0 (no liveness check) or more seconds"),
        (
            "log_level",
            config.log_level.lower() in LOG_LEVELS,
            f"use one of {', '.join(LOG_LEVELS)}",
        ),
    ]
    for name, valid, fix in checks:
        if not valid:
            raise ConfigError(f"invalid {name}={getattr(config, name)!r}: {fix}")
    if config.app is not None and ":" not in config.app:
        raise ConfigError(f"invalid app={config.app!r}: use MODULE:ATTR, for example 'serve:app'")
