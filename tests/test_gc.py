"""Heap freezing after startup, checked in a real uvicorn process."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support import ServerProcess

STARTUP_OBJECTS = 50_000


def serve(freeze: bool) -> ServerProcess:
    env = {"FREEZE_GC": "1" if freeze else "0", "STARTUP_OBJECTS": str(STARTUP_OBJECTS)}
    return ServerProcess("tests._gc_app:app", env=env).start()


@pytest.fixture(scope="module")
def frozen() -> Iterator[ServerProcess]:
    server = serve(freeze=True)
    yield server
    server.stop()


def test_freeze_covers_app_startup_objects(frozen: ServerProcess) -> None:
    heap = httpx.get(f"{frozen.base_url}/heap", timeout=10).json()

    assert heap["model"] == STARTUP_OBJECTS
    assert heap["frozen"] > STARTUP_OBJECTS
    # Had the freeze run before the app's own startup, its objects would still be tracked.
    assert heap["tracked"] < STARTUP_OBJECTS


def test_freeze_logged_at_startup(frozen: ServerProcess) -> None:
    record = frozen.wait_for_record(lambda r: r["message"].startswith("Froze "))

    assert record["level"] == "INFO"
    assert record["logger"] == "mlmiddleware.lifespan"


def test_freeze_gc_off() -> None:
    server = serve(freeze=False)
    try:
        heap = httpx.get(f"{server.base_url}/heap", timeout=10).json()
    finally:
        server.stop()

    assert heap["frozen"] == 0
    assert heap["tracked"] > STARTUP_OBJECTS
