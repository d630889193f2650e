"""Minimal PostgreSQL and MySQL clients over a raw socket, timing each phase of a connect.

``warmdb probe`` uses them to show where the time of one connect goes, phase by phase, which a
driver's single ``connect()`` call hides. Both families share DNS, TCP and the TLS handshake;
then each speaks its own protocol:

- PostgreSQL: SSLRequest and the TLS handshake, the startup exchange with authentication up
  to ReadyForQuery, the first query. Framing and encoding come from
  :mod:`warmdb.emulator.protocol`. It speaks what IAM logins use: cleartext passwords (DSQL,
  RDS IAM) and MD5; a server asking for SCRAM is reported as such.
- MySQL: the server's greeting (which the server sends first), SSLRequest and the TLS
  handshake, the handshake response with authentication up to the OK packet, the first
  query. Packets come from :mod:`warmdb.emulator.mysql.packets` and the greeting is read as
  the emulator reads its upstream's (:mod:`warmdb.emulator.mysql.upstream`). An IAM token is
  answered with ``mysql_clear_password`` at once (as a driver told to use that plugin does);
  a password answers the server's plugin (``mysql_native_password``, or cleartext when
  asked). Another plugin (``caching_sha2_password``) is reported as such.

This module only does socket I/O and timing. The password (a token) is sent inside TLS only,
unless the caller asked for no TLS, and never appears in an exception: server errors are
quoted by SQLSTATE or error number and message.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import ssl
import struct
import time
from dataclasses import dataclass

from warmdb._tls import ssl_context
from warmdb.emulator.mysql import packets, upstream
from warmdb.emulator.mysql.packets import PacketFramer, ProtocolError
from warmdb.emulator.protocol import (
    SSL_REQUEST_CODE,
    MessageFramer,
    authentication_code,
    encode,
    error_fields,
    query_message,
    startup_message,
)
from warmdb.errors import ConnectError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

__all__ = ["PHASES", "WireLogin", "WireTimings", "probe_connect"]

#: The phases of each family, in the order they run.
PHASES = {
    "postgresql": (
        "DNS",
        "TCP connect",
        "TLS handshake",
        "startup + authentication",
        "first query",
    ),
    "mysql": (
        "DNS",
        "TCP connect",
        "server greeting",
        "TLS handshake",
        "authentication",
        "first query",
    ),
}

_MAX_MESSAGE = 1 << 24
_AUTH_OK, _AUTH_CLEARTEXT, _AUTH_MD5, _AUTH_SASL = 0, 3, 5, 10
# What the MySQL probe asks for (masked by the server's greeting). No CLIENT_DEPRECATE_EOF:
# a result set then ends with an EOF packet, which is simple to find.
_MYSQL_CAPABILITIES = (
    packets.CLIENT_LONG_PASSWORD
    | packets.CLIENT_LONG_FLAG
    | packets.CLIENT_TRANSACTIONS
    | packets.CLIENT_MULTI_RESULTS
    | packets.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
)
_MYSQL_MAX_PACKET = 1 << 24
_COM_QUERY = b"\x03"
_COM_QUIT = b"\x01"


class WireTimings:
    """Seconds spent in each phase of one raw connect.

    :ivar phases: phase name -> seconds, in :data:`PHASES` order; a phase that did not run
        (the TLS handshake with ``sslmode=disable``) is ``None``.
    :ivar address: the address connected to.
    :ivar tls_version: the negotiated TLS version, e.g. ``TLSv1.3``, or ``None``.
    :ivar server_version: the server's version, when its protocol says it before the login
        (MySQL's greeting), else ``None``.
    """

    def __init__(self, family: str) -> None:
        self.phases: dict[str, float | None] = dict.fromkeys(PHASES[family])
        self.address = ""
        self.tls_version: str | None = None
        self.server_version: str | None = None


@dataclass(frozen=True, kw_only=True, repr=False)
class WireLogin:
    """Who logs in, to what, and how: what a probe needs beyond the address.

    :ivar user: the login user.
    :ivar dbname: the database, or ``None`` for the server's default (MySQL).
    :ivar password: the password or IAM token, or ``None``.
    :ivar sslmode: libpq's sslmode (``disable``, ``prefer``, ``require``, ``verify-ca``,
        ``verify-full``); ``prefer`` goes on without TLS when the server offers none.
    :ivar sslrootcert: CA file for verification, ``"system"``, or ``None``.
    :ivar clear_password: MySQL: answer ``mysql_clear_password`` straight away (IAM tokens).
    """

    user: str
    dbname: str | None
    password: str | None
    sslmode: str
    sslrootcert: str | None
    clear_password: bool = False

    def __repr__(self) -> str:
        # The password may be a token: never part of a repr.
        return f"WireLogin(user={self.user!r}, dbname={self.dbname!r}, sslmode={self.sslmode!r})"


class _Conn:
    """A socket cut into messages (PostgreSQL) or packets (MySQL) by *framer*."""

    def __init__(self, sock: socket.socket, framer: MessageFramer | PacketFramer) -> None:
        self.sock = sock
        self.framer = framer
        self.pending: list[Any] = []

    def next(self) -> Any:
        while not self.pending:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectError("the server closed the connection")
            self.pending.extend(self.framer.feed(data))
        return self.pending.pop(0)


def probe_connect(
    *,
    family: str = "postgresql",
    host: str,
    port: int,
    login: WireLogin,
    query: str,
    connect_timeout: float = 10.0,
    clock: Callable[[], float] = time.perf_counter,
) -> WireTimings:
    """Connect once over a raw socket, timing each phase; close.

    :param family: ``postgresql`` or ``mysql``: the protocol spoken after TCP.
    :raises ConnectError: a phase failed (the message names it; no secret in it).
    """
    probe = _Probe(family, host, login, query, clock)
    with probe.timed("DNS"):
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ConnectError(f"DNS: {host} does not resolve: {exc.strerror or exc}") from None
    address_family, kind, proto, _, address = infos[0]
    timings = probe.timings
    timings.address = str(address[0])
    sock = socket.socket(address_family, kind, proto)
    sock.settimeout(connect_timeout)
    try:
        with probe.timed("TCP connect"):
            try:
                sock.connect(address)
            except OSError as exc:
                where = f"{timings.address}:{port}"
                raise ConnectError(f"TCP: {where}: {exc.strerror or exc}") from None
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if family == "postgresql":
            probe.postgres(sock)
        else:
            probe.mysql(sock)
    except ssl.SSLError as exc:
        raise ConnectError(f"TLS: {exc.reason or exc}") from None
    except TimeoutError:
        raise ConnectError(f"timed out after {connect_timeout:g} s") from None
    finally:
        sock.close()
    return timings


class _Probe:
    """One probe's settings and timings; its methods speak each family's protocol."""

    def __init__(
        self, family: str, host: str, login: WireLogin, query: str, clock: Callable[[], float]
    ) -> None:
        self.timings = WireTimings(family)
        self.host = host
        self.login = login
        self.query = query
        self.clock = clock
        # Built before the clock starts: drivers cache theirs, and loading a CA bundle is
        # not part of a handshake.
        self.context = ssl_context(login.sslmode, login.sslrootcert)

    @contextlib.contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Time the block as *phase* (kept only when the block succeeds)."""
        started = self.clock()
        yield
        self.timings.phases[phase] = self.clock() - started

    def start_tls(self, sock: socket.socket, context: ssl.SSLContext) -> ssl.SSLSocket:
        """The TLS handshake on *sock*, with SNI for a host name (DSQL needs it; none for an
        IP address, as libpq and the MySQL drivers do)."""
        host = self.host
        stream = context.wrap_socket(sock, server_hostname=None if _is_ip(host) else host)
        self.timings.tls_version = stream.version()
        return stream

    def no_tls(self) -> None:
        """The server offers no TLS: fine for ``prefer``, a failure otherwise."""
        if self.login.sslmode != "prefer":
            raise ConnectError("TLS: the server does not offer TLS")

    # PostgreSQL ---------------------------------------------------------------------------

    def postgres(self, sock: socket.socket) -> None:
        stream = sock
        if self.context is not None:
            with self.timed("TLS handshake"):
                sock.sendall(struct.pack("!ii", 8, SSL_REQUEST_CODE))
                if sock.recv(1) == b"S":
                    stream = self.start_tls(sock, self.context)
                else:
                    self.no_tls()
        conn = _Conn(stream, MessageFramer(_MAX_MESSAGE))
        user = self.login.user
        with self.timed("startup + authentication"):
            stream.sendall(startup_message({"user": user, "database": self.login.dbname or user}))
            _pg_authenticate(conn, user, self.login.password)
            _pg_until_ready(conn)
        with self.timed("first query"):
            stream.sendall(query_message(self.query))
            _pg_until_ready(conn)
        stream.sendall(encode(b"X", b""))

    # MySQL --------------------------------------------------------------------------------

    def mysql(self, sock: socket.socket) -> None:
        with self.timed("server greeting"):
            try:
                greeting = upstream.greet(sock)
            except (ProtocolError, EOFError) as exc:
                raise ConnectError(f"greeting: {exc}") from None
        self.timings.server_version = greeting.server_version
        caps = (_MYSQL_CAPABILITIES & greeting.capabilities) | packets.REQUIRED
        stream = sock
        seq = 1
        if self.context is not None:
            with self.timed("TLS handshake"):
                if greeting.capabilities & packets.CLIENT_SSL:
                    caps |= packets.CLIENT_SSL
                    sock.sendall(packets.encode_packet(seq, _ssl_request(caps, greeting.charset)))
                    seq += 1
                    stream = self.start_tls(sock, self.context)
                else:
                    self.no_tls()
        with self.timed("authentication"):
            _mysql_authenticate(stream, greeting, caps, seq, self.login)
        with self.timed("first query"):
            stream.sendall(packets.encode_packet(0, _COM_QUERY + self.query.encode()))
            _mysql_result(_Conn(stream, PacketFramer(packets.MAX_PAYLOAD)))
        stream.sendall(packets.encode_packet(0, _COM_QUIT))


