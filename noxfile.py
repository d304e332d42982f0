"""Developer sessions: tests, lint, demo, serve, bench, reliability.

Run ``python3 -m pip install nox`` once, then ``nox -s tests`` or ``nox -s demo``.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "venv"

PYTHON = "3.11"
# The CPU build that these machines provide; a bare "torch" would pull a multi-GB CUDA build.
TORCH = "torch==2.13.0"


def install_project(session: nox.Session, *extras: str) -> None:
    session.install(TORCH)
    spec = f".[{','.join(extras)}]" if extras else "."
    session.install("-e", spec)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite (unit, end-to-end and reliability tests)."""
    install_project(session, "test", "torch", "examples")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Run ruff (lint and format check) and mypy --strict on the package."""
    install_project(session, "lint", "test")
    session.run("ruff", "check", "src", "tests", "benchmarks", "examples", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "examples", "noxfile.py")
    session.run("mypy")


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """Run the example embedding service under the launcher on real sentences."""
    install_project(session, "examples")
    session.run("python", "examples/embedding/demo.py", *session.posargs)


@nox.session(python=PYTHON)
def serve(session: nox.Session) -> None:
    """Serve the example embedding service on 127.0.0.1:8000 until interrupted."""
    install_project(session, "examples")
    session.run(
        "mlmiddleware", "run", "examples.embedding.app:app", "--host", "127.0.0.1", *session.posargs
    )


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Run the benchmarks and print the tables that docs/benchmarks.md records."""
    install_project(session, "bench", "torch")
    session.run("python", "benchmarks/run_all.py", *session.posargs)


@nox.session(python=PYTHON)
def reliability(session: nox.Session) -> None:
    """Run only the reliability suite (soak, faults, fuzzing)."""
    install_project(session, "test", "torch", "examples")
    session.run("python", "-m", "pytest", "tests/reliability", *session.posargs)
