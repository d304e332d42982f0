"""Relay of a worker's output pipe to the launcher's own stdout or stderr, whole lines only."""

from __future__ import annotations

import os

__all__ = ["MAX_LINE_BYTES", "LineRelay", "write_all"]

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


class LineRelay:
    """Copy complete lines from one source pipe to a destination fd.

    The launcher relays every worker from its single main thread and writes each batch of
    whole lines with one ``write`` loop. Lines of two workers therefore never interleave or
    split, whatever their length. No ``PIPE_BUF`` limit applies, because only the launcher
    writes to the destination. A trailing partial line waits for its newline, or is written
    with a newline added when the worker closes the pipe.
    """

    def __init__(self, source_fd: int, destination_fd: int) -> None:
        self.source_fd = source_fd
        self.destination_fd = destination_fd
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
        write_all(self.destination_fd, lines)
        self._partial += chunk[end + 1 :]
        self._split_overlong()

    def _split_overlong(self) -> None:
        while len(self._partial) >= MAX_LINE_BYTES:
            write_all(self.destination_fd, bytes(self._partial[:MAX_LINE_BYTES]) + b"\n")
            del self._partial[:MAX_LINE_BYTES]

    def flush(self) -> None:
        """Write a pending partial line, ending it with a newline."""
        if self._partial:
            write_all(self.destination_fd, bytes(self._partial) + b"\n")
            self._partial.clear()

    def close(self) -> None:
        """Flush the pending partial line and close the source pipe; safe to call twice."""
        if self.closed:
            return
        self.flush()
        self.closed = True
        os.close(self.source_fd)
