"""Emulators for the integration tests, and a minimal raw PostgreSQL client to probe them.

The session emulator (``dsql_emulator``, from warmdb's own pytest plugin) has DSQL's default
limits. Tests of one limit start their own small emulator with :func:`emulator`.
"""

from __future__ import annotations

import socket
import ssl
import time
from contextlib import contextmanager

import asyncpg
import pytest

from warmdb.emulator import protocol
from warmdb.emulator.service import Emulator


@contextmanager
def emulator(**options):
    """A fresh emulator for one test (about half a second to start)."""
    with Emulator(**options) as started:
        yield started


def tls_context(dsql: Emulator) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(dsql.ca_path))


async def asyncpg_admin(dsql: Emulator, password: str | None = None) -> asyncpg.Connection:
    """An asyncpg connection as ``admin`` over verified TLS, with a fresh token by default.

    To ``localhost``, not ``127.0.0.1``: a TLS client sends no server name (SNI) for an IP
    address, and DSQL, like the emulator, refuses a connection without one.
    """
    return await asyncpg.connect(
        host="localhost",
        port=dsql.port,
        user="admin",
        database="postgres",
        password=password if password is not None else dsql.token(host="localhost"),
        ssl=tls_context(dsql),
    )


def open_socket(dsql: Emulator, *, tls: bool = True, gssenc_first: bool = False) -> socket.socket:
    """A connection to *dsql*, after the SSLRequest (and optionally GSSENCRequest) exchange."""
    sock = socket.create_connection(("127.0.0.1", dsql.port), timeout=10)
    if gssenc_first:
        sock.sendall(bytes.fromhex("0000000804d21630"))
        assert sock.recv(1) == b"N"
    if tls:
        sock.sendall(bytes.fromhex("0000000804d2162f"))
        assert sock.recv(1) == b"S"
        sock = tls_context(dsql).wrap_socket(sock, server_hostname=dsql.hostname)
    return sock


def read_until(sock: socket.socket, kinds: bytes) -> list[bytes]:
    """Read messages until one of type in *kinds* (or EOF); return them all."""
    framer = protocol.MessageFramer(1 << 30)
    messages: list[bytes] = []
    while not messages or messages[-1][:1] not in [bytes([k]) for k in kinds]:
        data = sock.recv(65536)
        if not data:
            break
        messages += framer.feed(data)
    return messages


def login(
    dsql: Emulator,
    password: str | None,
    *,
    user: str = "admin",
    tls: bool = True,
    gssenc_first: bool = False,
) -> dict[str, str]:
    """Log in with the raw protocol; return the ErrorResponse fields, or {} on success."""
    with open_socket(dsql, tls=tls, gssenc_first=gssenc_first) as sock:
        sock.sendall(protocol.startup_message({"user": user, "database": "postgres"}))
        messages = read_until(sock, b"REZ")
        if (
            messages
            and messages[-1][:1] == b"R"
            and protocol.authentication_code(messages[-1]) == 3
        ):
            sock.sendall(protocol.encode(b"p", (password or "").encode() + b"\x00"))
            messages = read_until(sock, b"EZ")
        last = messages[-1] if messages else b""
        if last[:1] == b"E":
            return protocol.error_fields(last)
        assert last[:1] == b"Z", messages
        return {}


def wait_for(predicate, timeout: float = 5.0) -> None:
    """Poll *predicate* until true; fail after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.01)
