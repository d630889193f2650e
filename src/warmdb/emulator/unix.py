"""Connections to an embedded upstream server over its Unix socket (PostgreSQL and MariaDB)."""

from __future__ import annotations

import socket

__all__ = ["connect"]


def connect(path: str, timeout: float) -> socket.socket:
    """Open a Unix socket connection to the upstream at *path*, with a *timeout* set."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock
