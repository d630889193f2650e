"""The PostgreSQL v3 wire protocol, as far as the emulator needs it: pure framing and encoding.

Nothing here does I/O. The server feeds received bytes to :class:`StartupReader` (before
authentication, when packets carry no type byte) and :class:`MessageFramer` (after it), and
builds its own replies with the ``encode``-style helpers. Every size is checked before bytes
are buffered, so a hostile peer costs at most the configured maximum.

Message layout (https://www.postgresql.org/docs/current/protocol-message-formats.html)::

    startup phase   int32 length (itself included) | int32 code | body
    afterwards      byte type | int32 length (itself included, type excluded) | body
"""

from __future__ import annotations

import dataclasses
import struct

__all__ = [
    "CANCEL_REQUEST_CODE",
    "GSSENC_REQUEST_CODE",
    "MAX_STARTUP_PACKET",
    "PROTOCOL_V3",
    "SSL_REQUEST_CODE",
    "CancelRequest",
    "GSSEncRequest",
    "MessageFramer",
    "ProtocolError",
    "SSLRequest",
    "StartupMessage",
    "StartupReader",
    "authentication_cleartext",
    "authentication_code",
    "backend_key_data",
    "bind_statement",
    "cancel_request",
    "command_tag",
    "encode",
    "error_fields",
    "error_response",
    "modified_rows",
    "parse_backend_key_data",
    "parse_startup",
    "parse_statement",
    "password_from_message",
    "query_message",
    "query_text",
    "ready_for_query",
    "ready_status",
    "replace_error_message",
    "startup_message",
]

PROTOCOL_V3 = 196608  # 3 << 16
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102
#: PostgreSQL's own limit on a startup packet (``MAX_STARTUP_PACKET_LENGTH``).
MAX_STARTUP_PACKET = 10_000

_INT32 = struct.Struct("!i")
_HEADER = struct.Struct("!ci")
_PAIR = struct.Struct("!ii")


class ProtocolError(Exception):
    """The peer sent bytes that are not a valid message here. The connection must be dropped."""


# Startup phase ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class SSLRequest:
    """The client asks to switch to TLS before the startup message."""


@dataclasses.dataclass(frozen=True, slots=True)
class GSSEncRequest:
    """The client asks for GSSAPI encryption (answered ``N``)."""


class CancelRequest:
    """The client asks to cancel the query running on the backend with this key."""

    __slots__ = ("process_id", "secret")

    def __init__(self, process_id: int, secret: int) -> None:
        self.process_id = process_id
        self.secret = secret

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CancelRequest) and (self.process_id, self.secret) == (
            other.process_id,
            other.secret,
        )

    def __hash__(self) -> int:
        return hash((self.process_id, self.secret))

    def __repr__(self) -> str:
        return f"CancelRequest(process_id={self.process_id})"


class StartupMessage:
    """A protocol 3.0 startup message: the session parameters (``user``, ``database``...)."""

    __slots__ = ("params",)

    def __init__(self, params: dict[str, str]) -> None:
        self.params = params

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StartupMessage) and self.params == other.params

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.params.items())))

    def __repr__(self) -> str:
        return f"StartupMessage({self.params!r})"


StartupPacket = SSLRequest | GSSEncRequest | CancelRequest | StartupMessage


def parse_startup(packet: bytes) -> StartupPacket:
    """Parse one complete startup-phase packet, its length word included.

    :raises ProtocolError: wrong length, unknown code or protocol version, malformed
        parameters (not NUL-terminated, odd count, not UTF-8, no ``user``).
    """
    if len(packet) < 8:
        raise ProtocolError("startup packet shorter than 8 bytes")
    (length,) = _INT32.unpack_from(packet)
    if length != len(packet):
        raise ProtocolError("startup packet length does not match its length word")
    (code,) = _INT32.unpack_from(packet, 4)
    if code == SSL_REQUEST_CODE and length == 8:
        return SSLRequest()
    if code == GSSENC_REQUEST_CODE and length == 8:
        return GSSEncRequest()
    if code == CANCEL_REQUEST_CODE and length == 16:
        return CancelRequest(*_PAIR.unpack_from(packet, 8))
    if code != PROTOCOL_V3:
        raise ProtocolError(f"unsupported startup code {code}")
    body = packet[8:]
    if not body.endswith(b"\x00"):
        raise ProtocolError("startup parameters are not terminated")
    fields = body[:-1].split(b"\x00")
    # The parameter list ends with an empty name: "name\0value\0...\0".
    if len(fields) % 2 != 1 or fields[-1] != b"":
        raise ProtocolError("startup parameters are not name/value pairs")
    try:
        texts = [f.decode("utf-8") for f in fields[:-1]]
    except UnicodeDecodeError:
        raise ProtocolError("startup parameters are not UTF-8") from None
    params = dict(zip(texts[0::2], texts[1::2], strict=True))
    if len(params) * 2 != len(texts) or "" in params:
        raise ProtocolError("startup parameters repeat or have empty names")
    if not params.get("user"):
        raise ProtocolError("startup message has no user")
    return StartupMessage(params)


