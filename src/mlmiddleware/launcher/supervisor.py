"""Run mode: start, watch, restart and drain the uvicorn worker processes."""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from mlmiddleware.launcher.config import RunConfig
from mlmiddleware.launcher.exit_codes import (
    EXIT_CRASH_LOOP,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_WORKERS_KILLED,
)
from mlmiddleware.launcher.reaper import (
    OrphanSweep,
    become_subreaper,
    reap_children,
    signal_pids,
)
from mlmiddleware.launcher.relay import LineRelay, OutputQueue
from mlmiddleware.launcher.signals import (
    FORWARDED_SIGNALS,
    STOP_SIGNALS,
    SignalInbox,
    signal_name,
)
from mlmiddleware.launcher.worker import HEARTBEAT, READY, WorkerSettings

__all__ = ["CRASH_LOOP_FAILURES", "CRASH_LOOP_WINDOW_SECONDS", "Supervisor"]

logger = logging.getLogger("mlmiddleware.launcher")

# Startup failures (exits before the worker reported ready) that make the launcher give up,
# counted inside the window or in a row with no worker becoming ready. The second count
# catches a worker that takes minutes to load the model before it fails.
CRASH_LOOP_FAILURES = 5
CRASH_LOOP_WINDOW_SECONDS = 60.0
# Restart delay after the n-th consecutive failure of a worker slot: 0.5 s doubling to 10 s.
_FIRST_BACKOFF_SECONDS = 0.5
_MAX_BACKOFF_SECONDS = 10.0
# Time left to the workers after a second stop signal or a SIGQUIT, before SIGKILL.
FAST_STOP_SECONDS = 3.0
# Maximum wait in select, so that timers are checked at least this often.
_TICK_SECONDS = 0.25


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes]
    notify_fd: int
    started_at: float
    last_heartbeat: float
    ready: bool = False
    relays: list[LineRelay] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid


