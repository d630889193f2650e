"""The MySQL client/server protocol, as pure functions: framing, handshake, auth, OK and ERR.

Nothing here touches a socket; :mod:`warmdb.emulator.mysql.server` does the I/O. The subset
is what a login through the emulator needs (the command phase is relayed as bytes):

* packets: a 3-byte little-endian payload length, a 1-byte sequence id, the payload;
* the server's ``HandshakeV10`` greeting, the client's ``SSLRequest`` and
  ``HandshakeResponse41``, ``AuthSwitchRequest`` and its answer, ``OK`` and ``ERR``;
* :class:`CommandTracker`, which follows the client's packets well enough to know whether
  the server owes it an answer (for the idle client timeout).

Reference: the MySQL source's "Client/Server Protocol" pages (``protocol_basic_*``,
``page_protocol_connection_phase_packets_*``) and MariaDB's "Connection" page.
"""

from __future__ import annotations

import dataclasses
import struct

from warmdb.emulator.protocol import ProtocolError

__all__ = [
    "CLEAR_PASSWORD",
    "MAX_PAYLOAD",
    "NATIVE_PASSWORD",
    "RELAYABLE",
    "REQUIRED",
    "CommandTracker",
    "Greeting",
    "HandshakeResponse",
    "Packet",
    "PacketFramer",
    "ProtocolError",
    "auth_switch_request",
    "clear_password",
    "encode_packet",
    "err_packet",
    "handshake_response",
    "is_err",
    "is_ok",
    "lenenc_int",
    "parse_err",
    "parse_greeting",
    "parse_handshake_response",
]

# Capability flags (protocol_basic_capabilities / mysql_com.h).
CLIENT_LONG_PASSWORD = 1 << 0
CLIENT_FOUND_ROWS = 1 << 1
CLIENT_LONG_FLAG = 1 << 2
CLIENT_CONNECT_WITH_DB = 1 << 3
CLIENT_NO_SCHEMA = 1 << 4
CLIENT_COMPRESS = 1 << 5
CLIENT_ODBC = 1 << 6
CLIENT_LOCAL_FILES = 1 << 7
CLIENT_IGNORE_SPACE = 1 << 8
CLIENT_PROTOCOL_41 = 1 << 9
CLIENT_INTERACTIVE = 1 << 10
CLIENT_SSL = 1 << 11
CLIENT_IGNORE_SIGPIPE = 1 << 12
CLIENT_TRANSACTIONS = 1 << 13
CLIENT_RESERVED = 1 << 14
CLIENT_SECURE_CONNECTION = 1 << 15
CLIENT_MULTI_STATEMENTS = 1 << 16
CLIENT_MULTI_RESULTS = 1 << 17
CLIENT_PS_MULTI_RESULTS = 1 << 18
CLIENT_PLUGIN_AUTH = 1 << 19
CLIENT_CONNECT_ATTRS = 1 << 20
CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA = 1 << 21
CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS = 1 << 22
CLIENT_SESSION_TRACK = 1 << 23
CLIENT_DEPRECATE_EOF = 1 << 24
CLIENT_SSL_VERIFY_SERVER_CERT = 1 << 30
CLIENT_REMEMBER_OPTIONS = 1 << 31

#: What the emulator can relay unchanged. Not compression (it would reframe the command
#: phase the idle tracker reads), nor MySQL 8's zstd, query attributes or multi-factor auth,
#: which the MariaDB upstream does not speak.
RELAYABLE = (
    CLIENT_LONG_PASSWORD
    | CLIENT_FOUND_ROWS
    | CLIENT_LONG_FLAG
    | CLIENT_CONNECT_WITH_DB
    | CLIENT_NO_SCHEMA
    | CLIENT_ODBC
    | CLIENT_LOCAL_FILES
    | CLIENT_IGNORE_SPACE
    | CLIENT_PROTOCOL_41
    | CLIENT_INTERACTIVE
    | CLIENT_IGNORE_SIGPIPE
    | CLIENT_TRANSACTIONS
    | CLIENT_RESERVED
    | CLIENT_SECURE_CONNECTION
    | CLIENT_MULTI_STATEMENTS
    | CLIENT_MULTI_RESULTS
    | CLIENT_PS_MULTI_RESULTS
    | CLIENT_PLUGIN_AUTH
    | CLIENT_CONNECT_ATTRS
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS
    | CLIENT_SESSION_TRACK
    | CLIENT_DEPRECATE_EOF
    | CLIENT_SSL_VERIFY_SERVER_CERT
    | CLIENT_REMEMBER_OPTIONS
)
#: Without these a client cannot take part in an IAM login at all.
REQUIRED = CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH

# Plugin names, not passwords.
NATIVE_PASSWORD = "mysql_native_password"  # noqa: S105
CLEAR_PASSWORD = "mysql_clear_password"  # noqa: S105