def _pg_until_ready(conn: _Conn) -> None:
    """Read messages up to ReadyForQuery, raising on an ErrorResponse."""
    while True:
        message = conn.next()
        kind = message[:1]
        if kind == b"E":
            _pg_raise(message)
        if kind == b"Z":
            return


def _pg_raise(message: bytes) -> None:
    fields = error_fields(message)
    code = fields.get("C")
    raise ConnectError(
        f"the server refused: {fields.get('M', '?')} [SQLSTATE {code}]", sqlstate=code
    )


def _pg_authenticate(conn: _Conn, user: str, password: str | None) -> None:
    while True:
        message = conn.next()
        kind = message[:1]
        if kind == b"E":
            _pg_raise(message)
        if kind != b"R":
            raise ConnectError(f"unexpected message {kind!r} during authentication")
        code = authentication_code(message)
        if code == _AUTH_OK:
            return
        if code in (_AUTH_CLEARTEXT, _AUTH_MD5) and password is None:
            raise ConnectError("the server asked for a password and there is none")
        if code == _AUTH_CLEARTEXT:
            assert password is not None
            conn.sock.sendall(encode(b"p", password.encode() + b"\x00"))
        elif code == _AUTH_MD5:
            assert password is not None
            salt = message[9:13]
            inner = hashlib.md5((password + user).encode()).hexdigest()  # noqa: S324 - protocol
            outer = hashlib.md5(inner.encode() + salt).hexdigest()  # noqa: S324 - protocol
            conn.sock.sendall(encode(b"p", b"md5" + outer.encode() + b"\x00"))
        elif code == _AUTH_SASL:
            raise ConnectError(
                "the server asked for SCRAM: the probe speaks cleartext and MD5 (what IAM "
                "logins use); the drivers' whole connects are still timed"
            )
        else:
            raise ConnectError(f"unsupported authentication request {code}")


