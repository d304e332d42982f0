"""Run-mode settings: precedence, parsing and errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlmiddleware.launcher.config import ConfigError, RunConfig, load_run_config

NO_CLI: dict[str, object] = {}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_config_defaults(tmp_path: Path) -> None:
    config = load_run_config(NO_CLI, {}, cwd=tmp_path)
    assert config == RunConfig()
    assert config.effective_drain_seconds({}) == 0.0
    assert config.effective_drain_seconds({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}) == 5.0


def test_config_precedence(tmp_path: Path) -> None:
    write(
        tmp_path / "pyproject.toml",
        '[tool.mlmiddleware]\napp = "file:app"\nport = 1111\nworkers = 3\nlog-level = "debug"\n',
    )
    environ = {"PORT": "2222", "WEB_CONCURRENCY": "4"}
    config = load_run_config({"port": 3333, "workers": None}, environ, cwd=tmp_path)
    assert config.port == 3333
    assert config.workers == 4
    assert config.log_level == "debug"
    assert config.app == "file:app"


def test_config_env_values(tmp_path: Path) -> None:
    environ = {
        "MLMW_DRAIN_SECONDS": "2.5",
        "MLMW_GRACEFUL_TIMEOUT": "7",
        "MLMW_FACTORY": "yes",
        "MLMW_HOST": "::1",
    }
    config = load_run_config(NO_CLI, environ, cwd=tmp_path)
    assert config.drain_seconds == 2.5
    assert config.effective_drain_seconds({"KUBERNETES_SERVICE_HOST": "x"}) == 2.5
    assert config.graceful_timeout == 7.0
    assert config.factory is True
    assert config.host == "::1"


def test_config_file_option(tmp_path: Path) -> None:
    path = write(tmp_path / "launcher.toml", "workers = 2\ngraceful_timeout = 9\n")
    write(tmp_path / "pyproject.toml", "[tool.mlmiddleware]\nworkers = 5\n")
    config = load_run_config(NO_CLI, {}, config_path=str(path), cwd=tmp_path)
    assert config.workers == 2
    assert config.graceful_timeout == 9.0


def test_config_pyproject_without_table(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n')
    assert load_run_config(NO_CLI, {}, cwd=tmp_path) == RunConfig()


def test_config_unknown_key(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "[tool.mlmiddleware]\nwokers = 2\n")
    with pytest.raises(ConfigError, match="unknown key 'wokers'"):
        load_run_config(NO_CLI, {}, cwd=tmp_path)


def test_config_wrong_file_type(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[tool.mlmiddleware]\nport = "80"\n')
    with pytest.raises(ConfigError, match="invalid port='80'"):
        load_run_config(NO_CLI, {}, cwd=tmp_path)


def test_config_bool_is_not_int(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "[tool.mlmiddleware]\nworkers = true\n")
    with pytest.raises(ConfigError, match="invalid workers=True"):
        load_run_config(NO_CLI, {}, cwd=tmp_path)


def test_config_invalid_toml(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "[tool.mlmiddleware\n")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_run_config(NO_CLI, {}, cwd=tmp_path)


def test_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_run_config(NO_CLI, {}, config_path=str(tmp_path / "none.toml"), cwd=tmp_path)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PORT", "eighty", "invalid environment variable PORT='eighty'"),
        ("PORT", "70000", "invalid port=70000"),
        ("WEB_CONCURRENCY", "0", "invalid workers=0"),
        ("MLMW_DRAIN_SECONDS", "-1", "invalid drain_seconds=-1.0"),
        ("MLMW_GRACEFUL_TIMEOUT", "0", "invalid graceful_timeout=0.0"),
        ("MLMW_LOG_LEVEL", "loud", "invalid log_level='loud'"),
        ("MLMW_FACTORY", "maybe", "invalid environment variable MLMW_FACTORY='maybe'"),
        ("MLMW_APP", "serve_app", "invalid app='serve_app'"),
    ],
)
def test_config_invalid_env(tmp_path: Path, variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_run_config(NO_CLI, {variable: value}, cwd=tmp_path)
    assert message in str(caught.value)
