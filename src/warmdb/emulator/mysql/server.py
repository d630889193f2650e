"""The MySQL emulator's front end: TLS, the IAM login, then a relay to MariaDB.

One thread per client connection, as the DSQL engine's :mod:`warmdb.emulator.server`. The
login reads blocking under one deadline (``login_timeout``) covering the TLS handshake and
every login packet; a slow or malformed client holds and loses only its own connection. A
login goes:

1. a connection to MariaDB, whose thread id the greeting carries (so ``CONNECTION_ID()``, the
   driver's thread id and ``KILL`` agree); the greeting offers ``mysql_native_password``, as
   RDS's does;
2. the client's ``SSLRequest`` and the TLS handshake; a client that answers in plaintext is
   refused with 1045 before it is asked for its password, so the token never crosses the
   wire unencrypted;
3. its handshake response; unless it already answered ``mysql_clear_password`` (what
   mysql-connector does with ``auth_plugin="mysql_clear_password"``), an
   ``AuthSwitchRequest`` asks for the password in clear (inside TLS), as RDS's IAM plugin does;
4. the IAM connect ceiling, then the token check; refusals are MySQL's 1045;
5. the login to MariaDB as the same user; its OK (or its ERR) goes back to the client,
   renumbered.

After login the bytes are relayed unchanged in both directions with non-blocking sockets and
poll; :class:`~warmdb.emulator.mysql.packets.CommandTracker` only watches whose turn it is,
for the idle client timeout.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import select
import socket
import ssl
import sys
import threading
import time

from warmdb.emulator.limits import TokenBucket
from warmdb.emulator.mysql import limits as limits_module
from warmdb.emulator.mysql import packets, upstream
from warmdb.emulator.mysql.limits import MySQLLimits, MySQLStats
from warmdb.emulator.mysql.packets import Greeting, HandshakeResponse, PacketFramer, ProtocolError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from warmdb.emulator.token_check import TokenVerifier

__all__ = ["MySQLServer"]

logger = logging.getLogger(__name__)

_READ_SIZE = 64 * 1024
_SEND_CHUNK = 256 * 1024
_HIGH_WATER = 1024 * 1024
# Login packets: user, database, connect attributes and a token fit many times over.
_LOGIN_PACKET_MAX = 64 * 1024
_READABLE = select.POLLIN
_WRITABLE = select.POLLOUT
_INPUT_EVENTS = select.POLLIN | select.POLLHUP | select.POLLERR | select.POLLNVAL
# Printable scramble bytes, as MySQL's own generator: some clients stop at a NUL.
_SCRAMBLE_ALPHABET = bytes(range(33, 127))
# SERVER_STATUS_AUTOCOMMIT: what a fresh session reports.
_STATUS_AUTOCOMMIT = 0x0002


class _Refused(Exception):
    """The session ended with a refusal already sent to the client."""


def _scramble() -> bytes:
    return bytes(_SCRAMBLE_ALPHABET[b % len(_SCRAMBLE_ALPHABET)] for b in os.urandom(20))


class _ReusedTokens:
    """Digests of recently accepted tokens: a reused token skips the IAM connect ceiling.

    Holds SHA-256 digests, never tokens, for ``window`` seconds each.
    """

    def __init__(self, window: float, clock: Callable[[], float]) -> None:
        self._window = window
        self._clock = clock
        self._seen: dict[bytes, float] = {}
        self._lock = threading.Lock()

    @staticmethod
    def digest(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def contains(self, digest: bytes) -> bool:
        with self._lock:
            until = self._seen.get(digest)
            return until is not None and until > self._clock()

    def add(self, digest: bytes) -> None:
        now = self._clock()
        with self._lock:
            self._seen.setdefault(digest, now + self._window)
            if len(self._seen) > 10_000:
                self._seen = {d: t for d, t in self._seen.items() if t > now}


class MySQLServer:
    """Accepts client connections and runs a session thread for each.

    :param listener: a bound, listening TCP socket (the caller picks the port first: RDS
        tokens name it, so the verifier needs it before the first client).
    :param upstream_path: MariaDB's Unix socket.
    :param upstream_greeting: MariaDB's greeting (version, capabilities, charset).
    :param tls_context: the server-side TLS context.
    :param verifier: checks the IAM tokens (``kind="rds"``).
    :param limits: the options.
    :param clock: a monotonic clock for the connect ceiling and timeouts.
    """

    def __init__(
        self,
        *,
        listener: socket.socket,
        upstream_path: str,
        upstream_greeting: Greeting,
        tls_context: ssl.SSLContext,
        verifier: TokenVerifier,
        limits: MySQLLimits,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.upstream_path = upstream_path
        self.upstream_greeting = upstream_greeting
        self.tls_context = tls_context
        self.verifier = verifier
        self.limits = limits
        self.clock = clock
        self.stats = MySQLStats()
        self.port = int(listener.getsockname()[1])
        self._listener = listener
        rate = limits.iam_connect_rate
        self._bucket = TokenBucket(rate, max(1, int(rate)), clock)
        self._reused = _ReusedTokens(limits.reuse_window, clock)
        self._lock = threading.Lock()
        self._sessions: set[_Session] = set()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        # What clients may use: what the emulator relays and MariaDB has, plus TLS.
        self.capabilities = (
            upstream_greeting.capabilities & packets.RELAYABLE
        ) | packets.CLIENT_SSL

    def start(self) -> None:
        """Start accepting."""
        # A short timeout lets the accept loop notice stop() on every platform.
        self._listener.settimeout(0.2)
        self._thread = threading.Thread(
            target=self._accept_loop, name="warmdb-mysql-accept", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, drop every open connection and wait for the session threads."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._listener.close()
        with self._lock:
            sessions = list(self._sessions)
        for session in sessions:
            session.abort()
        deadline = time.monotonic() + timeout
        for session in sessions:
            session.thread.join(max(0.0, deadline - time.monotonic()))

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                sock, peer = self._listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self._closing.is_set():
                    return
                logger.warning("accept failed: %s", exc)
                time.sleep(0.05)
                continue
            session = _Session(self, sock, peer)
            with self._lock:
                self._sessions.add(session)
            session.thread.start()

    def forget(self, session: _Session) -> None:
        """Called by a session as it ends."""
        with self._lock:
            self._sessions.discard(session)

    def admit(self, token: str) -> bool:
        """Whether a login with *token* is under the IAM connect ceiling (reuse is free)."""
        digest = self._reused.digest(token)
        if self._reused.contains(digest):
            self.stats.add("reused_tokens")
            return True
        return self._bucket.try_acquire()

    def accepted(self, token: str) -> None:
        """Remember an accepted token, so that reusing it is not throttled."""
        self._reused.add(self._reused.digest(token))


class _Session:
    """One client connection: login, then relay until either side closes."""

    def __init__(self, server: MySQLServer, sock: socket.socket, peer: object) -> None:
        self.server = server
        self.stats = server.stats
        self.limits = server.limits
        self.client: socket.socket = sock
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.peer = peer
        self.peer_host = str(peer[0]) if isinstance(peer, tuple) else "localhost"
        self._fd = sock.fileno()
        self._fd_lock = threading.Lock()
        self._is_closed = False
        self.upstream: socket.socket | None = None
        self.is_tls = False
        self.is_open = False
        self.seq = 0
        self.thread = threading.Thread(target=self.run, name="warmdb-mysql-session", daemon=True)

    # Lifecycle ---------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except _Refused:
            pass
        except (OSError, EOFError, ProtocolError) as exc:
            if not self.is_open:
                self.stats.reject("protocol")
                if isinstance(exc, ProtocolError):
                    self._send_error(*limits_module.BAD_HANDSHAKE)
            logger.debug("connection from %s dropped: %s", self.peer, exc)
        except Exception:
            logger.exception("connection from %s failed", self.peer)
        finally:
            self._close()

    def abort(self) -> None:
        """Cut the connection from another thread (server stop)."""
        with self._fd_lock:
            if self._is_closed:
                return
            with contextlib.suppress(OSError), socket.socket(fileno=socket.dup(self._fd)) as dup:
                dup.shutdown(socket.SHUT_RDWR)

    def _close(self) -> None:
        self.server.forget(self)
        if self.is_tls:
            # close_notify without waiting for the peer's: the client reads a clean end.
            with contextlib.suppress(OSError, ValueError):
                self.client.setblocking(False)
                self.client.unwrap()  # type: ignore[attr-defined]
        with self._fd_lock:
            self._is_closed = True
            for sock in (self.upstream, self.client):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.close()
        if self.is_open:
            self.stats.close()

    # Login -------------------------------------------------------------------------------

    def _send(self, payload: bytes) -> None:
        self.seq = (self.seq + 1) & 0xFF
        self.client.sendall(packets.encode_packet(self.seq, payload))

    def _send_error(self, code: int, sqlstate: str, message: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.client.settimeout(1.0)
            self._send(packets.err_packet(code, sqlstate, message))

    def _refuse(
        self, reason: str, user: str, *, has_password: bool = True, detail: str | None = None
    ) -> None:
        # Counted before the error goes out: a client may read the statistics as soon as it
        # has the error.
        self.stats.reject(reason, detail)
        logger.info(
            "connection from %s refused (%s%s)", self.peer, reason, f": {detail}" if detail else ""
        )
        self._send_error(
            *limits_module.access_denied(user, self.peer_host, has_password=has_password)
        )
        raise _Refused

    def _recv_exact(self, size: int, deadline: float) -> bytes:
        # Never more than asked: right after the SSLRequest the TLS handshake follows in the
        # same stream, and its bytes must stay in the socket for the TLS layer.
        chunks = bytearray()
        while len(chunks) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("login took too long")
            self.client.settimeout(remaining)
            data = self.client.recv(size - len(chunks))
            if not data:
                raise EOFError("client closed the connection")
            chunks += data
        return bytes(chunks)

    def _read(self, deadline: float) -> bytes:
        """One login packet from the client, in sequence."""
        header = self._recv_exact(4, deadline)
        size = int.from_bytes(header[:3], "little")
        if size > _LOGIN_PACKET_MAX:
            raise ProtocolError(f"login packet of {size} bytes exceeds {_LOGIN_PACKET_MAX}")
        if header[3] != (self.seq + 1) & 0xFF:
            raise ProtocolError("packet out of order")
        self.seq = header[3]
        return self._recv_exact(size, deadline)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limits.login_timeout
        # MariaDB's connection first: its thread id goes into our greeting, so that the
        # driver's thread id, CONNECTION_ID() and KILL agree, as on a real server.
        upstream_greeting = self._open_upstream(deadline)
        greeting = packets.Greeting(
            server_version=upstream_greeting.server_version,
            connection_id=upstream_greeting.connection_id,
            scramble=_scramble(),
            capabilities=self.server.capabilities,
            charset=upstream_greeting.charset,
            status=_STATUS_AUTOCOMMIT,
            auth_plugin=packets.NATIVE_PASSWORD,
        )
        self.client.sendall(packets.encode_packet(0, greeting.encode()))
        response = packets.parse_handshake_response(self._read(deadline))
        if response.is_ssl_request:
            self.client = self.server.tls_context.wrap_socket(
                self.client, server_side=True, do_handshake_on_connect=False
            )
            self.client.settimeout(max(0.001, deadline - time.monotonic()))
            self.client.do_handshake()
            self.is_tls = True
            response = packets.parse_handshake_response(self._read(deadline))
            if response.is_ssl_request:
                raise ProtocolError("SSLRequest inside TLS")
        if not self.is_tls:
            self._refuse("no_tls", response.user, has_password=bool(response.auth_response))
        if response.capabilities & packets.REQUIRED != packets.REQUIRED:
            raise ProtocolError("the client cannot switch authentication plugins")
        token = self._password(response, deadline)
        if not self.server.admit(token):
            self._refuse("rate", response.user)
        reason = self.server.verifier.check(token, response.user)
        if reason is not None:
            self._refuse("auth", response.user, has_password=bool(token), detail=reason)
        self.server.accepted(token)
        self._login_upstream(upstream_greeting, response, deadline)
        self.stats.add("accepted")
        self._relay()

    def _password(self, response: HandshakeResponse, deadline: float) -> str:
        if response.auth_plugin == packets.CLEAR_PASSWORD:
            return packets.clear_password(response.auth_response)
        self._send(packets.auth_switch_request(packets.CLEAR_PASSWORD))
        return packets.clear_password(self._read(deadline))

    def _open_upstream(self, deadline: float) -> Greeting:
        try:
            self.upstream = upstream.connect(
                self.server.upstream_path, max(0.001, deadline - time.monotonic())
            )
            first = upstream.read_packet(self.upstream, PacketFramer(packets.MAX_PAYLOAD))
        except (OSError, EOFError, ProtocolError) as exc:
            # The client sees its connection end before any greeting, as behind a proxy
            # whose database is down.
            logger.error("cannot reach the upstream server: %s", exc)
            self.stats.reject("upstream")
            raise _Refused from None
        if packets.is_err(first.payload):
            # Refused before any login (1040 too many connections): MariaDB's own words.
            self.stats.reject("upstream")
            with contextlib.suppress(OSError):
                self.client.sendall(packets.encode_packet(0, first.payload))
            raise _Refused
        try:
            return packets.parse_greeting(first.payload)
        except ProtocolError as exc:
            logger.error("unexpected greeting from the upstream server: %s", exc)
            self.stats.reject("upstream")
            raise _Refused from None

    def _login_upstream(
        self, greeting: Greeting, response: HandshakeResponse, deadline: float
    ) -> None:
        assert self.upstream is not None
        try:
            self.upstream.settimeout(max(0.001, deadline - time.monotonic()))
            reply = upstream.login(
                self.upstream,
                greeting,
                user=response.user,
                capabilities=response.capabilities,
                charset=response.charset,
                max_packet=response.max_packet,
                database=response.database,
                attributes=response.attributes,
            )
        except (OSError, EOFError, ProtocolError) as exc:
            logger.error("cannot log in to the upstream server: %s", exc)
            self.stats.reject("upstream")
            raise _Refused from None
        if packets.is_ok(reply.payload):
            # No cap of our own: MariaDB's max_connections refuses the excess (1040).
            self.stats.try_open(sys.maxsize)
            self.is_open = True
            self._send(reply.payload)
            return
        # Refused by MariaDB (unknown user, too many connections...): its own error says it
        # best. Anything else (an auth switch: the user has a password) is an access denial.
        self.stats.reject("upstream")
        if packets.is_err(reply.payload):
            with contextlib.suppress(OSError):
                self._send(reply.payload)
        else:
            self._send_error(*limits_module.access_denied(response.user, self.peer_host))
        raise _Refused

    # Relay -------------------------------------------------------------------------------

    def _relay(self) -> None:
        assert self.upstream is not None
        client, up = self.client, self.upstream
        clock = self.server.clock
        idle_timeout = self.limits.idle_client_timeout
        tracker = packets.CommandTracker()
        to_client = bytearray()
        to_upstream = bytearray()
        client.setblocking(False)
        up.setblocking(False)
        client_fd, up_fd = client.fileno(), up.fileno()
        poller = select.poll()
        masks = {client_fd: _READABLE, up_fd: _READABLE}
        for fd, mask in masks.items():
            poller.register(fd, mask)
        last_activity = clock()
        while True:
            timeout_ms: float | None = None
            if idle_timeout is not None and not tracker.awaits_reply and not to_client:
                remaining = last_activity + idle_timeout - clock()
                if remaining <= 0:
                    self.stats.add("idle_closed")
                    logger.info("connection from %s closed: idle client timeout", self.peer)
                    return
                timeout_ms = remaining * 1000 + 1
            read_client = len(to_upstream) < _HIGH_WATER
            wanted = (
                (client_fd, (_READABLE if read_client else 0) | (_WRITABLE if to_client else 0)),
                (
                    up_fd,
                    (_READABLE if len(to_client) < _HIGH_WATER else 0)
                    | (_WRITABLE if to_upstream else 0),
                ),
            )
            for fd, mask in wanted:
                if mask != masks[fd]:
                    poller.modify(fd, mask)
                    masks[fd] = mask
            # Decrypted bytes already inside the TLS object do not wake poll.
            pending = read_client and client.pending() > 0  # type: ignore[attr-defined]
            events = poller.poll(0 if pending else timeout_ms)
            client_ready, up_ready = pending, False
            for fd, event in events:
                if event & _INPUT_EVENTS:
                    if fd == client_fd:
                        client_ready = True
                    else:
                        up_ready = True
            if client_ready:
                data = _recv(client)
                if data == b"":
                    return
                if data:
                    tracker.from_client(data)
                    to_upstream += data
                    last_activity = clock()
            if up_ready:
                data = _recv(up)
                if data == b"":
                    if not tracker.has_quit:
                        # MariaDB closed it (wait_timeout, KILL): deliver what it said.
                        self.stats.add("upstream_closed")
                        logger.info("connection from %s closed by the upstream", self.peer)
                    self._flush_before_close(to_client)
                    return
                if data:
                    tracker.from_server()
                    to_client += data
                    last_activity = clock()
            for sock, buffer in ((client, to_client), (up, to_upstream)):
                _flush(sock, buffer)

    def _flush_before_close(self, to_client: bytearray) -> None:
        if to_client:
            with contextlib.suppress(OSError):
                self.client.settimeout(1.0)
                self.client.sendall(to_client)


def _recv(sock: socket.socket) -> bytes | None:
    """Bytes read, ``b""`` at end of stream, ``None`` when nothing is there after all."""
    try:
        return sock.recv(_READ_SIZE)
    except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return None
    except (ConnectionResetError, ssl.SSLEOFError):
        return b""


def _flush(sock: socket.socket, buffer: bytearray) -> None:
    while buffer:
        chunk = buffer if len(buffer) <= _SEND_CHUNK else buffer[:_SEND_CHUNK]
        try:
            sent = sock.send(chunk)
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return
        del buffer[:sent]