class Supervisor:
    """Bind the socket once, keep ``config.workers`` workers serving, drain them on a signal.

    The supervisor never imports the app: each worker is a fresh interpreter running
    ``mlmiddleware.launcher.worker``. Everything happens in one thread around a ``select``
    loop that waits on the signal wakeup pipe, the workers' output pipes and their notify
    pipes, so signal handling, reaping and output relay never race each other.
    """

    def __init__(
        self,
        config: RunConfig,
        *,
        environ: Mapping[str, str],
        outputs: tuple[OutputQueue, OutputQueue] | None = None,
    ) -> None:
        if config.app is None:
            raise ValueError("config.app is None: pass MODULE:ATTR or set MLMW_APP")
        self.config = config
        self.app = config.app
        self.drain_seconds = config.effective_drain_seconds(environ)
        self._environ = dict(environ)
        self._selector = selectors.DefaultSelector()
        self._workers: dict[int, _Worker] = {}
        self._orphan_relays: list[LineRelay] = []
        self._restart_at: dict[int, float] = {}
        self._consecutive_failures: dict[int, int] = {}
        self._startup_failures: deque[float] = deque()
        self._failures_since_ready = 0
        self._stop_signals = 0
        self._kill_at: float | None = None
        self._exit_code: int | None = None
        self._forced = False
        self._sweep: OrphanSweep | None = None
        self._listener: socket.socket | None = None
        self._private_metrics_dir: str | None = None
        # Queues in front of the launcher's stdout and stderr; None writes them directly.
        self._outputs = outputs

    def run(self) -> int:
        """Serve until a stop signal or a crash loop; return the launcher's exit status."""
        become_subreaper()
        try:
            self._listener = self._bind()
        except OSError as exc:
            logger.error(
                "Cannot listen on %s:%d: %s; choose another --host or --port",
                self.config.host,
                self.config.port,
                exc,
            )
            return EXIT_FAILURE
        self._prepare_metrics_dir()
        try:
            with SignalInbox(FORWARDED_SIGNALS) as inbox:
                self._selector.register(inbox.fileno(), selectors.EVENT_READ, None)
                for index in range(self.config.workers):
                    self._spawn(index)
                self._loop(inbox)
        finally:
            self._close()
        return self._final_exit_code()

    def _bind(self) -> socket.socket:
        from mlmiddleware.launcher.listener import bind_listener

        listener = bind_listener(self.config.host, self.config.port)
        host, port = listener.getsockname()[:2]
        logger.info(
            "Listening on %s:%d with %d worker(s), pid=%d",
            host,
            port,
            self.config.workers,
            os.getpid(),
            extra={"host": host, "port": port, "workers": self.config.workers},
        )
        return listener

    def _prepare_metrics_dir(self) -> None:
        if self.config.workers > 1 and not self._environ.get("PROMETHEUS_MULTIPROC_DIR"):
            self._private_metrics_dir = tempfile.mkdtemp(prefix="mlmiddleware-metrics-")
            self._environ["PROMETHEUS_MULTIPROC_DIR"] = self._private_metrics_dir
            logger.info(
                "Set PROMETHEUS_MULTIPROC_DIR=%s for the workers", self._private_metrics_dir
            )

    # --- the loop ---------------------------------------------------------------------

    def _loop(self, inbox: SignalInbox) -> None:
        while not self._done():
            for key, _ in self._selector.select(self._select_timeout()):
                callback: Callable[[], None] | None = key.data
                if callback is not None:
                    callback()

            for sig in inbox.drain():
                self._on_signal(sig)
            for pid, code in reap_children():
                self._on_child_exit(pid, code)
            self._check_timers(time.monotonic())

    def _done(self) -> bool:
        if self._exit_code is None or self._workers:
            return False
        if self._sweep is None:
            self._sweep = OrphanSweep(self._kill_at or time.monotonic())
        return self._sweep.step(time.monotonic())

    def _select_timeout(self) -> float:
        if self._sweep is not None:
            return 0.05
        timeout = _TICK_SECONDS
        now = time.monotonic()
        # A deadline already past (SIGKILL sent, reaping pending) must not spin the loop.
        for due in (*self._restart_at.values(), self._kill_at):
            if due is not None and due > now:
                timeout = min(timeout, due - now)
        return timeout

    # --- signals ----------------------------------------------------------------------

    def _on_signal(self, sig: int) -> None:
        if sig == signal.SIGCHLD:
            return

        pids = [worker.pid for worker in self._workers.values()]
        signal_pids(pids, sig)
        level = logging.DEBUG if sig == signal.SIGWINCH else logging.INFO
        logger.log(
            level,
            "Received %s, forwarded to %d worker(s)",
            signal_name(sig),
            len(pids),
            extra={"signal": signal_name(sig), "pids": pids},
        )

        if sig in STOP_SIGNALS:
            self._stop_signals += 1
            if self._stop_signals == 1 and self._exit_code is None:
                self._begin_stop(EXIT_OK, grace=self.drain_seconds + self.config.graceful_timeout)
            else:
                self._hurry("second stop signal")
        elif sig == signal.SIGQUIT:
            if self._exit_code is None:
                self._begin_stop(EXIT_OK, grace=FAST_STOP_SECONDS)
            self._hurry("SIGQUIT")

    def _begin_stop(self, exit_code: int, *, grace: float) -> None:
        self._exit_code = exit_code
        self._kill_at = time.monotonic() + grace
        self._restart_at.clear()
        # The workers keep their own copies open through the drain. Once they close them,
        # new connections are refused at once instead of waiting in an unserved backlog.
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        logger.info(
            "Drain started: workers fail readiness now, stop accepting after %.1f s, "
            "get SIGKILL after %.1f s",
            self.drain_seconds,
            grace,
            extra={"drain_seconds": self.drain_seconds, "kill_after_seconds": grace},
        )

    def _hurry(self, reason: str) -> None:
        deadline = time.monotonic() + FAST_STOP_SECONDS
        if self._kill_at is None or deadline < self._kill_at:
            self._kill_at = deadline
            logger.warning("Fast stop after %s: SIGKILL in %.1f s", reason, FAST_STOP_SECONDS)

    # --- workers ----------------------------------------------------------------------

    def _spawn(self, index: int) -> None:
        assert self._listener is not None
        notify_read, notify_write = os.pipe()
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        settings = WorkerSettings(
            app=self.app,
            factory=self.config.factory,
            listen_fd=self._listener.fileno(),
            notify_fd=notify_write,
            drain_seconds=self.drain_seconds,
            graceful_timeout=self.config.graceful_timeout,
            log_level=self.config.log_level,
            parent_pid=os.getpid(),
            index=index,
        )
        try:
            # A session of its own keeps a terminal's Ctrl+C, sent to the foreground process
            # group, from reaching the workers a second time next to the forwarded SIGINT.
            process = subprocess.Popen(
                [sys.executable, "-m", "mlmiddleware.launcher.worker", settings.to_json()],
                stdin=subprocess.DEVNULL,
                stdout=out_write,
                stderr=err_write,
                pass_fds=(self._listener.fileno(), notify_write),
                start_new_session=True,
                env=self._environ,
            )
        finally:
            for fd in (notify_write, out_write, err_write):
                os.close(fd)

        now = time.monotonic()
        worker = _Worker(index, process, notify_read, started_at=now, last_heartbeat=now)
        stdout, stderr = self._outputs if self._outputs is not None else (None, None)
        worker.relays = [
            LineRelay(out_read, 1, output=stdout),
            LineRelay(err_read, 2, output=stderr),
        ]
        self._workers[process.pid] = worker
        self._watch(worker)
        logger.info(
            "Worker %d started, pid=%d",
            index,
            process.pid,
            extra={"worker": index, "worker_pid": process.pid},
        )

    def _watch(self, worker: _Worker) -> None:
        os.set_blocking(worker.notify_fd, False)
        self._selector.register(
            worker.notify_fd, selectors.EVENT_READ, lambda: self._read_notify(worker)
        )
        for relay in worker.relays:
            self._selector.register(
                relay.source_fd, selectors.EVENT_READ, self._pump_callback(relay)
            )

    def _pump_callback(self, relay: LineRelay) -> Callable[[], None]:
        def pump() -> None:
            if not relay.pump():
                self._selector.unregister(relay.source_fd)
                relay.close()
                with contextlib.suppress(ValueError):
                    self._orphan_relays.remove(relay)

        return pump

    def _read_notify(self, worker: _Worker) -> None:
        try:
            data = os.read(worker.notify_fd, 4096)
        except BlockingIOError:
            return
        if not data:
            self._selector.unregister(worker.notify_fd)
            os.close(worker.notify_fd)
            worker.notify_fd = -1
            return

        worker.last_heartbeat = time.monotonic()
        if READY in data and not worker.ready:
            worker.ready = True
            self._failures_since_ready = 0
            self._consecutive_failures.pop(worker.index, None)
            logger.info(
                "Worker %d ready after %.1f s, pid=%d",
                worker.index,
                worker.last_heartbeat - worker.started_at,
                worker.pid,
                extra={"worker": worker.index, "worker_pid": worker.pid},
            )
        elif HEARTBEAT not in data and READY not in data:
            logger.debug("Unexpected notify bytes %r from worker pid=%d", data, worker.pid)

    def _on_child_exit(self, pid: int, code: int) -> None:
        worker = self._workers.pop(pid, None)
        if worker is None:
            logger.debug("Reaped non-worker process pid=%d, status %d", pid, code)
            return

        worker.process.returncode = code
        self._forget(worker)
        self._mark_metrics_dead(pid)
        extra = {"worker": worker.index, "worker_pid": pid, "status": code}

        if self._exit_code is not None:
            logger.info(
                "Worker %d exited with status %d, pid=%d", worker.index, code, pid, extra=extra
            )
            # A worker killed by the forwarded signal itself had not installed its handlers
            # yet, so it was still starting and had no request in flight.
            clean = code in (0, 128 + signal.SIGTERM, 128 + signal.SIGINT)
            if not clean and self._exit_code == EXIT_OK:
                self._exit_code = code
            return

        failures = self._consecutive_failures.get(worker.index, 0) + 1
        self._consecutive_failures[worker.index] = failures
        delay = min(_FIRST_BACKOFF_SECONDS * 2 ** (failures - 1), _MAX_BACKOFF_SECONDS)
        logger.error(
            "Worker %d exited with status %d %s, restarting in %.1f s, pid=%d",
            worker.index,
            code,
            "during startup" if not worker.ready else "while serving",
            delay,
            pid,
            extra=extra,
        )
        if not worker.ready and self._crash_looping(time.monotonic()):
            return
        self._restart_at[worker.index] = time.monotonic() + delay

    def _forget(self, worker: _Worker) -> None:
        if worker.notify_fd >= 0:
            self._selector.unregister(worker.notify_fd)
            os.close(worker.notify_fd)
            worker.notify_fd = -1
        # Output still buffered in the pipes is relayed until EOF, which can come later
        # than the exit when a grandchild keeps the pipe open.
        self._orphan_relays.extend(relay for relay in worker.relays if not relay.closed)

    def _crash_looping(self, now: float) -> bool:
        self._startup_failures.append(now)
        self._failures_since_ready += 1
        while (
            self._startup_failures and now - self._startup_failures[0] > CRASH_LOOP_WINDOW_SECONDS
        ):
            self._startup_failures.popleft()
        in_window = len(self._startup_failures)
        if in_window < CRASH_LOOP_FAILURES and self._failures_since_ready < CRASH_LOOP_FAILURES:
            return False

        logger.error(
            "Workers failed during startup %d times within %.0f s and %d times since a "
            "worker was last ready, stopping the launcher with status %d; check the worker "
            "errors above",
            in_window,
            CRASH_LOOP_WINDOW_SECONDS,
            self._failures_since_ready,
            EXIT_CRASH_LOOP,
        )
        self._begin_stop(EXIT_CRASH_LOOP, grace=self.config.graceful_timeout)
        signal_pids([worker.pid for worker in self._workers.values()], signal.SIGTERM)
        return True

    def _mark_metrics_dead(self, pid: int) -> None:
        if not self._environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return
        try:
            from mlmiddleware.metrics import mark_process_dead
        except ImportError:
            logger.debug("mlmiddleware.metrics.mark_process_dead is not available, skipping")
            return
        try:
            mark_process_dead(pid, self._environ["PROMETHEUS_MULTIPROC_DIR"])
        except OSError:
            logger.warning("Cannot mark the metrics of worker pid=%d dead", pid, exc_info=True)

    # --- timers -----------------------------------------------------------------------

    def _check_timers(self, now: float) -> None:
        for index, due in list(self._restart_at.items()):
            if now >= due:
                del self._restart_at[index]
                self._spawn(index)

        for worker in self._workers.values():
            self._check_worker_deadlines(worker, now)

        if self._kill_at is not None and now >= self._kill_at and self._workers:
            self._kill_all_workers()

    def _check_worker_deadlines(self, worker: _Worker, now: float) -> None:
        if self._exit_code is not None:
            return
        if not worker.ready and now - worker.started_at > self.config.startup_timeout:
            logger.error(
                "Worker %d not ready after the startup timeout of %.0f s, killing pid=%d",
                worker.index,
                self.config.startup_timeout,
                worker.pid,
            )
            signal_pids([worker.pid], signal.SIGKILL)
        elif (
            worker.ready
            and self.config.worker_timeout > 0
            and now - worker.last_heartbeat > self.config.worker_timeout
        ):
            logger.error(
                "Worker %d sent no heartbeat for %.0f s (event loop blocked?), killing pid=%d",
                worker.index,
                self.config.worker_timeout,
                worker.pid,
            )
            signal_pids([worker.pid], signal.SIGKILL)
            # Avoid a SIGKILL on every tick until the worker is reaped.
            worker.last_heartbeat = now

    def _kill_all_workers(self) -> None:
        pids = [worker.pid for worker in self._workers.values()]
        if not self._forced:
            logger.warning(
                "Graceful timeout over, sending SIGKILL to %d worker(s): %s",
                len(pids),
                " ".join(map(str, pids)),
                extra={"pids": pids},
            )
        self._forced = True
        signal_pids(pids, signal.SIGKILL)

    # --- exit -------------------------------------------------------------------------

    def _final_exit_code(self) -> int:
        if self._exit_code == EXIT_CRASH_LOOP:
            return EXIT_CRASH_LOOP
        if self._forced or (self._sweep is not None and self._sweep.killed):
            return EXIT_WORKERS_KILLED
        return EXIT_OK if self._exit_code is None else self._exit_code

    def _close(self) -> None:
        for relay in self._orphan_relays:
            relay.pump()
            relay.close()
        self._orphan_relays.clear()
        self._selector.close()
        if self._listener is not None:
            self._listener.close()
        if self._private_metrics_dir is not None:
            shutil.rmtree(self._private_metrics_dir, ignore_errors=True)
        logger.info("Launcher exiting with status %d", self._final_exit_code())