# MySQL -----------------------------------------------------------------------------------


def _ssl_request(caps: int, charset: int) -> bytes:
    """An ``SSLRequest`` payload: the first 32 bytes of a handshake response."""
    return struct.pack("<IIB", caps, _MYSQL_MAX_PACKET, charset) + bytes(23)


def _mysql_authenticate(
    stream: socket.socket, greeting: packets.Greeting, caps: int, seq: int, login: WireLogin
) -> None:
    """Send the handshake response and follow auth switches up to the OK packet."""
    password = login.password
    if login.clear_password and password is not None:
        plugin = packets.CLEAR_PASSWORD
    else:
        plugin = greeting.auth_plugin or packets.NATIVE_PASSWORD
    response = packets.handshake_response(
        capabilities=caps,
        max_packet=_MYSQL_MAX_PACKET,
        charset=greeting.charset,
        user=login.user,
        auth_response=_mysql_answer(plugin, greeting.scramble, password),
        database=login.dbname,
        auth_plugin=plugin,
    )
    stream.sendall(packets.encode_packet(seq, response))
    while True:
        try:
            reply = upstream.read_packet(stream, PacketFramer(packets.MAX_PAYLOAD))
        except EOFError:
            raise ConnectError("the server closed the connection") from None
        payload = reply.payload
        if packets.is_ok(payload):
            return
        if packets.is_err(payload):
            _mysql_raise(payload)
        if payload[:1] != b"\xfe":
            raise ConnectError(f"unexpected packet {payload[:1]!r} during authentication")
        # AuthSwitchRequest: the plugin's name, then its data (a new scramble).
        name, _, data = payload[1:].partition(b"\x00")
        answer = _mysql_answer(name.decode(errors="replace"), data.rstrip(b"\x00"), password)
        stream.sendall(packets.encode_packet(reply.seq + 1, answer))


