"""Talking to the upstream MariaDB over its Unix socket: log in as a user, run setup SQL.

The upstream's users have no password and the socket sits in a 0700 directory only the
emulator (and its server account) can reach, so logging in is a handshake response with an
empty ``mysql_native_password`` answer. These helpers block; they run at emulator start and
once per client login.
"""

from __future__ import annotations

import contextlib
import socket

from warmdb.emulator.mysql import packets
from warmdb.emulator.mysql.packets import Greeting, Packet, PacketFramer, ProtocolError
from warmdb.emulator.unix import connect
from warmdb.errors import WarmdbError

__all__ = ["UpstreamError", "connect", "greet", "login", "probe", "read_packet", "run_sql"]

# Upstream packets are trusted: the protocol's own ceiling for one packet.
_MAX_PACKET = packets.MAX_PAYLOAD
_COM_QUERY = b"\x03"
_COM_QUIT = b"\x01"


class UpstreamError(WarmdbError):
    """The upstream server refused or failed a setup step."""

    __module__ = "warmdb.emulator"


def read_packet(sock: socket.socket, framer: PacketFramer) -> Packet:
    """Read one packet (the login phase is strictly one packet at a time)."""
    while True:
        data = sock.recv(65536)
        if not data:
            raise EOFError("the upstream server closed the connection")
        found = framer.feed(data)
        if found:
            if len(found) > 1 or framer.buffered:
                raise ProtocolError("the upstream sent more than one packet during login")
            return found[0]


def greet(sock: socket.socket) -> Greeting:
    """Read the greeting of a fresh connection.

    :raises ProtocolError: the server refused the connection instead (an ERR packet, such as
        1040 too many connections), or sent something else.
    """
    return packets.parse_greeting(read_packet(sock, PacketFramer(_MAX_PACKET)).payload)


def login(
    sock: socket.socket,
    greeting: Greeting,
    *,
    user: str,
    capabilities: int,
    charset: int | None = None,
    max_packet: int = 1 << 24,
    database: str | None = None,
    attributes: bytes = b"",
) -> Packet:
    """Log in as *user* on a connection whose *greeting* was read; return the server's reply.

    The reply is an OK packet (logged in), an ERR packet (refused: unknown user, too many
    connections...) or an auth switch (the user has a password or another plugin), left for
    the caller to judge. Capabilities the server lacks are dropped, and TLS and compression
    are never asked for on the socket.
    """
    caps = capabilities & greeting.capabilities & ~(packets.CLIENT_SSL | packets.CLIENT_COMPRESS)
    response = packets.handshake_response(
        capabilities=caps,
        max_packet=max_packet,
        charset=greeting.charset if charset is None else charset,
        user=user,
        database=database,
        attributes=attributes,
    )
    sock.sendall(packets.encode_packet(1, response))
    return read_packet(sock, PacketFramer(_MAX_PACKET))


def probe(path: str, timeout: float = 10.0) -> Greeting:
    """The upstream's greeting (its version and capabilities), without logging in."""
    with contextlib.closing(connect(path, timeout)) as sock:
        return greet(sock)


def run_sql(path: str, user: str, statements: list[str], timeout: float = 30.0) -> None:
    """Run *statements* one by one as *user*; each must answer with OK.

    :raises UpstreamError: the login or a statement failed.
    """
    with contextlib.closing(connect(path, timeout)) as sock:
        caps = packets.RELAYABLE & ~(
            packets.CLIENT_CONNECT_ATTRS | packets.CLIENT_DEPRECATE_EOF | packets.CLIENT_INTERACTIVE
        )
        reply = login(sock, greet(sock), user=user, capabilities=caps)
        _check(reply, f"login as {user}")
        framer = PacketFramer(_MAX_PACKET)
        for statement in statements:
            sock.sendall(packets.encode_packet(0, _COM_QUERY + statement.encode()))
            _check(read_packet(sock, framer), statement.split(" ", 2)[:2])
        with contextlib.suppress(OSError):
            sock.sendall(packets.encode_packet(0, _COM_QUIT))


def _check(packet: Packet, what: object) -> None:
    if packets.is_err(packet.payload):
        code, _, message = packets.parse_err(packet.payload)
        raise UpstreamError(f"upstream error {code} ({what}): {message}")
    if not packets.is_ok(packet.payload):
        raise UpstreamError(f"unexpected upstream answer ({what})")
