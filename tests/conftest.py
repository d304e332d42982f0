"""Fixtures shared by the whole suite: free ports and real uvicorn servers."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from mlmiddleware import _lifecycle
from tests.support import ServerProcess, free_port


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def server_factory() -> Iterator[type[ServerProcess]]:
    """Yield ``ServerProcess``; every server started through it is stopped afterwards."""
    started: list[ServerProcess] = []

    class TrackedServer(ServerProcess):
        def start(self) -> TrackedServer:
            started.append(self)
            super().start()
            return self

    yield TrackedServer
    for server in started:
        server.stop()


@pytest.fixture(autouse=True)
def reset_shutdown_state() -> Iterator[None]:
    """Undo ``begin_shutdown()``, which is process-wide, between tests."""
    yield
    _lifecycle._reset_for_tests()


@pytest.fixture(autouse=True)
def unfreeze_heap() -> Iterator[None]:
    """Undo the ``gc.freeze()`` that an in-process ``instrument()`` startup runs."""
    yield
    if gc.get_freeze_count():
        gc.unfreeze()