def _mysql_answer(plugin: str, scramble: bytes, password: str | None) -> bytes:
    """The answer to *plugin*'s challenge."""
    if plugin == packets.CLEAR_PASSWORD:
        return (password or "").encode() + b"\x00"
    if plugin == packets.NATIVE_PASSWORD:
        if not password:
            return b""
        # SHA1(password) XOR SHA1(scramble + SHA1(SHA1(password))).
        stage1 = hashlib.sha1(password.encode()).digest()  # noqa: S324 - protocol
        stage2 = hashlib.sha1(stage1).digest()  # noqa: S324 - protocol
        mask = hashlib.sha1(scramble[:20] + stage2).digest()  # noqa: S324 - protocol
        return bytes(a ^ b for a, b in zip(stage1, mask, strict=True))
    raise ConnectError(
        f"the server asked for {plugin}: the probe speaks mysql_clear_password (what IAM "
        "logins use) and mysql_native_password; the drivers' whole connects are still timed"
    )


def _mysql_result(conn: _Conn) -> None:
    """Read a query's answer: an OK packet, or a result set up to its closing EOF."""
    first = conn.next().payload
    if packets.is_err(first):
        _mysql_raise(first)
    if packets.is_ok(first):
        return
    eofs = 0
    while eofs < 2:  # one after the column definitions, one after the rows
        payload = conn.next().payload
        if packets.is_err(payload):
            _mysql_raise(payload)
        if payload[:1] == b"\xfe" and len(payload) < 9:
            eofs += 1


def _mysql_raise(payload: bytes) -> None:
    code, sqlstate, message = packets.parse_err(payload)
    raise ConnectError(
        f"the server refused: {message} [error {code}, SQLSTATE {sqlstate}]", sqlstate=sqlstate
    )


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