class StartupReader:
    """Accumulates bytes until one startup-phase packet is complete.

    :param max_size: the largest packet accepted, length word included.
    """

    def __init__(self, max_size: int = MAX_STARTUP_PACKET) -> None:
        self.max_size = max_size
        self._buffer = bytearray()

    def needed(self) -> int:
        """How many more bytes complete the current packet (at least 1 while incomplete)."""
        if len(self._buffer) < 4:
            return 4 - len(self._buffer)
        return self._length() - len(self._buffer)

    def _length(self) -> int:
        (length,) = _INT32.unpack_from(self._buffer)
        if not 8 <= length <= self.max_size:
            raise ProtocolError(f"startup packet length {length} out of range")
        return int(length)

    def feed(self, data: bytes) -> StartupPacket | None:
        """Add *data* (never more than :meth:`needed` bytes); return the packet once complete.

        :raises ProtocolError: more bytes than needed, or an invalid packet.
        """
        if len(data) > self.needed():
            raise ProtocolError("bytes after the startup packet")
        self._buffer += data
        if len(self._buffer) < 4 or self.needed() > 0:
            return None
        packet = bytes(self._buffer)
        self._buffer.clear()
        return parse_startup(packet)


def startup_message(params: dict[str, str]) -> bytes:
    """Encode a protocol 3.0 startup message."""
    body = b"".join(f"{k}\x00{v}\x00".encode() for k, v in params.items()) + b"\x00"
    return _INT32.pack(len(body) + 8) + _INT32.pack(PROTOCOL_V3) + body


def cancel_request(process_id: int, secret: int) -> bytes:
    """Encode a CancelRequest packet."""
    return _INT32.pack(16) + _INT32.pack(CANCEL_REQUEST_CODE) + _PAIR.pack(process_id, secret)


# Typed messages --------------------------------------------------------------------------


def encode(msg_type: bytes, body: bytes) -> bytes:
    """Encode one typed message: *msg_type* is a single byte such as ``b"Q"``."""
    return _HEADER.pack(msg_type, len(body) + 4) + body