#: The largest payload of one packet; a longer one continues in the next packet.
MAX_PAYLOAD = 0xFFFFFF
_HEADER = 4
_SSL_REQUEST_SIZE = 32
_FILLER = 23

# Commands that get no answer from the server (COM_STMT_SEND_LONG_DATA, COM_STMT_CLOSE).
_NO_REPLY_COMMANDS = frozenset({0x18, 0x19})
_COM_QUIT = 0x01


@dataclasses.dataclass(frozen=True)
class Packet:
    """One packet: its sequence id and payload."""

    seq: int
    payload: bytes


def encode_packet(seq: int, payload: bytes) -> bytes:
    """Frame *payload* as packets from sequence id *seq*, splitting it at 16 MiB - 1."""
    out = bytearray()
    view = memoryview(payload)
    while True:
        chunk = view[:MAX_PAYLOAD]
        out += struct.pack("<I", len(chunk))[:3] + bytes([seq & 0xFF]) + chunk
        view = view[MAX_PAYLOAD:]
        seq += 1
        # A payload of exactly n * MAX_PAYLOAD bytes ends with an empty packet.
        if len(chunk) < MAX_PAYLOAD:
            return bytes(out)


class PacketFramer:
    """Cuts a byte stream into :class:`Packet` objects.

    :param max_size: the largest payload accepted, in bytes; a packet that declares more
        raises :class:`ProtocolError` before its payload is read. Login packets are small:
        the emulator never needs the 16 MiB continuation packets there.
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a whole packet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Packet]:
        """Add *data*; return the packets it completes, in order."""
        self._buffer += data
        packets: list[Packet] = []
        while len(self._buffer) >= _HEADER:
            size = int.from_bytes(self._buffer[:3], "little")
            if size > self.max_size:
                raise ProtocolError(f"packet of {size} bytes exceeds the {self.max_size} limit")
            if len(self._buffer) < _HEADER + size:
                break
            packets.append(Packet(self._buffer[3], bytes(self._buffer[_HEADER : _HEADER + size])))
            del self._buffer[: _HEADER + size]
        return packets


# Basic types ------------------------------------------------------------------------------


class _Reader:
    """Reads protocol basic types from one payload; running short is a protocol error."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise ProtocolError(f"{self.what} is truncated")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "little")

    def lenenc_int(self) -> int:
        first = self.uint(1)
        if first < 0xFB:
            return first
        if first == 0xFC:
            return self.uint(2)
        if first == 0xFD:
            return self.uint(3)
        if first == 0xFE:
            return self.uint(8)
        raise ProtocolError(f"{self.what} has an invalid length-encoded integer")

    def null_terminated(self) -> bytes:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise ProtocolError(f"{self.what} has an unterminated string")
        chunk = self.data[self.pos : end]
        self.pos = end + 1
        return chunk

    def rest(self) -> bytes:
        return self.take(self.remaining)


def lenenc_int(value: int) -> bytes:
    """A length-encoded integer."""
    if value < 0xFB:
        return bytes([value])
    if value < 1 << 16:
        return b"\xfc" + value.to_bytes(2, "little")
    if value < 1 << 24:
        return b"\xfd" + value.to_bytes(3, "little")
    return b"\xfe" + value.to_bytes(8, "little")


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise ProtocolError(f"{what} is not UTF-8") from None


# Greeting ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Greeting:
    """A server's ``HandshakeV10`` packet.

    :ivar server_version: e.g. ``"5.5.5-10.11.19-MariaDB"``.
    :ivar connection_id: the server's thread id for this connection.
    :ivar scramble: the 20 bytes of auth plugin data (the salt).
    :ivar capabilities: the server's capability flags.
    :ivar charset: the server's default collation id.
    :ivar status: the server status flags.
    :ivar auth_plugin: the default authentication plugin's name.
    """

    server_version: str
    connection_id: int
    scramble: bytes
    capabilities: int
    charset: int
    status: int
    auth_plugin: str

    def encode(self) -> bytes:
        """The payload (without the packet header)."""
        if len(self.scramble) != 20:
            raise ValueError("the scramble must be 20 bytes")
        caps = self.capabilities
        return b"".join(
            [
                b"\x0a",
                self.server_version.encode() + b"\x00",
                struct.pack("<I", self.connection_id),
                self.scramble[:8],
                b"\x00",
                struct.pack("<H", caps & 0xFFFF),
                bytes([self.charset]),
                struct.pack("<H", self.status),
                struct.pack("<H", caps >> 16),
                bytes([len(self.scramble) + 1]),
                b"\x00" * 10,
                self.scramble[8:] + b"\x00",
                self.auth_plugin.encode() + b"\x00",
            ]
        )


