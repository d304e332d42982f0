"""Multi-process mode: one scrape that sums every uvicorn or launcher worker.

prometheus-client writes each worker's values to files in ``PROMETHEUS_MULTIPROC_DIR``
when that variable is set before ``prometheus_client`` is first imported. The
``/metrics`` app then reads every file through a ``MultiProcessCollector``.

Directory lifecycle: create it empty before the workers start (the launcher does, or an
``emptyDir`` volume in Kubernetes), give each container its own, and call
``mark_process_dead(pid)`` when a worker exits so its live gauges stop counting. Files
left by an earlier run would add that run's counts to the new one.
"""

from __future__ import annotations

import logging
import os

from prometheus_client import CollectorRegistry, multiprocess, values

__all__ = ["MULTIPROC_DIR_ENV", "mark_process_dead", "multiprocess_dir", "multiprocess_registry"]

logger = logging.getLogger("mlmiddleware.metrics")

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The lower-case spelling that prometheus-client still accepts.
_LEGACY_ENV = "prometheus_multiproc_dir"


def multiprocess_dir() -> str | None:
    """Return the multi-process directory from the environment, or ``None`` if unset."""
    return os.environ.get(MULTIPROC_DIR_ENV) or os.environ.get(_LEGACY_ENV) or None


def multiprocess_registry(path: str) -> CollectorRegistry:
    """Build a registry whose scrape aggregates the files of every worker under ``path``."""
    if not os.path.isdir(path):
        raise ValueError(
            f"{MULTIPROC_DIR_ENV}={path!r} is not a directory: create it empty before "
            "starting the workers, or unset the variable for single-process mode"
        )
    if values.ValueClass is values.MutexValue:
        logger.warning(
            "%s is set but this process (pid %d) imported prometheus_client before it was "
            "set, so its own metrics are not written to %s; set the variable before the "
            "process starts",
            MULTIPROC_DIR_ENV,
            os.getpid(),
            path,
        )

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


def mark_process_dead(pid: int, path: str | None = None) -> None:
    """Remove the live-gauge files of the exited worker ``pid``.

    The process manager calls it once the worker has exited (the launcher does so).
    Counters and histograms of that worker keep counting in the scrape, while
    ``livesum`` and other live gauges such as ``http_requests_in_progress`` drop it.
    ``path`` defaults to ``PROMETHEUS_MULTIPROC_DIR``; without either, nothing is done.
    """
    directory = path if path is not None else multiprocess_dir()
    if directory is None:
        logger.debug("No %s set, so there are no files to mark for pid %d", MULTIPROC_DIR_ENV, pid)
        return
    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    logger.info("Marked metrics of worker pid %d dead in %s", pid, directory)
