"""A minimal PostgreSQL client over a raw socket, timing each phase of a connect.

``warmdb probe`` uses it to show where the time of one connect goes, phase by phase, which a
driver's single ``connect()`` call hides: DNS, TCP, the TLS handshake (after PostgreSQL's
SSLRequest), the startup exchange with authentication, and the first query. Framing and
encoding come from :mod:`warmdb.emulator.protocol` (pure code); this module only does the
socket I/O. It speaks what IAM logins use: cleartext passwords (DSQL, RDS IAM) and MD5; a
server asking for SCRAM is reported as such.

The password (a token) is sent inside TLS only, unless the caller asked for no TLS, and never
appears in an exception: server errors are quoted by SQLSTATE and message.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import struct
import time

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
    from collections.abc import Callable

__all__ = ["WireTimings", "probe_connect"]

_MAX_MESSAGE = 1 << 24
_AUTH_OK, _AUTH_CLEARTEXT, _AUTH_MD5, _AUTH_SASL = 0, 3, 5, 10


class WireTimings:
    """Seconds spent in each phase of one raw connect; ``None`` for a phase that did not run.

    :ivar dns: ``getaddrinfo`` for the host.
    :ivar tcp: the TCP handshake.
    :ivar tls: SSLRequest, the server's answer and the TLS handshake.
    :ivar startup: StartupMessage, authentication, parameters, up to ReadyForQuery.
    :ivar query: the first query, up to ReadyForQuery.
    :ivar address: the address connected to.
    :ivar tls_version: the negotiated TLS version, e.g. ``TLSv1.3``.
    """

    def __init__(self) -> None:
        self.dns: float | None = None
        self.tcp: float | None = None
        self.tls: float | None = None
        self.startup: float | None = None
        self.query: float | None = None
        self.address = ""
        self.tls_version: str | None = None


def _sslmode_context(sslmode: str, sslrootcert: str | None) -> ssl.SSLContext:
    """The TLS context for a libpq *sslmode*; built before the clock starts (drivers cache
    theirs, and loading the system CA bundle is not part of a handshake)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if sslmode not in ("verify-ca", "verify-full"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if sslrootcert and sslrootcert != "system":
        context.load_verify_locations(sslrootcert)
    else:
        context.load_default_certs()
    context.check_hostname = sslmode == "verify-full"
    return context


class _Conn:
    def __init__(self, sock: socket.socket | ssl.SSLSocket) -> None:
        self.sock = sock
        self.framer = MessageFramer(_MAX_MESSAGE)
        self.pending: list[bytes] = []

    def next(self) -> bytes:
        while not self.pending:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectError("the server closed the connection")
            self.pending.extend(self.framer.feed(data))
        return self.pending.pop(0)

    def until_ready(self) -> None:
        """Read messages up to ReadyForQuery, raising on an ErrorResponse."""
        while True:
            message = self.next()
            kind = message[:1]
            if kind == b"E":
                _raise_server_error(message)
            if kind == b"Z":
                return


def _raise_server_error(message: bytes) -> None:
    fields = error_fields(message)
    code = fields.get("C")
    raise ConnectError(
        f"the server refused: {fields.get('M', '?')} [SQLSTATE {code}]", sqlstate=code
    )


def _authenticate(conn: _Conn, user: str, password: str | None) -> None:
    while True:
        message = conn.next()
        kind = message[:1]
        if kind == b"E":
            _raise_server_error(message)
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


def probe_connect(
    *,
    host: str,
    port: int,
    user: str,
    dbname: str,
    password: str | None,
    sslmode: str,
    sslrootcert: str | None,
    query: str,
    connect_timeout: float = 10.0,
    clock: Callable[[], float] = time.perf_counter,
) -> WireTimings:
    """Connect once over a raw socket, timing each phase; close.

    :raises ConnectError: a phase failed (the message names it; no secret in it).
    """
    timings = WireTimings()
    context = _sslmode_context(sslmode, sslrootcert) if sslmode != "disable" else None
    started = clock()
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConnectError(f"DNS: {host} does not resolve: {exc.strerror or exc}") from None
    timings.dns = clock() - started
    family, kind, proto, _, address = infos[0]
    timings.address = str(address[0])
    sock = socket.socket(family, kind, proto)
    sock.settimeout(connect_timeout)
    try:
        started = clock()
        try:
            sock.connect(address)
        except OSError as exc:
            raise ConnectError(f"TCP: {timings.address}:{port}: {exc.strerror or exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        timings.tcp = clock() - started
        stream: socket.socket | ssl.SSLSocket = sock
        if context is not None:
            started = clock()
            sock.sendall(struct.pack("!ii", 8, SSL_REQUEST_CODE))
            answer = sock.recv(1)
            if answer != b"S":
                raise ConnectError("TLS: the server does not offer TLS")
            # SNI with the host name (DSQL needs it); none for an IP address, as libpq does.
            is_ip = _is_ip(host)
            stream = context.wrap_socket(sock, server_hostname=None if is_ip else host)
            timings.tls = clock() - started
            timings.tls_version = stream.version()
        conn = _Conn(stream)
        started = clock()
        stream.sendall(startup_message({"user": user, "database": dbname}))
        _authenticate(conn, user, password)
        conn.until_ready()
        timings.startup = clock() - started
        started = clock()
        stream.sendall(query_message(query))
        conn.until_ready()
        timings.query = clock() - started
        stream.sendall(encode(b"X", b""))
    except ssl.SSLError as exc:
        raise ConnectError(f"TLS: {exc.reason or exc}") from None
    except TimeoutError:
        raise ConnectError(f"timed out after {connect_timeout:g} s") from None
    finally:
        sock.close()
    return timings


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