def parse_greeting(payload: bytes) -> Greeting:
    """Read a ``HandshakeV10`` payload (the upstream's).

    :raises ProtocolError: it is an ERR packet or not protocol version 10.
    """
    if payload[:1] == b"\xff":
        code, _, message = parse_err(payload)
        raise ProtocolError(f"the server refused the connection: {code} {message}")
    reader = _Reader(payload, "greeting")
    if reader.uint(1) != 10:
        raise ProtocolError("greeting: not protocol version 10")
    version = _text(reader.null_terminated(), "server version")
    connection_id = reader.uint(4)
    scramble = reader.take(8)
    reader.take(1)
    caps = reader.uint(2)
    charset = reader.uint(1)
    status = reader.uint(2)
    caps |= reader.uint(2) << 16
    data_len = reader.uint(1)
    reader.take(10)
    plugin = ""
    if caps & CLIENT_SECURE_CONNECTION:
        part2 = reader.take(max(13, data_len - 8))
        scramble += part2.rstrip(b"\x00")
    if caps & CLIENT_PLUGIN_AUTH and reader.remaining:
        plugin = _text(reader.null_terminated(), "auth plugin name")
    return Greeting(version, connection_id, scramble, caps, charset, status, plugin)


# Handshake response -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HandshakeResponse:
    """A client's ``HandshakeResponse41``, or its ``SSLRequest`` (the first 32 bytes of one).

    :ivar capabilities: the client's capability flags.
    :ivar max_packet: the largest packet the client will send.
    :ivar charset: the client's collation id.
    :ivar is_ssl_request: this is an ``SSLRequest``; the fields below are empty.
    :ivar user: the login user.
    :ivar auth_response: the answer to the greeting's plugin (a scrambled hash, or for
        ``mysql_clear_password`` the password itself).
    :ivar database: the initial database, or ``None``.
    :ivar auth_plugin: the plugin the answer was made for, or ``""``.
    :ivar attributes: the connect attributes, still encoded (relayed as they are).
    """

    capabilities: int
    max_packet: int
    charset: int
    is_ssl_request: bool = False
    user: str = ""
    auth_response: bytes = b""
    database: str | None = None
    auth_plugin: str = ""
    attributes: bytes = b""

    def __repr__(self) -> str:
        # The auth response may be a token in clear: never part of a repr.
        return (
            f"HandshakeResponse(capabilities={self.capabilities:#x}, "
            f"is_ssl_request={self.is_ssl_request}, user={self.user!r}, "
            f"database={self.database!r}, auth_plugin={self.auth_plugin!r})"
        )


def parse_handshake_response(payload: bytes) -> HandshakeResponse:
    """Read a client's ``SSLRequest`` or ``HandshakeResponse41``.

    :raises ProtocolError: a truncated or malformed packet, or a pre-4.1 client.
    """
    reader = _Reader(payload, "handshake response")
    caps = reader.uint(4)
    if not caps & CLIENT_PROTOCOL_41:
        raise ProtocolError("handshake response: the client does not speak protocol 4.1")
    max_packet = reader.uint(4)
    charset = reader.uint(1)
    reader.take(_FILLER)
    if len(payload) == _SSL_REQUEST_SIZE:
        if not caps & CLIENT_SSL:
            raise ProtocolError("handshake response: no user name")
        return HandshakeResponse(caps, max_packet, charset, is_ssl_request=True)
    user = _text(reader.null_terminated(), "user name")
    if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
        auth = reader.take(reader.lenenc_int())
    elif caps & CLIENT_SECURE_CONNECTION:
        auth = reader.take(reader.uint(1))
    else:
        auth = reader.null_terminated()
    database = None
    if caps & CLIENT_CONNECT_WITH_DB and reader.remaining:
        database = _text(reader.null_terminated(), "database name")
    plugin = ""
    if caps & CLIENT_PLUGIN_AUTH and reader.remaining:
        plugin = _text(reader.null_terminated(), "auth plugin name")
    attributes = b""
    if caps & CLIENT_CONNECT_ATTRS and reader.remaining:
        start = reader.pos
        reader.take(reader.lenenc_int())
        attributes = payload[start : reader.pos]
    return HandshakeResponse(
        caps, max_packet, charset, False, user, auth, database or None, plugin, attributes
    )


