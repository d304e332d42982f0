"""RecordMaker builds records that handlers cannot tell from Logger.makeRecord's."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from mlmiddleware._logrecord import RecordMaker

LOGGER = logging.getLogger("tests.logrecord")


@pytest.fixture
def custom_factory() -> Iterator[list[logging.LogRecord]]:
    made: list[logging.LogRecord] = []
    original = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = original(*args, **kwargs)  # type: ignore[arg-type]
        made.append(record)
        return record

    logging.setLogRecordFactory(factory)
    yield made
    logging.setLogRecordFactory(original)


def test_record_matches_standard_attributes() -> None:
    fast = RecordMaker(LOGGER, "http.request", source=__file__).make(logging.INFO, {"status": 200})
    standard = LOGGER.makeRecord(LOGGER.name, logging.INFO, __file__, 0, "http.request", (), None)

    assert set(vars(standard)) <= set(vars(fast))
    assert fast.getMessage() == "http.request"
    assert fast.levelname == "INFO"
    assert fast.name == "tests.logrecord"
    assert fast.process == standard.process
    assert fast.threadName == standard.threadName
    assert fast.status == 200  # type: ignore[attr-defined]
    assert abs(fast.created - standard.created) < 5


def test_record_uses_custom_factory(custom_factory: list[logging.LogRecord]) -> None:
    record = RecordMaker(LOGGER, "http.request", source=__file__).make(logging.ERROR, {"a": 1})

    assert custom_factory == [record]
    assert record.a == 1  # type: ignore[attr-defined]
