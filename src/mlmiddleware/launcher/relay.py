"""Relay of a worker's output pipe to the launcher's own stdout or stderr, whole lines only."""

from __future__ import annotations

import logging
import os
import threading
from collections import deque

__all__ = [
    "DEFAULT_QUEUE_BYTES",
    "MAX_LINE_BYTES",
    "LineRelay",
    "OutputQueue",
    "QueuedTextStream",
    "write_all",
]

logger = logging.getLogger("mlmiddleware.launcher")

# Output held for a stalled reader before whole lines are dropped: about 10,000 access
# log lines, so a log shipper that pauses for a few seconds loses nothing.
DEFAULT_QUEUE_BYTES = 4 * 2**20

# A line longer than this is written in pieces of this size, each ended with a newline, so a
# worker that prints binary data without newlines cannot grow the launcher's memory unbounded.
MAX_LINE_BYTES = 2**20


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``, dropping it if the reader has gone away."""
    view = memoryview(data)
    try:
        while view:
            written = os.write(fd, view)
            view = view[written:]
    except BrokenPipeError:
        # The reader of the launcher's output has exited, but the workers must keep serving.
        pass


class OutputQueue:
    """Write to one file descriptor from a thread of its own, through a bounded queue.

    The launcher relays every worker from one thread. If that thread wrote to its own
    stdout or stderr directly, a reader that stops reading (a stalled log shipper) would
    block it. The workers' pipes would then fill, and each worker would block in its next
    log write on the event loop, so requests would stall for as long as the reader does.
    Here a full queue drops whole chunks of lines instead, counts them, and a WARNING
    reports the count once writing resumes.
    """

    def __init__(self, fd: int, *, max_bytes: int = DEFAULT_QUEUE_BYTES) -> None:
        self.fd = fd
        self.max_bytes = max_bytes
        self.dropped_lines = 0
        self._chunks: deque[bytes] = deque()
        self._queued_bytes = 0
        self._unreported_drops = 0
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(
            target=self._run, name=f"mlmiddleware-output-{fd}", daemon=True
        )
        self._thread.start()

    def write(self, data: bytes) -> None:
        """Queue ``data`` (whole lines) without waiting, or drop it when the queue is full."""
        with self._cond:
            if self._queued_bytes + len(data) > self.max_bytes:
                lines = max(1, data.count(b"\n"))
                self.dropped_lines += lines
                self._unreported_drops += lines
                return
            self._chunks.append(data)
            self._queued_bytes += len(data)
            self._cond.notify_all()

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, waiting at most ``timeout`` seconds, and stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._chunks and not self._closed:
                    self._cond.wait()
                if not self._chunks:
                    return
                data = b"".join(self._chunks)
                self._chunks.clear()
                dropped, self._unreported_drops = self._unreported_drops, 0

            write_all(self.fd, data)
            with self._cond:
                self._queued_bytes -= len(data)
            if dropped:
                logger.warning(
                    "Dropped %d output lines because fd %d was not read fast enough",
                    dropped,
                    self.fd,
                    extra={"dropped_lines": dropped},
                )


class QueuedTextStream:
    """A text stream for ``logging`` whose writes go through an ``OutputQueue``."""

    def __init__(self, output: OutputQueue) -> None:
        self.output = output

    def write(self, text: str) -> int:
        self.output.write(text.encode("utf-8"))
        return len(text)

    def flush(self) -> None:
        """Do nothing: the queue's thread writes as soon as it can."""


class LineRelay:
    """Copy complete lines from one source pipe to a destination fd.

    The launcher relays every worker from its single main thread and writes each batch of
    whole lines with one ``write`` loop. Lines of two workers therefore never interleave or
    split, whatever their length. No ``PIPE_BUF`` limit applies, because only the launcher
    writes to the destination. A trailing partial line waits for its newline, or is written
    with a newline added when the worker closes the pipe.
    """

    def __init__(
        self, source_fd: int, destination_fd: int, *, output: OutputQueue | None = None
    ) -> None:
        self.source_fd = source_fd
        self.destination_fd = destination_fd
        # With a queue, lines go through its writer thread instead of a blocking write.
        self.output = output
        self._partial = bytearray()
        self.closed = False
        os.set_blocking(source_fd, False)

    def pump(self) -> bool:
        """Read what the pipe contains and write the complete lines; return ``False`` at EOF."""
        if self.closed:
            return False
        while True:
            try:
                chunk = os.read(self.source_fd, 65536)
            except BlockingIOError:
                return True
            except OSError:
                chunk = b""
            if not chunk:
                self.flush()
                return False
            self._feed(chunk)

    def _feed(self, chunk: bytes) -> None:
        end = chunk.rfind(b"\n")
        if end < 0:
            self._partial += chunk
            self._split_overlong()
            return

        if self._partial:
            lines = bytes(self._partial) + chunk[: end + 1]
            self._partial.clear()
        else:
            lines = chunk[: end + 1]
        self._write(lines)
        self._partial += chunk[end + 1 :]
        self._split_overlong()

    def _split_overlong(self) -> None:
        while len(self._partial) >= MAX_LINE_BYTES:
            self._write(bytes(self._partial[:MAX_LINE_BYTES]) + b"\n")
            del self._partial[:MAX_LINE_BYTES]

    def _write(self, data: bytes) -> None:
        if self.output is not None:
            self.output.write(data)
        else:
            write_all(self.destination_fd, data)

    def flush(self) -> None:
        """Write a pending partial line, ending it with a newline."""
        if self._partial:
            self._write(bytes(self._partial) + b"\n")
            self._partial.clear()

    def close(self) -> None:
        """Flush the pending partial line and close the source pipe; safe to call twice."""
        if self.closed:
            return
        self.flush()
        self.closed = True
        os.close(self.source_fd)
