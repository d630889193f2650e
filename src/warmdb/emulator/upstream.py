"""Talking to the upstream PostgreSQL over its Unix socket: connect, cancel, run setup SQL.

The upstream trusts local connections, so logging in is a startup message and waiting for
ReadyForQuery. These helpers block; they are used at emulator start and per session.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

from warmdb.emulator import protocol
from warmdb.emulator.unix import connect
from warmdb.errors import WarmdbError

__all__ = ["UpstreamError", "connect", "run_sql", "send_cancel", "socket_path"]

# Upstream messages are trusted; this is PostgreSQL's own allocation limit.
UPSTREAM_MAX_MESSAGE = 1024 * 1024 * 1024


class UpstreamError(WarmdbError):
    """The upstream server refused or failed a setup step."""

    __module__ = "warmdb.emulator"


def socket_path(socket_dir: str | Path, port: int) -> str:
    """The path of the upstream's Unix socket."""
    return str(Path(socket_dir) / f".s.PGSQL.{port}")


def send_cancel(path: str, process_id: int, secret: int, timeout: float = 5.0) -> None:
    """Ask the upstream to cancel the query of backend *process_id*."""
    with contextlib.closing(connect(path, timeout)) as sock:
        sock.sendall(protocol.cancel_request(process_id, secret))
        # The server closes the connection once it has read the request; waiting for that
        # keeps the cancel ordered before anything the caller does next.
        with contextlib.suppress(OSError):
            sock.recv(1)


def _read_cycle(sock: socket.socket, framer: protocol.MessageFramer) -> list[bytes]:
    """Read messages up to and including ReadyForQuery."""
    messages: list[bytes] = []
    while not messages or messages[-1][:1] != b"Z":
        data = sock.recv(65536)
        if not data:
            raise UpstreamError("the upstream server closed the connection")
        messages += framer.feed(data)
    return messages


def _check(messages: list[bytes]) -> None:
    for message in messages:
        if message[:1] == b"E":
            fields = protocol.error_fields(message)
            raise UpstreamError(f"upstream error {fields.get('C')}: {fields.get('M')}")


def run_sql(path: str, user: str, sql: str, *, database: str = "postgres") -> None:
    """Run *sql* (one simple query, several statements allowed) as *user*.

    :raises UpstreamError: the server refused the login or the SQL failed.
    """
    framer = protocol.MessageFramer(UPSTREAM_MAX_MESSAGE)
    with contextlib.closing(connect(path, 30.0)) as sock:
        sock.sendall(protocol.startup_message({"user": user, "database": database}))
        _check(_read_cycle(sock, framer))
        sock.sendall(protocol.query_message(sql))
        _check(_read_cycle(sock, framer))
        sock.sendall(protocol.encode(b"X", b""))
