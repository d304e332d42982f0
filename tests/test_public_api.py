"""The public surface: explicit sorted ``__all__`` lists, and no torch on import."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PUBLIC_MODULES = [
    "mlmiddleware",
    "mlmiddleware.middleware",
    "mlmiddleware.jsonlog",
    "mlmiddleware.metrics",
    "mlmiddleware.health",
    "mlmiddleware.batching",
    "mlmiddleware.feedback",
]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_is_sorted_and_resolves(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__

    assert exported == sorted(exported)
    assert len(exported) == len(set(exported))
    for attribute in exported:
        assert hasattr(module, attribute), f"{name}.{attribute} is listed but missing"


def test_import_does_not_import_torch() -> None:
    code = "import sys, mlmiddleware; print('torch' in sys.modules)"

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == "False"
