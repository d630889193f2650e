"""The DSQL and RDS PostgreSQL engines' front end: a PostgreSQL v3 proxy that checks tokens
and enforces the service's limits.

:class:`~warmdb.emulator.listener.Listener` accepts the clients and runs a session thread for
each; :class:`~warmdb.emulator.session.Session` holds the login deadline and the relay loop.
This module adds PostgreSQL: the startup packets (SSLRequest, GSSENCRequest, CancelRequest),
the cleartext password, the login to the upstream, backend keys for cancel requests, and the
framing of relayed messages. The relay frames every message because it must: the policy
(:mod:`warmdb.emulator.relay`) reads transaction status, modified rows and errors from them,
and may answer in the upstream's place.
"""

from __future__ import annotations

import contextlib
import logging
import random
import secrets
import sys
import time
from typing import NoReturn

from warmdb.emulator import protocol, upstream
from warmdb.emulator.engines import DSQL, Engine
from warmdb.emulator.limits import Limits, TokenBucket
from warmdb.emulator.listener import Front, Listener
from warmdb.emulator.passthrough import PassThrough
from warmdb.emulator.relay import Relay
from warmdb.emulator.session import Refused, Session
from warmdb.emulator.stats import Stats

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket

__all__ = ["Server"]

logger = logging.getLogger(__name__)

_READ_SIZE = 64 * 1024
_PASSWORD_MAX = 64 * 1024


class Server(Listener):
    """Accepts client connections and runs a PostgreSQL session thread for each.

    :param front: the listening socket, the upstream PostgreSQL, TLS, the verifier and the
        clock (for limits).
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
    """

    stats: Stats

    def __init__(
        self,
        front: Front,
        *,
        limits: Limits,
        engine: Engine = DSQL,
        upstream_connections: int | None = None,
        idle_client_timeout: float | None = None,
        occ_conflict_rate: float = 0.0,
        startup_timeout: float = 10.0,
        max_message_size: int = 64 * 1024 * 1024,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(front, stats=Stats(), name="emulator")
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
        self._bucket = TokenBucket(limits.connection_rate, limits.connection_burst, self.clock)
        self._keys: dict[tuple[int, int], tuple[int, int]] = {}

    def new_session(self, sock: socket.socket, peer: object) -> _Session:
        return _Session(self, sock, peer)

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

    def release_backend(self, key: tuple[int, int]) -> None:
        """Forget a client-facing backend key: its session has ended."""
        with self._lock:
            self._keys.pop(key, None)

    def cancel(self, request: protocol.CancelRequest) -> None:
        """Forward a cancel request for one of our backend keys to the upstream."""
        with self._lock:
            target = self._keys.get((request.process_id, request.secret))
        if target is None:
            logger.debug("cancel request for an unknown backend key ignored")
            return
        upstream.send_cancel(self.upstream_path, *target)
        self.stats.add("cancels")


class _Session(Session):
    """One PostgreSQL client connection: startup, password, upstream login, relay."""

    server: Server
    stats: Stats

    def __init__(self, server: Server, sock: socket.socket, peer: object) -> None:
        super().__init__(server, sock, peer)
        self.limits = server.limits
        self.client_key: tuple[int, int] | None = None
        self.relay: Relay | PassThrough | None = None
        self.upstream_key: tuple[int, int] | None = None

    def _release(self) -> None:
        if self.client_key is not None:
            self.server.release_backend(self.client_key)
        self._cancel_in_flight()

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

    def _serve(self) -> None:
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
        self.is_open = True
        self._authenticate(user, deadline)
        relay = self._connect_upstream(startup.params, deadline)
        self.stats.add("accepted")
        self.client_framer = protocol.MessageFramer(self.server.max_message_size)
        lifetime = self.server.engine.refusal(self.limits, "lifetime")
        self._relay(
            relay,
            idle_timeout=self.server.idle_client_timeout,
            lifetime=self.limits.scaled(self.limits.connection_lifetime),
            goodbye=protocol.error_response(lifetime.code, lifetime.message, severity="FATAL"),
        )

    def _refuse(
        self, reason: str, *, user: str = "", detail: str | None = None, send: bool = True
    ) -> NoReturn:
        refusal = self.server.engine.refusal(self.limits, reason)
        self._count_refusal(reason, detail)
        if send:
            with contextlib.suppress(OSError):
                self.client.sendall(
                    protocol.error_response(
                        refusal.code, refusal.message.replace("{user}", user), severity="FATAL"
                    )
                )
        raise Refused

    # Login -------------------------------------------------------------------------------

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
                self._start_tls(deadline)
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

    def _connect_upstream(
        self, client_params: dict[str, str], deadline: float
    ) -> Relay | PassThrough:
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
            up = self._open_upstream(deadline)
        except OSError as exc:
            self._count_upstream_failure("cannot reach the upstream server", exc)
            with contextlib.suppress(OSError):
                self.client.sendall(
                    protocol.error_response(
                        "08006", "upstream server unavailable", severity="FATAL"
                    )
                )
            raise Refused from None
        up.sendall(protocol.startup_message(params))
        self.upstream_framer = protocol.MessageFramer(upstream.UPSTREAM_MAX_MESSAGE)
        out: list[bytes] = []
        while True:
            data = up.recv(_READ_SIZE)
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
                    raise Refused
                if kind == b"Z":
                    self.relay = self._new_relay(protocol.ready_status(message))
                    self.client.sendall(b"".join(out))
                    return self.relay

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

    def _from_client(self, data: bytes) -> None:
        from_client = self.relay.from_client  # type: ignore[union-attr]
        for message in self.client_framer.feed(data):
            from_client(message)

    def _from_upstream(self, data: bytes) -> None:
        from_upstream = self.relay.from_upstream  # type: ignore[union-attr]
        for message in self.upstream_framer.feed(data):
            from_upstream(message)
