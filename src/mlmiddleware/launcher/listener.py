"""The listening socket that the supervisor binds once and every worker inherits."""

from __future__ import annotations

import socket

__all__ = ["bind_listener"]

_BACKLOG = 2048


def bind_listener(host: str, port: int) -> socket.socket:
    """Bind and listen on ``host:port`` (IPv4 or IPv6) and make the socket inheritable.

    Raises ``OSError`` when the address is in use or cannot be resolved.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(_BACKLOG)
    except OSError:
        listener.close()
        raise
    listener.set_inheritable(True)
    return listener
