"""Fixtures of the reliability suite: launcher processes cleaned up by pid, hypothesis bounds."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.reliability.support import Launcher

# Each example is a real request to a real server, so a run is bounded by count, and the
# deadline is off because a loaded 2-core machine makes single examples slow now and then.
# No example database, because a failure depends on server state that a replay would not
# recreate. Hypothesis still caches Unicode tables under .hypothesis/.
settings.register_profile(
    "reliability",
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
RELIABILITY_SETTINGS = settings.get_profile("reliability")


@pytest.fixture
def launcher_factory(tmp_path: Path) -> Iterator[Callable[..., Launcher]]:
    """Yield a function that starts a ``Launcher``; each one is killed by pid afterwards."""
    started: list[Launcher] = []

    def start(**kwargs: Any) -> Launcher:
        launcher = Launcher(tmp_path, **kwargs)
        started.append(launcher)
        return launcher.start()

    yield start
    for launcher in started:
        launcher.kill()
