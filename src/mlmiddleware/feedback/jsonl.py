"""``JsonlFeedbackSink``: append records to size-rotated JSON Lines files, one set per process."""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from pathlib import Path
from typing import Any

from mlmiddleware.feedback.records import encode_record

__all__ = ["ACTIVE_SUFFIX", "JsonlFeedbackSink"]

logger = logging.getLogger("mlmiddleware.feedback")

# Suffix of the file being appended to. Closing renames it to ``.jsonl``, so a shipper
# that globs ``*.jsonl`` only reads complete files.
ACTIVE_SUFFIX = ".jsonl.active"

_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)


class JsonlFeedbackSink:
    """Append records to ``<directory>/feedback-<host>-<pid>-<n>.jsonl``.

    Each process writes its own files, so workers sharing a directory never interleave
    lines. The open file is named ``...-<n>.jsonl.active``; once it reaches
    ``rotate_bytes`` (or at ``close()``) it is renamed to ``...-<n>.jsonl`` in one atomic
    step. ``flush()`` writes buffered records with ``os.write`` and, with ``fsync=True``,
    calls ``os.fsync`` before returning, so a flushed record survives a power loss too.
    A failed flush truncates the file back to its last complete line and discards the
    buffered records, so the caller can write them again without duplicates.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        rotate_bytes: int = 64 * 2**20,
        fsync: bool = False,
        prefix: str = "feedback",
    ) -> None:
        if isinstance(rotate_bytes, bool) or not isinstance(rotate_bytes, int) or rotate_bytes < 1:
            raise ValueError(f"invalid rotate_bytes={rotate_bytes!r}: use a byte count >= 1")
        if not prefix or _UNSAFE_NAME_CHARS.search(prefix):
            raise ValueError(f"invalid prefix={prefix!r}: use letters, digits, '.', '_' or '-'")

        self.directory = Path(directory)
        self.rotate_bytes = rotate_bytes
        self.fsync = fsync
        self.prefix = prefix
        self._host = _UNSAFE_NAME_CHARS.sub("_", socket.gethostname()) or "localhost"
        self._lock = threading.Lock()
        self._buffer = bytearray()
        self._fd: int | None = None
        self._active_path: Path | None = None
        self._size = 0
        self._sequence = 0
        self._pid: int | None = None
        self._closed = False

    @property
    def active_path(self) -> Path | None:
        """The file being appended to, or ``None`` before the first flush and after close."""
        return self._active_path

    def write(self, record: dict[str, Any]) -> None:
        line = encode_record(record)
        with self._lock:
            if self._closed:
                raise ValueError(f"{self!r} is closed: create a new sink to write more records")
            self._buffer += line

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._flush_locked()
            finally:
                self._finish_file()

    def check(self) -> None:
        """Raise ``OSError`` (with the path) unless a file can be written in the directory.

        The probe writes one line, because a full disk still lets empty files be created.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        probe = self.directory / f".{self.prefix}-{self._host}-{os.getpid()}.probe"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, b"probe\n")
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(probe)) from exc
        finally:
            os.close(fd)
            probe.unlink()

    def _flush_locked(self) -> None:
        if not self._buffer:
            return
        data = bytes(self._buffer)
        self._buffer.clear()
        fd = self._open_file()

        try:
            _write_all(fd, data)
            if self.fsync:
                os.fsync(fd)
        except OSError as exc:
            path = self._active_path
            self._undo_partial_write(fd)
            raise OSError(exc.errno, exc.strerror, str(path)) from exc

        self._size += len(data)
        if self._size >= self.rotate_bytes:
            self._rotate()

    def _open_file(self) -> int:
        pid = os.getpid()
        if self._pid != pid:
            # A forked child must not append to its parent's file (or rename it).
            self._fd = None
            self._active_path = None
            self._pid = pid
            self._recover_orphans(pid)
        if self._fd is not None:
            return self._fd

        self.directory.mkdir(parents=True, exist_ok=True)
        while True:
            self._sequence += 1
            path = self._path(pid, self._sequence, ACTIVE_SUFFIX)
            if path.with_name(path.name[: -len(".active")]).exists():
                continue
            try:
                self._fd = os.open(path, _OPEN_FLAGS, 0o644)
            except FileExistsError:
                continue
            self._active_path = path
            self._size = 0
            return self._fd

    def _rotate(self) -> None:
        # The records are already stored, so a failed rename must not fail the flush (the
        # caller would write them again). The file keeps its .active name instead.
        try:
            self._finish_file()
        except OSError as exc:
            logger.error("Could not close feedback file for rotation: %s", exc)

    def _finish_file(self) -> None:
        """Close the active file and rename it to its final ``.jsonl`` name."""
        fd, path = self._fd, self._active_path
        self._fd = None
        self._active_path = None
        if fd is None or path is None:
            return

        os.close(fd)
        final = path.with_name(path.name[: -len(".active")])
        os.rename(path, final)
        if self.fsync:
            _fsync_directory(self.directory)
        logger.info("Closed feedback file %s (%d bytes)", final, self._size)

    def _undo_partial_write(self, fd: int) -> None:
        try:
            os.ftruncate(fd, self._size)
        except OSError:
            # NOTE: the file may now end in a partial line, so it keeps its .active name
            # and the next flush starts a new file.
            logger.error("Could not truncate %s after a failed write", self._active_path)
            os.close(fd)
            self._fd = None
            self._active_path = None

    def _recover_orphans(self, pid: int) -> None:
        """Close files a crashed earlier process with this host name and pid left open.

        A restarted container often gets the same pid, so those files can only belong to a
        dead process. Each is cut back to its last complete line and renamed to ``.jsonl``.
        """
        pattern = f"{self.prefix}-{self._host}-{pid}-*{ACTIVE_SUFFIX}"
        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.glob(pattern)):
            try:
                _recover_file(path)
            except OSError as exc:
                logger.error("Could not recover feedback file %s: %s", path, exc)
        for path in self.directory.glob(f"{self.prefix}-{self._host}-{pid}-*.jsonl*"):
            sequence = path.name.split("-")[-1].split(".")[0]
            if sequence.isdigit():
                self._sequence = max(self._sequence, int(sequence))

    def _path(self, pid: int, sequence: int, suffix: str) -> Path:
        return self.directory / f"{self.prefix}-{self._host}-{pid}-{sequence}{suffix}"

    def __repr__(self) -> str:
        return f"JsonlFeedbackSink({str(self.directory)!r})"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _recover_file(path: Path) -> None:
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    final = path.with_name(path.name[: -len(".active")])
    if not complete:
        path.unlink()
        return
    if len(complete) != len(data):
        os.truncate(path, len(complete))
    os.rename(path, final)
    logger.warning(
        "Recovered feedback file %s left open by an earlier process (%d bytes kept, %d cut)",
        final,
        len(complete),
        len(data) - len(complete),
    )