def handshake_response(
    *,
    capabilities: int,
    max_packet: int,
    charset: int,
    user: str,
    auth_response: bytes = b"",
    database: str | None = None,
    auth_plugin: str = NATIVE_PASSWORD,
    attributes: bytes = b"",
) -> bytes:
    """A ``HandshakeResponse41`` payload (the emulator's login to its upstream).

    *capabilities* decide which optional parts are written, as the protocol wants:
    ``CLIENT_CONNECT_WITH_DB`` is set or cleared to match *database*, and *attributes* (already
    encoded, length prefix included) are written only under ``CLIENT_CONNECT_ATTRS``.
    """
    caps = capabilities | CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH
    caps = (caps | CLIENT_CONNECT_WITH_DB) if database else (caps & ~CLIENT_CONNECT_WITH_DB)
    if not attributes:
        caps &= ~CLIENT_CONNECT_ATTRS
    parts = [
        struct.pack("<IIB", caps, max_packet, charset),
        b"\x00" * _FILLER,
        user.encode() + b"\x00",
    ]
    if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
        parts.append(lenenc_int(len(auth_response)) + auth_response)
    else:
        parts.append(bytes([len(auth_response)]) + auth_response)
    if database:
        parts.append(database.encode() + b"\x00")
    parts.append(auth_plugin.encode() + b"\x00")
    if caps & CLIENT_CONNECT_ATTRS:
        parts.append(attributes)
    return b"".join(parts)


# Authentication ---------------------------------------------------------------------------


def auth_switch_request(plugin: str, data: bytes = b"") -> bytes:
    """An ``AuthSwitchRequest`` payload: the server asks the client to answer *plugin*."""
    return b"\xfe" + plugin.encode() + b"\x00" + data


def clear_password(payload: bytes) -> str:
    """The password in a ``mysql_clear_password`` answer (NUL-terminated by every client).

    :raises ProtocolError: the password is not UTF-8 (a token is ASCII).
    """
    if payload.endswith(b"\x00"):
        payload = payload[:-1]
    try:
        return payload.decode()
    except UnicodeDecodeError:
        raise ProtocolError("the password is not UTF-8") from None


# OK and ERR -------------------------------------------------------------------------------


def is_ok(payload: bytes) -> bool:
    """Whether *payload* is an OK packet (during login: the login succeeded)."""
    return payload[:1] == b"\x00"


def is_err(payload: bytes) -> bool:
    """Whether *payload* is an ERR packet."""
    return payload[:1] == b"\xff"


def err_packet(code: int, sqlstate: str, message: str) -> bytes:
    """An ERR payload in the protocol 4.1 format (``#`` and the SQLSTATE before the text)."""
    if len(sqlstate) != 5:
        raise ValueError("a SQLSTATE has five characters")
    return b"\xff" + struct.pack("<H", code) + b"#" + sqlstate.encode() + message.encode()


def parse_err(payload: bytes) -> tuple[int, str, str]:
    """An ERR payload's error code, SQLSTATE (``"HY000"`` if absent) and message.

    :raises ProtocolError: it is not an ERR packet.
    """
    reader = _Reader(payload, "error packet")
    if reader.uint(1) != 0xFF:
        raise ProtocolError("not an error packet")
    code = reader.uint(2)
    sqlstate = "HY000"
    if payload[3:4] == b"#":
        reader.take(1)
        sqlstate = reader.take(5).decode("ascii", "replace")
    return code, sqlstate, reader.rest().decode("utf-8", "replace")


# Command phase ----------------------------------------------------------------------------


class CommandTracker:
    """Follows the client's side of the command phase: whose turn is it?

    The client is idle (RDS Proxy's idle client timeout runs) only while it owes the next
    move: the server has answered, or the last command needs no answer. A client waiting for
    a long query is not idle. The tracker reads packet headers only, across any split of the
    stream, and never copies payloads.
    """

    def __init__(self) -> None:
        self._header = bytearray()
        self._left = 0  # payload bytes of the current packet still to come
        self._continued = False  # the current packet continues a 16 MiB one
        self._wants_command = False  # the next payload byte is a command byte
        #: The client owes the next move when this is false.
        self.awaits_reply = False
        #: The client said goodbye (COM_QUIT): the server closing now is no failure.
        self.has_quit = False

    def from_client(self, data: bytes) -> None:
        """Note bytes sent by the client."""
        view = memoryview(data)
        while view:
            if self._left:
                if self._wants_command:
                    # A command's first byte says whether an answer will follow.
                    self.awaits_reply = view[0] not in _NO_REPLY_COMMANDS
                    self.has_quit = self.has_quit or view[0] == _COM_QUIT
                    self._wants_command = False
                step = min(self._left, len(view))
                self._left -= step
                view = view[step:]
                continue
            need = _HEADER - len(self._header)
            self._header += view[:need]
            view = view[need:]
            if len(self._header) < _HEADER:
                return
            size = int.from_bytes(self._header[:3], "little")
            self._header.clear()
            self._wants_command = not self._continued and size > 0
            if not self._continued and size == 0:
                self.awaits_reply = True
            self._continued = size == MAX_PAYLOAD
            self._left = size

    def from_server(self) -> None:
        """Note bytes sent by the server: the client's turn again."""
        self.awaits_reply = False
