"""HTTP/1.1 over a raw socket, for requests that no well-behaved client library would send."""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass, field

TIMEOUT_S = 30.0


@dataclass
class RawRequest:
    """One request as bytes on the wire; ``framing`` sets how the body is sent.

    ``length``: a correct Content-Length. ``chunked``: chunked transfer coding. ``none``: no
    body. ``disconnect``: Content-Length 100 bytes over the body, then the client closes.
    ``declared_huge``: Content-Length of 100 GB, 10 bytes sent.
    """

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    framing: str = "length"

    def encode(self) -> bytes:
        headers = [(b"host", b"127.0.0.1"), (b"connection", b"close"), *self.headers]
        body = self.body
        if self.framing == "length":
            headers.append((b"content-length", str(len(body)).encode()))
        elif self.framing == "chunked":
            headers.append((b"transfer-encoding", b"chunked"))
            body = (b"%x\r\n" % len(body) + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
        elif self.framing == "disconnect":
            headers.append((b"content-length", str(len(body) + 100).encode()))
        elif self.framing == "declared_huge":
            headers.append((b"content-length", b"100000000000"))
            body = b"0123456789"
        else:
            body = b""
        head = b"%s %s HTTP/1.1\r\n" % (self.method, self.target)
        head += b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        return head + b"\r\n" + body


@dataclass
class RawResponse:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


def exchange(port: int, request: RawRequest) -> RawResponse | None:
    """Send ``request`` to 127.0.0.1 and read the response until the server closes.

    Returns ``None`` for a ``disconnect`` request, which closes without reading. Raises
    ``TimeoutError`` when the server neither responds nor closes within ``TIMEOUT_S``.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as sock:
        # The server may reject the head and close before the body is sent.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request.encode())
        if request.framing == "disconnect":
            return None
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    return parse_response(data)


def parse_response(data: bytes) -> RawResponse:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"transfer-encoding") == b"chunked":
        body = _dechunk(body)
    return RawResponse(status, headers, body)


def _dechunk(data: bytes) -> bytes:
    body = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        body += data[:size]
        data = data[size + 2 :]
    return body
