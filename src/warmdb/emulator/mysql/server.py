"""The MySQL emulator's front end: TLS, the IAM login, then a relay to MariaDB.

The listener, the session threads, the login deadline (``login_timeout``, covering the TLS
handshake and every login packet) and the relay loop are the emulators' shared skeleton
(:mod:`warmdb.emulator.listener`, :mod:`warmdb.emulator.session`); a slow or malformed client
holds and loses only its own connection. This module adds MySQL's login, which goes:

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

After login the bytes are relayed unchanged in both directions;
:class:`~warmdb.emulator.mysql.packets.CommandTracker` only watches whose turn it is, for the
idle client timeout.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import threading
import time
from typing import NoReturn

from warmdb.emulator.limits import TokenBucket
from warmdb.emulator.listener import Front, Listener
from warmdb.emulator.mysql import limits as limits_module
from warmdb.emulator.mysql import packets, upstream
from warmdb.emulator.mysql.limits import MySQLLimits, MySQLStats
from warmdb.emulator.mysql.packets import Greeting, HandshakeResponse, PacketFramer, ProtocolError
from warmdb.emulator.session import Refused, Session

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from collections.abc import Callable

__all__ = ["MySQLServer"]

logger = logging.getLogger(__name__)

# Login packets: user, database, connect attributes and a token fit many times over.
_LOGIN_PACKET_MAX = 64 * 1024
# Printable scramble bytes, as MySQL's own generator: some clients stop at a NUL.
_SCRAMBLE_ALPHABET = bytes(range(33, 127))
# SERVER_STATUS_AUTOCOMMIT: what a fresh session reports.
_STATUS_AUTOCOMMIT = 0x0002


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


class MySQLServer(Listener):
    """Accepts client connections and runs a MySQL session thread for each.

    :param front: the listening socket, MariaDB's Unix socket, TLS, the verifier
        (``kind="rds"``) and the clock (for the connect ceiling and timeouts).
    :param upstream_greeting: MariaDB's greeting (version, capabilities, charset).
    :param limits: the options.
    """

    stats: MySQLStats

    def __init__(
        self,
        front: Front,
        *,
        upstream_greeting: Greeting,
        limits: MySQLLimits,
    ) -> None:
        super().__init__(front, stats=MySQLStats(), name="mysql")
        self.upstream_greeting = upstream_greeting
        self.limits = limits
        rate = limits.iam_connect_rate
        self._bucket = TokenBucket(rate, max(1, int(rate)), self.clock)
        self._reused = _ReusedTokens(limits.reuse_window, self.clock)
        # What clients may use: what the emulator relays and MariaDB has, plus TLS.
        self.capabilities = (
            upstream_greeting.capabilities & packets.RELAYABLE
        ) | packets.CLIENT_SSL

    def new_session(self, sock: socket.socket, peer: object) -> _Session:
        return _Session(self, sock, peer)

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


class _Pipe:
    """The relay state of a MySQL connection: bytes pass unchanged, the tracker watches turns."""

    held_bytes = 0

    def __init__(self) -> None:
        self.to_client = bytearray()
        self.to_upstream = bytearray()
        self.tracker = packets.CommandTracker()

    @property
    def cycles(self) -> int:
        """1 while the server owes the client a reply, else 0."""
        return 1 if self.tracker.awaits_reply else 0


class _Session(Session):
    """One MySQL client connection: greeting, TLS, token check, MariaDB login, relay."""

    server: MySQLServer

    def __init__(self, server: MySQLServer, sock: socket.socket, peer: object) -> None:
        super().__init__(server, sock, peer)
        self.limits = server.limits
        self.peer_host = str(peer[0]) if isinstance(peer, tuple) else "localhost"
        self.seq = 0
        self.pipe = _Pipe()

    def _login_failed(self, exc: Exception) -> None:
        if isinstance(exc, ProtocolError):
            self._send_error(*limits_module.BAD_HANDSHAKE)

    def _upstream_closed(self) -> None:
        if not self.pipe.tracker.has_quit:
            # MariaDB closed it (wait_timeout, KILL): deliver what it said.
            self.stats.add("upstream_closed")
            logger.info("connection from %s closed by the upstream", self.peer)

    def _from_client(self, data: bytes) -> None:
        self.pipe.tracker.from_client(data)
        self.pipe.to_upstream += data

    def _from_upstream(self, data: bytes) -> None:
        self.pipe.tracker.from_server()
        self.pipe.to_client += data

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
    ) -> NoReturn:
        self._count_refusal(reason, detail)
        self._send_error(
            *limits_module.access_denied(user, self.peer_host, has_password=has_password)
        )
        raise Refused

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

    def _serve(self) -> None:
        deadline = time.monotonic() + self.limits.login_timeout
        # MariaDB's connection first: its thread id goes into our greeting, so that the
        # driver's thread id, CONNECTION_ID() and KILL agree, as on a real server.
        upstream_greeting = self._greet_upstream(deadline)
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
            self._start_tls(deadline)
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
        self._relay(self.pipe, idle_timeout=self.limits.idle_client_timeout)

    def _password(self, response: HandshakeResponse, deadline: float) -> str:
        if response.auth_plugin == packets.CLEAR_PASSWORD:
            return packets.clear_password(response.auth_response)
        self._send(packets.auth_switch_request(packets.CLEAR_PASSWORD))
        return packets.clear_password(self._read(deadline))

    def _greet_upstream(self, deadline: float) -> Greeting:
        try:
            first = upstream.read_packet(
                self._open_upstream(deadline), PacketFramer(packets.MAX_PAYLOAD)
            )
        except (OSError, EOFError, ProtocolError) as exc:
            # The client sees its connection end before any greeting, as behind a proxy
            # whose database is down.
            self._count_upstream_failure("cannot reach the upstream server", exc)
            raise Refused from None
        if packets.is_err(first.payload):
            # Refused before any login (1040 too many connections): MariaDB's own words.
            self.stats.reject("upstream")
            with contextlib.suppress(OSError):
                self.client.sendall(packets.encode_packet(0, first.payload))
            raise Refused
        try:
            return packets.parse_greeting(first.payload)
        except ProtocolError as exc:
            self._count_upstream_failure("unexpected greeting from the upstream server", exc)
            raise Refused from None

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
            self._count_upstream_failure("cannot log in to the upstream server", exc)
            raise Refused from None
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
        raise Refused
