"""The emulator's front end: a PostgreSQL v3 proxy that checks tokens and enforces DSQL's limits.

One thread per client connection. Before login it reads blocking, under one deadline
(``startup_timeout``) that bounds the startup packets, the TLS handshake and the password, so
a slow client holds only its own thread. After login the thread relays both directions with
non-blocking sockets and poll: no TLS object is shared between threads, neither peer can
block the other's direction, and the connection lifetime is the poll timeout.

The relay frames every message because it must: the policy (:mod:`warmdb.emulator.relay`)
reads transaction status, modified rows and errors from them, and may answer in the
upstream's place.
"""

from __future__ import annotations

import contextlib
import logging
import random
import secrets
import select
import socket
import ssl
import sys
import threading
import time
from typing import NoReturn

from warmdb.emulator import protocol, tls, upstream
from warmdb.emulator.engines import DSQL, Engine
from warmdb.emulator.limits import Limits, TokenBucket
from warmdb.emulator.passthrough import PassThrough
from warmdb.emulator.relay import Relay
from warmdb.emulator.stats import Stats

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from warmdb.emulator.token_check import TokenVerifier

__all__ = ["Server"]

logger = logging.getLogger(__name__)

# Not larger: sock.recv allocates its whole size on every call, and past glibc's mmap
# threshold (128 KiB) that is an mmap and a munmap per read, which nearly doubles the
# emulator's added round-trip time (benchmarks/emulator.py).
_READ_SIZE = 64 * 1024
# poll() takes milliseconds in a C int: wake at least this often (seconds) with no deadline.
_LONGEST_WAIT = 3600.0
_SEND_CHUNK = 256 * 1024
# Stop reading from one side while this much is waiting to be written to the other.
_HIGH_WATER = 1024 * 1024
_PASSWORD_MAX = 64 * 1024
_READABLE = select.POLLIN
_WRITABLE = select.POLLOUT
# A hang-up or error reads as end of stream or raises: either way the reader must look.
_INPUT_EVENTS = select.POLLIN | select.POLLHUP | select.POLLERR | select.POLLNVAL


class _Refused(Exception):
    """The session ended with a refusal already sent to the client."""


