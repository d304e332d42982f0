"""The ``mlmiddleware`` launcher, a PID 1 for model servers in containers."""

from __future__ import annotations

from mlmiddleware.launcher.cli import main

__all__ = ["main"]