class MessageFramer:
    """Splits a stream of typed messages into whole messages, each returned as raw bytes.

    A returned message is ``type byte + length word + body``, exactly as received, so it can
    be forwarded unchanged; ``msg[0]`` is the type and ``msg[5:]`` the body.

    Linear in the bytes fed: the start of an incomplete message is kept as a list of the
    chunks received, joined once when the message is complete (a 32 MiB query arriving in
    64 KiB reads is copied once, not once per read).

    :param max_size: the largest message accepted (length word included, type excluded).
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._chunks: list[bytes] = []
        self._size = 0
        # Bytes the held-back chunks must reach before parsing is worth trying again.
        self._needed = 0

    @property
    def buffered(self) -> int:
        """Bytes held back as the start of an incomplete message."""
        return self._size

    def feed(self, data: bytes) -> list[bytes]:
        """Add *data*; return every message it completes, in order.

        :raises ProtocolError: a length word below 4 or above ``max_size``.
        """
        if self._chunks:
            self._chunks.append(data)
            self._size += len(data)
            if self._size < self._needed:
                return []
            view = b"".join(self._chunks)
            self._chunks = []
            self._size = 0
        else:
            view = bytes(data)
        messages: list[bytes] = []
        pos, end = 0, len(view)
        needed = 5
        while end - pos >= 5:
            (length,) = _INT32.unpack_from(view, pos + 1)
            if not 4 <= length <= self.max_size:
                raise ProtocolError(f"message length {length} out of range")
            stop = pos + 1 + length
            if stop > end:
                needed = 1 + length
                break
            # A slice of the whole of a bytes object is the object itself: no copy.
            messages.append(view[pos:stop])
            pos = stop
        if pos < end:
            rest = view[pos:]
            self._chunks = [rest]
            self._size = len(rest)
            self._needed = needed
        return messages


def authentication_cleartext() -> bytes:
    """AuthenticationCleartextPassword: ask for the password (the IAM token) in clear text."""
    return encode(b"R", _INT32.pack(3))


def authentication_code(message: bytes) -> int:
    """The request code of an Authentication message (0 means AuthenticationOk)."""
    if message[:1] != b"R" or len(message) < 9:
        raise ProtocolError("not an Authentication message")
    return int(_INT32.unpack_from(message, 5)[0])


def backend_key_data(process_id: int, secret: int) -> bytes:
    """BackendKeyData: the key a client quotes in a CancelRequest."""
    return encode(b"K", _PAIR.pack(process_id, secret))


def parse_backend_key_data(message: bytes) -> tuple[int, int]:
    """Return ``(process_id, secret)`` from a BackendKeyData message."""
    if message[:1] != b"K" or len(message) != 13:
        raise ProtocolError("not a protocol 3.0 BackendKeyData message")
    pid, secret = _PAIR.unpack_from(message, 5)
    return int(pid), int(secret)


def password_from_message(message: bytes) -> str:
    """Return the password of a PasswordMessage (``p``).

    :raises ProtocolError: another message type, no NUL terminator, or not UTF-8.
    """
    if message[:1] != b"p" or not message.endswith(b"\x00"):
        raise ProtocolError("expected a password message")
    try:
        return message[5:-1].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("password is not UTF-8") from None


def ready_for_query(status: bytes) -> bytes:
    """ReadyForQuery with transaction status ``b"I"`` (idle), ``b"T"`` (in) or ``b"E"`` (failed)."""
    return encode(b"Z", status)


def ready_status(message: bytes) -> bytes:
    """The transaction status byte of a ReadyForQuery message."""
    return message[5:6]


def query_message(sql: str) -> bytes:
    """A simple-protocol Query message."""
    return encode(b"Q", sql.encode() + b"\x00")


def query_text(message: bytes) -> str:
    """The SQL text of a Query message (undecodable bytes replaced)."""
    return message[5:].rstrip(b"\x00").decode("utf-8", "replace")


def error_response(code: str, message: str, *, severity: str = "ERROR") -> bytes:
    """An ErrorResponse (or, with ``severity="FATAL"``, the last message before a close).

    :param code: the five-character SQLSTATE.
    """
    fields = {"S": severity, "V": severity, "C": code, "M": message}
    return encode(b"E", _encode_fields(fields))


def _encode_fields(fields: dict[str, str]) -> bytes:
    return b"".join(k.encode() + v.encode() + b"\x00" for k, v in fields.items()) + b"\x00"


def error_fields(message: bytes) -> dict[str, str]:
    """The fields of an ErrorResponse or NoticeResponse, keyed by their one-letter code."""
    fields: dict[str, str] = {}
    for part in message[5:].split(b"\x00"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields


def replace_error_message(message: bytes, *, code: str, text: str) -> bytes:
    """Return the ErrorResponse *message* with its SQLSTATE and message text replaced.

    Other fields (severity, position...) are kept; the detail and hint, which describe the
    original error, are dropped.
    """
    fields = error_fields(message)
    fields.pop("D", None)
    fields.pop("H", None)
    fields["C"] = code
    fields["M"] = text
    return encode(b"E", _encode_fields(fields))


_MODIFYING_TAGS = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE", "COPY"})


def modified_rows(message: bytes) -> int:
    """Rows a CommandComplete reports as modified: its count for INSERT, UPDATE, DELETE, MERGE
    and COPY tags, else 0 (the caller decides whether a COPY wrote or read).
    """
    tag = message[5:].rstrip(b"\x00").split(b" ")
    if len(tag) < 2 or tag[0].decode("ascii", "replace") not in _MODIFYING_TAGS:
        return 0
    count = tag[-1]
    return int(count) if count.isdigit() else 0


def command_tag(message: bytes) -> str:
    """The command name of a CommandComplete (``"INSERT"``, ``"COPY"``...)."""
    return message[5:].rstrip(b"\x00").split(b" ", 1)[0].decode("ascii", "replace")


def parse_statement(message: bytes) -> tuple[bytes, bytes]:
    """The statement name and SQL text of a Parse message.

    :raises ProtocolError: the body does not hold two NUL-terminated strings.
    """
    parts = message[5:].split(b"\x00", 2)
    if len(parts) < 3:
        raise ProtocolError("malformed Parse message")
    return parts[0], parts[1]


def bind_statement(message: bytes) -> bytes:
    """The name of the prepared statement a Bind message binds (``b""`` for the unnamed one).

    :raises ProtocolError: the body does not start with two NUL-terminated strings.
    """
    parts = message[5:].split(b"\x00", 2)
    if len(parts) < 3:
        raise ProtocolError("malformed Bind message")
    return parts[1]