class Server:
    """Accepts client connections and runs a session thread for each.

    :param host: the address to listen on.
    :param port: the TCP port; 0 for a free one (see :attr:`port` once started).
    :param upstream_path: the upstream PostgreSQL's Unix socket.
    :param tls_context: the server-side TLS context.
    :param verifier: checks the IAM tokens.
    :param limits: the limits to enforce.
    :param engine: the emulated service (:data:`warmdb.emulator.engines.DSQL` by default).
    :param upstream_connections: the most client connections the upstream can hold; beyond
        it (or ``limits.max_connections``, whichever is lower) clients get the engine's
        "too many connections" refusal. ``None``: ``limits.max_connections`` alone.
    :param idle_client_timeout: close a client connection idle (no statement in flight, no
        byte either way) this long, as RDS Proxy does; seconds of service time, divided by
        ``limits.time_scale``. ``None`` (default): never.
    :param occ_conflict_rate: the fraction of COMMITs failed with a simulated conflict.
    :param startup_timeout: seconds a client has from connecting to finishing login.
    :param max_message_size: the largest client message accepted, in bytes.
    :param rng: the random source for simulated conflicts; seeded from the OS by default.
    :param clock: a monotonic clock for limits; :func:`time.monotonic` by default.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        upstream_path: str,
        tls_context: ssl.SSLContext,
        verifier: TokenVerifier,
        limits: Limits,
        engine: Engine = DSQL,
        upstream_connections: int | None = None,
        idle_client_timeout: float | None = None,
        occ_conflict_rate: float = 0.0,
        startup_timeout: float = 10.0,
        max_message_size: int = 64 * 1024 * 1024,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.port = port
        self.upstream_path = upstream_path
        self.tls_context = tls_context
        self.verifier = verifier
        self.limits = limits
        self.engine = engine
        self.max_connections = min(limits.max_connections, upstream_connections or sys.maxsize)
        self.idle_client_timeout = (
            None if idle_client_timeout is None else limits.scaled(idle_client_timeout)
        )
        self.occ_conflict_rate = occ_conflict_rate
        self.startup_timeout = startup_timeout
        self.max_message_size = max_message_size
        self.rng = rng or random.Random()  # noqa: S311 - simulated conflicts, not secrets
        self.clock = clock
        self.stats = Stats()
        self._bucket = TokenBucket(limits.connection_rate, limits.connection_burst, clock)
        self._keys: dict[tuple[int, int], tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._sessions: set[_Session] = set()
        self._closing = threading.Event()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind the listening socket and start accepting.

        :raises OSError: the address cannot be bound (in use, not local, not an address).
        """
        _raise_open_files_limit()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._listener = socket.create_server((self.host, self.port), family=family, backlog=4096)
        # A short timeout lets the accept loop notice stop() on every platform.
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self._thread = threading.Thread(
            target=self._accept_loop, name="warmdb-emulator-accept", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, drop every open connection and wait for the session threads."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            sessions = list(self._sessions)
        for session in sessions:
            session.abort()
        deadline = time.monotonic() + timeout
        for session in sessions:
            session.thread.join(max(0.0, deadline - time.monotonic()))

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._closing.is_set():
            try:
                sock, peer = self._listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self._closing.is_set():
                    return
                # Out of file descriptors and the like: back off, keep serving the others.
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
            if session.client_key is not None:
                self._keys.pop(session.client_key, None)

    def admit(self) -> str | None:
        """Take a connection slot; return ``None``, or the refusal reason (``rate``...)."""
        if not self._bucket.try_acquire():
            return "rate"
        if not self.stats.try_open(self.max_connections):
            return "max_connections"
        return None

    def register_backend(self, upstream_key: tuple[int, int]) -> tuple[int, int]:
        """Return a fresh client-facing backend key standing for *upstream_key*."""
        with self._lock:
            while True:
                key = (secrets.randbits(31), secrets.randbits(31))
                if key not in self._keys:
                    self._keys[key] = upstream_key
                    return key

    def cancel(self, request: protocol.CancelRequest) -> None:
        """Forward a cancel request for one of our backend keys to the upstream."""
        with self._lock:
            target = self._keys.get((request.process_id, request.secret))
        if target is None:
            logger.debug("cancel request for an unknown backend key ignored")
            return
        upstream.send_cancel(self.upstream_path, *target)
        self.stats.add("cancels")


def _raise_open_files_limit() -> None:
    """Lift the soft open-files limit to the hard one: each client costs two descriptors."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class _Session:
    """One client connection: login, then relay until either side closes."""

    def __init__(self, server: Server, sock: socket.socket, peer: object) -> None:
        self.server = server
        self.limits = server.limits
        self.stats = server.stats
        self.client: socket.socket = sock
        # As PostgreSQL does: replies are written whole, so never wait for an ACK to send.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.peer = peer
        self._fd = sock.fileno()
        self._fd_lock = threading.Lock()
        self._is_closed = False
        self.upstream: socket.socket | None = None
        self.is_tls = False
        self.server_name: str | None = None
        self.is_admitted = False
        self.client_key: tuple[int, int] | None = None
        self.thread = threading.Thread(target=self.run, name="warmdb-emulator-session", daemon=True)
        self.relay: Relay | PassThrough | None = None
        self.upstream_key: tuple[int, int] | None = None

    # Lifecycle ---------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except _Refused:
            pass
        except (OSError, EOFError, protocol.ProtocolError) as exc:
            if not self.is_admitted or self.upstream is None:
                self.stats.reject("protocol")
            logger.debug("connection from %s dropped: %s", self.peer, exc)
        except Exception:
            logger.exception("connection from %s failed", self.peer)
        finally:
            self._close()

    def abort(self) -> None:
        """Cut the connection from another thread (server stop)."""
        # A duplicate of the descriptor: shutting it down ends the connection whichever
        # socket object (plain or TLS) the session thread holds at the moment. Under the
        # lock, so the descriptor cannot have been closed and its number reused.
        with self._fd_lock:
            if self._is_closed:
                return
            with contextlib.suppress(OSError), socket.socket(fileno=socket.dup(self._fd)) as dup:
                dup.shutdown(socket.SHUT_RDWR)

    def _close(self) -> None:
        self.server.forget(self)
        self._cancel_in_flight()
        if self.is_tls:
            # Send TLS close_notify without waiting for the peer's: libpq (OpenSSL 3) reports
            # a bare EOF as an error, e.g. after an encrypted cancel request.
            with contextlib.suppress(OSError, ValueError):
                self.client.setblocking(False)
                self.client.unwrap()  # type: ignore[attr-defined]
        with self._fd_lock:
            self._is_closed = True
            for sock in (self.upstream, self.client):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.close()
        if self.is_admitted:
            self.stats.close()

    def _cancel_in_flight(self) -> None:
        """Stop the upstream statement still running for this client, if any.

        Closing the upstream socket alone does not: PostgreSQL notices a vanished client only
        when it next reads or writes, so a long statement would keep running and holding its
        locks. Cancelled, the backend then reads the end of the stream and exits, rolling
        back and releasing every lock.
        """
        if self.upstream_key is None or self.relay is None or not self.relay.cycles:
            return
        try:
            upstream.send_cancel(self.server.upstream_path, *self.upstream_key, timeout=2.0)
        except OSError as exc:
            logger.warning("could not cancel the upstream statement of a closed client: %s", exc)

    def _run(self) -> None:
        deadline = time.monotonic() + self.server.startup_timeout
        startup = self._startup(deadline)
        if startup is None:
            return
        user = startup.params["user"]
        if not self.is_tls:
            self._refuse("no_tls", user=user)
        if self.server.engine.require_sni and self.server_name is None:
            self._refuse("no_sni", user=user)
        reason = self.server.admit()
        if reason is not None:
            self._refuse(reason, user=user)
        self.is_admitted = True
        self._authenticate(user, deadline)
        self._connect_upstream(startup.params, deadline)
        self.stats.add("accepted")
        self._relay()

    def _refuse(
        self, reason: str, *, user: str = "", detail: str | None = None, send: bool = True
    ) -> NoReturn:
        refusal = self.server.engine.refusal(self.limits, reason)
        message = refusal.message.replace("{user}", user)
        self.stats.reject(reason, detail)
        logger.info(
            "connection from %s refused (%s%s)",
            self.peer,
            reason,
            f": {detail}" if detail else "",
        )
        if send:
            with contextlib.suppress(OSError):
                self.client.sendall(
                    protocol.error_response(refusal.code, message, severity="FATAL")
                )
        raise _Refused

    # Login -------------------------------------------------------------------------------

    def _recv(self, size: int, deadline: float) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("login took too long")
        self.client.settimeout(remaining)
        data = self.client.recv(size)
        if not data:
            raise EOFError("client closed the connection")
        return data

    def _startup(self, deadline: float) -> protocol.StartupMessage | None:
        while True:
            reader = protocol.StartupReader()
            packet = None
            while packet is None:
                packet = reader.feed(self._recv(reader.needed(), deadline))
            if isinstance(packet, protocol.SSLRequest):
                if self.is_tls:
                    raise protocol.ProtocolError("SSLRequest inside TLS")
                self.client.sendall(b"S")
                self.client = self.server.tls_context.wrap_socket(
                    self.client, server_side=True, do_handshake_on_connect=False
                )
                self.client.settimeout(max(0.001, deadline - time.monotonic()))
                tls.take_server_name()
                self.client.do_handshake()
                self.server_name = tls.take_server_name()
                self.is_tls = True
            elif isinstance(packet, protocol.GSSEncRequest):
                if self.is_tls:
                    raise protocol.ProtocolError("GSSENCRequest inside TLS")
                self.client.sendall(b"N")
            elif isinstance(packet, protocol.CancelRequest):
                self.server.cancel(packet)
                return None
            else:
                return packet

    def _authenticate(self, user: str, deadline: float) -> None:
        self.client.sendall(protocol.authentication_cleartext())
        framer = protocol.MessageFramer(_PASSWORD_MAX)
        messages: list[bytes] = []
        while not messages:
            try:
                data = self._recv(_PASSWORD_MAX, deadline)
            except (OSError, EOFError) as exc:
                # libpq with no password hangs up here ("fe_sendauth: no password supplied"):
                # a login that failed authentication, not a malformed one.
                self._refuse(
                    "auth", user=user, detail="no_password", send=not isinstance(exc, EOFError)
                )
            messages = framer.feed(data)
        if len(messages) > 1 or framer.buffered:
            raise protocol.ProtocolError("messages after the password, before the answer")
        reason = self.server.verifier.check(protocol.password_from_message(messages[0]), user)
        if reason is not None:
            self._refuse("auth", user=user, detail=reason)

    def _connect_upstream(self, client_params: dict[str, str], deadline: float) -> None:
        params = {
            k: v for k, v in client_params.items() if k not in ("user", "database", "replication")
        }
        params = {
            "user": client_params["user"],
            # DSQL has one database, "postgres"; libpq would default to the user name.
            "database": client_params.get("database") or "postgres",
            **params,
        }
        if self.server.engine.dsql_transactions:
            # DSQL runs every transaction at REPEATABLE READ; so must the upstream, for
            # concurrent conflicting writes to fail as they would there.
            params["default_transaction_isolation"] = "repeatable read"
        try:
            self.upstream = upstream.connect(
                self.server.upstream_path, max(0.001, deadline - time.monotonic())
            )
        except OSError as exc:
            logger.error("cannot reach the upstream server: %s", exc)
            self.stats.reject("upstream")
            with contextlib.suppress(OSError):
                self.client.sendall(
                    protocol.error_response(
                        "08006", "upstream server unavailable", severity="FATAL"
                    )
                )
            raise _Refused from None
        self.upstream.sendall(protocol.startup_message(params))
        self.upstream_framer = protocol.MessageFramer(upstream.UPSTREAM_MAX_MESSAGE)
        out: list[bytes] = []
        while True:
            data = self.upstream.recv(_READ_SIZE)
            if not data:
                raise EOFError("upstream closed the connection during login")
            for message in self.upstream_framer.feed(data):
                kind = message[:1]
                if kind == b"R" and protocol.authentication_code(message) != 0:
                    raise protocol.ProtocolError("the upstream server asked for a password")
                if kind == b"K":
                    self.upstream_key = protocol.parse_backend_key_data(message)
                    self.client_key = self.server.register_backend(self.upstream_key)
                    message = protocol.backend_key_data(*self.client_key)
                if kind == b"E" and protocol.error_fields(message).get("C") == "53300":
                    # The upstream is full: the service's own words, never PostgreSQL's
                    # "sorry, too many clients already" on an endpoint that is not one.
                    self._refuse("max_connections", user=client_params["user"])
                out.append(message)
                if kind == b"E":
                    # E.g. an unknown role: the upstream's own FATAL error says it best.
                    # Counted first, as every refusal: the client may read the statistics
                    # as soon as it has the error.
                    self.stats.reject("upstream")
                    self.client.sendall(b"".join(out))
                    raise _Refused
                if kind == b"Z":
                    self.relay = self._new_relay(protocol.ready_status(message))
                    self.client.sendall(b"".join(out))
                    return

    def _new_relay(self, status: bytes) -> Relay | PassThrough:
        if not self.server.engine.dsql_transactions:
            return PassThrough(stats=self.stats)
        return Relay(
            limits=self.limits,
            stats=self.stats,
            occ_conflict_rate=self.server.occ_conflict_rate,
            rng=self.server.rng,
            clock=self.server.clock,
            status=status,
        )

    # Relay -------------------------------------------------------------------------------

    def _relay(self) -> None:
        assert self.upstream is not None
        assert self.relay is not None
        client, up, relay = self.client, self.upstream, self.relay
        clock = self.server.clock
        lifetime_end = clock() + self.limits.scaled(self.limits.connection_lifetime)
        idle_timeout = self.server.idle_client_timeout
        last_active = clock()
        self.client_framer = protocol.MessageFramer(self.server.max_message_size)
        client.setblocking(False)
        up.setblocking(False)
        client_fd, up_fd = client.fileno(), up.fileno()
        # poll, not a selectors object: this loop runs once or twice per round trip, and
        # poll's few microseconds are most of what it costs.
        poller = select.poll()
        masks = {client_fd: _READABLE, up_fd: _READABLE}
        for fd, mask in masks.items():
            poller.register(fd, mask)
        while True:
            now = clock()
            remaining = lifetime_end - now
            if remaining <= 0:
                self._expire()
                return
            if idle_timeout is not None:
                if relay.cycles or relay.to_client or relay.to_upstream:
                    last_active = now
                idle_left = last_active + idle_timeout - now
                if idle_left <= 0:
                    self._close_idle()
                    return
                remaining = min(remaining, idle_left)
            remaining = min(remaining, _LONGEST_WAIT)
            # Client messages the relay holds back (a statement being judged upstream) count
            # too: a client pipelining meanwhile must not grow them without bound.
            read_client = len(relay.to_upstream) + relay.held_bytes < _HIGH_WATER
            wanted = (
                (
                    client_fd,
                    (_READABLE if read_client else 0) | (_WRITABLE if relay.to_client else 0),
                ),
                (
                    up_fd,
                    (_READABLE if len(relay.to_client) < _HIGH_WATER else 0)
                    | (_WRITABLE if relay.to_upstream else 0),
                ),
            )
            for fd, mask in wanted:
                if mask != masks[fd]:
                    poller.modify(fd, mask)
                    masks[fd] = mask
            # Decrypted bytes already inside the TLS object do not wake poll.
            pending = read_client and client.pending() > 0  # type: ignore[attr-defined]
            events = poller.poll(0 if pending else remaining * 1000 + 1)
            client_ready = pending
            up_ready = False
            for fd, event in events:
                if event & _INPUT_EVENTS:
                    if fd == client_fd:
                        client_ready = True
                    else:
                        up_ready = True
            if client_ready:
                last_active = clock()
                if not self._from_client():
                    return
            if up_ready and not self._from_upstream():
                self._flush_before_close()
                return
            self._flush()

    def _flush(self) -> None:
        assert self.upstream is not None
        assert self.relay is not None
        relay = self.relay
        for sock, buffer in ((self.client, relay.to_client), (self.upstream, relay.to_upstream)):
            while buffer:
                chunk = buffer if len(buffer) <= _SEND_CHUNK else buffer[:_SEND_CHUNK]
                try:
                    sent = sock.send(chunk)
                except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                    break
                del buffer[:sent]

    def _flush_before_close(self) -> None:
        # The upstream ended the session (often after a FATAL error): deliver what it said.
        assert self.relay is not None
        if self.relay.to_client:
            with contextlib.suppress(OSError):
                self.client.settimeout(1.0)
                self.client.sendall(self.relay.to_client)

    def _close_idle(self) -> None:
        # RDS Proxy closes an idle client connection without a word: the client learns at
        # its next statement ("server closed the connection unexpectedly", MySQL's 2013).
        self.stats.add("idle_closed")
        logger.info("connection from %s closed: idle client timeout", self.peer)

    def _expire(self) -> None:
        refusal = self.server.engine.refusal(self.limits, "lifetime")
        self.stats.add("expired")
        logger.info("connection from %s closed: lifetime reached", self.peer)
        assert self.relay is not None
        self.relay.to_client += protocol.error_response(
            refusal.code, refusal.message, severity="FATAL"
        )
        self._flush_before_close()

    def _from_client(self) -> bool:
        try:
            data = self.client.recv(_READ_SIZE)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return True
        if not data:
            return False
        from_client = self.relay.from_client  # type: ignore[union-attr]
        for message in self.client_framer.feed(data):
            from_client(message)
        return True

    def _from_upstream(self) -> bool:
        assert self.upstream is not None
        try:
            data = self.upstream.recv(_READ_SIZE)
        except BlockingIOError:
            return True
        if not data:
            return False
        from_upstream = self.relay.from_upstream  # type: ignore[union-attr]
        for message in self.upstream_framer.feed(data):
            from_upstream(message)
        return True
