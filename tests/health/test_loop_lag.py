"""LoopLagMonitor: blocking the event loop fails the lag check once the loop unblocks."""

from __future__ import annotations

import asyncio
import time

import pytest

from mlmiddleware.health import HealthChecks, LoopLagMonitor


def test_lag_ok_when_responsive() -> None:
    async def scenario() -> str | None:
        monitor = LoopLagMonitor(max_lag_seconds=0.5, window_seconds=5.0)
        await monitor.start()
        await asyncio.sleep(0.3)
        error = monitor.lag_error()
        await monitor.stop()
        return error

    assert asyncio.run(scenario()) is None


def test_lag_fails_after_block() -> None:
    async def scenario() -> tuple[str | None, str | None]:
        monitor = LoopLagMonitor(max_lag_seconds=0.3, window_seconds=30.0, interval_seconds=0.05)
        await monitor.start()
        await asyncio.sleep(0.1)
        time.sleep(0.8)  # noqa: ASYNC251 - blocks the event loop on purpose
        # Read before the monitor task has woken: the overdue wake-up counts.
        right_after = monitor.lag_error()
        await asyncio.sleep(0.2)
        later = monitor.lag_error()
        await monitor.stop()
        return right_after, later

    right_after, later = asyncio.run(scenario())

    assert right_after is not None
    assert right_after.startswith("event loop blocked for")
    assert later is not None
    assert later.startswith("event loop was blocked for")


def test_lag_clears_after_window() -> None:
    async def scenario() -> str | None:
        monitor = LoopLagMonitor(max_lag_seconds=0.3, window_seconds=0.3, interval_seconds=0.05)
        await monitor.start()
        await asyncio.sleep(0.1)
        time.sleep(0.6)  # noqa: ASYNC251 - blocks the event loop on purpose
        await asyncio.sleep(0.8)
        error = monitor.lag_error()
        await monitor.stop()
        return error

    assert asyncio.run(scenario()) is None


def test_lag_ignored_while_inactive() -> None:
    active = False

    async def scenario() -> str | None:
        nonlocal active
        monitor = LoopLagMonitor(
            max_lag_seconds=0.3,
            window_seconds=30.0,
            interval_seconds=0.05,
            is_active=lambda: active,
        )
        await monitor.start()
        await asyncio.sleep(0.1)
        time.sleep(0.6)  # noqa: ASYNC251 - a blocking warmup before startup has finished
        active = True
        await asyncio.sleep(0.2)
        error = monitor.lag_error()
        await monitor.stop()
        return error

    assert asyncio.run(scenario()) is None


def test_monitor_stop_and_restart() -> None:
    async def scenario() -> list[bool]:
        monitor = LoopLagMonitor(max_lag_seconds=1.0, window_seconds=1.0)
        states = [monitor.running]
        await monitor.start()
        await monitor.start()
        states.append(monitor.running)
        await monitor.stop()
        states.append(monitor.running)
        await monitor.stop()
        return states

    assert asyncio.run(scenario()) == [False, True, False]


def test_liveness_reports_event_loop() -> None:
    async def scenario() -> tuple[set[str], str, str]:
        checks = HealthChecks(max_loop_lag_seconds=0.3, loop_lag_window_seconds=30.0)
        idle = await checks.run("liveness")
        await checks.start_loop_monitor()
        await asyncio.sleep(0.15)
        healthy = await checks.run("liveness")
        time.sleep(0.8)  # noqa: ASYNC251 - blocks the event loop on purpose
        blocked = await checks.run("liveness")
        await checks.stop_loop_monitor()
        return set(idle.checks), healthy.status, blocked.status

    idle_names, healthy, blocked = asyncio.run(scenario())

    # Without a running monitor there is no event_loop result to report.
    assert idle_names == set()
    assert healthy == "ok"
    assert blocked == "fail"


@pytest.mark.parametrize("name", ["max_lag_seconds", "window_seconds", "interval_seconds"])
@pytest.mark.parametrize("value", [0, -1.0, float("nan"), True])
def test_monitor_rejects_bad_settings(name: str, value: float) -> None:
    settings = {"max_lag_seconds": 1.0, "window_seconds": 1.0, "interval_seconds": 0.1}
    settings[name] = value

    with pytest.raises(ValueError, match=f"invalid {name}"):
        LoopLagMonitor(**settings)
