"""Line relay: whole lines only, whatever their length, from several pipes into one."""

from __future__ import annotations

import os
import random

import pytest

from mlmiddleware.launcher.relay import MAX_LINE_BYTES, LineRelay, OutputQueue


def read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def test_relay_interleaved_sources(tmp_path: os.PathLike[str]) -> None:
    output_path = os.path.join(tmp_path, "out")
    destination = os.open(output_path, os.O_WRONLY | os.O_CREAT)
    lines = {
        name: [
            name + b"%03d:" % i + b"y" * random.Random(i).randint(1, 20_000) + b"\n"
            for i in range(30)
        ]
        for name in (b"a", b"b")
    }
    pipes = {name: os.pipe() for name in lines}
    relays = {name: LineRelay(pipes[name][0], destination) for name in lines}

    # Feed each source in odd-sized pieces that cut lines anywhere, alternating sources.
    streams = {name: b"".join(lines[name]) for name in lines}
    offsets = dict.fromkeys(lines, 0)
    step = 1
    while any(offsets[name] < len(streams[name]) for name in lines):
        for name in lines:
            piece = streams[name][offsets[name] : offsets[name] + 3001 * step % 9000 + 1]
            offsets[name] += len(piece)
            if piece:
                os.write(pipes[name][1], piece)
            relays[name].pump()
        step += 1
    for name in lines:
        os.close(pipes[name][1])
        assert relays[name].pump() is False
        relays[name].close()
    os.close(destination)

    with open(output_path, "rb") as output:
        written = output.read().splitlines(keepends=True)
    assert sorted(written) == sorted(lines[b"a"] + lines[b"b"])
    assert [line for line in written if line.startswith(b"a")] == lines[b"a"]


def test_relay_partial_line_at_eof() -> None:
    source_read, source_write = os.pipe()
    sink_read, sink_write = os.pipe()
    relay = LineRelay(source_read, sink_write)
    os.write(source_write, b"complete\npartial")
    assert relay.pump() is True
    os.close(source_write)
    assert relay.pump() is False
    relay.close()
    os.close(sink_write)
    assert read_all(sink_read) == b"complete\npartial\n"
    os.close(sink_read)


def test_relay_close_twice() -> None:
    source_read, source_write = os.pipe()
    relay = LineRelay(source_read, os.open(os.devnull, os.O_WRONLY))
    relay.close()
    relay.close()
    assert relay.closed
    assert relay.pump() is False
    os.close(source_write)
    os.close(relay.destination_fd)


def test_relay_splits_overlong_line(tmp_path: os.PathLike[str]) -> None:
    output_path = os.path.join(tmp_path, "out")
    destination = os.open(output_path, os.O_WRONLY | os.O_CREAT)
    source_read, source_write = os.pipe()
    relay = LineRelay(source_read, destination)
    remaining = MAX_LINE_BYTES + 10
    while remaining:
        written = os.write(source_write, b"z" * min(remaining, 60_000))
        remaining -= written
        relay.pump()
    os.close(source_write)
    relay.pump()
    relay.close()
    os.close(destination)
    with open(output_path, "rb") as output:
        pieces = output.read().split(b"\n")
    assert [len(piece) for piece in pieces] == [MAX_LINE_BYTES, 10, 0]


def fill_pipe(write_fd: int) -> int:
    """Write into the pipe until it is full; return the bytes written."""
    os.set_blocking(write_fd, False)
    written = 0
    try:
        while True:
            written += os.write(write_fd, b"f" * 4096)
    except BlockingIOError:
        pass
    os.set_blocking(write_fd, True)
    return written


def test_output_queue_drops_when_reader_stalls(caplog: pytest.LogCaptureFixture) -> None:
    read_fd, write_fd = os.pipe()
    filler = fill_pipe(write_fd)
    output = OutputQueue(write_fd, max_bytes=100)

    lines_sent = [f"line {index:02d} of the stalled reader test\n".encode() for index in range(10)]
    for line in lines_sent:
        output.write(line)
    dropped = output.dropped_lines
    received = bytearray()
    while len(received) < filler + 2 * len(lines_sent[0]):
        received += os.read(read_fd, 65536)
    output.close()
    os.close(write_fd)
    received += os.read(read_fd, 65536)
    os.close(read_fd)

    lines = bytes(received[filler:]).splitlines()
    assert dropped == 8
    assert lines == [b"line 00 of the stalled reader test", b"line 01 of the stalled reader test"]
    assert any("Dropped 8 output lines" in record.getMessage() for record in caplog.records)


def test_output_queue_keeps_order() -> None:
    read_fd, write_fd = os.pipe()
    output = OutputQueue(write_fd)

    for index in range(1000):
        output.write(f"{index}\n".encode())
    output.close()
    os.close(write_fd)
    data = b""
    while chunk := os.read(read_fd, 65536):
        data += chunk
    os.close(read_fd)

    assert data.splitlines() == [str(index).encode() for index in range(1000)]
