"""Run one batch on the worker thread: collate, predict, uncollate, and isolate failures."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from mlmiddleware.batching.errors import ResultCountError

__all__ = ["BatchRunner", "Outcome", "default_collate", "default_uncollate"]

logger = logging.getLogger("mlmiddleware.batching")

# ``(True, result)`` for an item that succeeded, ``(False, exception)`` for one that failed.
Outcome = tuple[bool, Any]


def default_collate(items: list[Any]) -> list[Any]:
    """Pass the items to ``predict`` as a list."""
    return items


def default_uncollate(output: Any) -> list[Any]:
    """Split the output of ``predict`` into one result per item along its first axis."""
    return output if isinstance(output, list) else list(output)


class BatchRunner:
    """Call the user's model code on a list of item values, one call per batch.

    With ``isolate_errors`` a batch whose ``collate`` or ``predict`` raises is split in
    halves and each half retried, until the failing items are alone, so one poisoned item
    fails only its own request. A wrong result count fails the whole batch at once, because
    it is a contract error of ``predict`` that retries cannot isolate.
    """

    def __init__(
        self,
        *,
        name: str,
        predict: Callable[[Any], Any],
        collate: Callable[[list[Any]], Any],
        uncollate: Callable[[Any], Sequence[Any]],
        isolate_errors: bool,
    ) -> None:
        self.name = name
        self.predict = predict
        self.collate = collate
        self.uncollate = uncollate
        self.isolate_errors = isolate_errors

    def run(self, values: list[Any]) -> list[Any]:
        """Run one batch and return one result per value. Exceptions of the model propagate."""
        output = self.predict(self.collate(values))
        results = self.uncollate(output)
        if not isinstance(results, list):
            results = list(results)

        if len(results) != len(values):
            raise ResultCountError(
                f"batcher {self.name!r}: predict returned {len(results)} results for a batch "
                f"of {len(values)} items: return exactly one result per item, in order"
            )
        return results

    def run_isolated(self, values: list[Any], request_ids: list[str | None]) -> list[Outcome]:
        """Run one batch, and give each value its result or the exception that concerns it."""
        try:
            return [(True, result) for result in self.run(values)]
        except Exception as exc:
            if not self.isolate_errors or len(values) == 1 or isinstance(exc, ResultCountError):
                self._log_failure(exc, request_ids)
                return [(False, exc)] * len(values)
            logger.warning(
                "Batcher %s: a batch of %d items failed with %s; retrying it in halves to "
                "isolate the failing items",
                self.name,
                len(values),
                type(exc).__name__,
            )

        middle = len(values) // 2
        head = self.run_isolated(values[:middle], request_ids[:middle])
        tail = self.run_isolated(values[middle:], request_ids[middle:])
        return head + tail

    def _log_failure(self, exc: Exception, request_ids: list[str | None]) -> None:
        logger.error(
            "Batcher %s: model failed on %d item(s) with %s: %s (request ids: %s)",
            self.name,
            len(request_ids),
            type(exc).__name__,
            exc,
            ", ".join(sorted({str(request_id) for request_id in request_ids})),
            exc_info=exc,
        )
