"""The emulators' front door: a listening socket, an accept loop, one session thread per client.

:class:`Listener` is what the PostgreSQL and MySQL fronts (:class:`warmdb.emulator.server.Server`,
:class:`warmdb.emulator.mysql.server.MySQLServer`) share: it accepts connections, hands each
to a protocol-specific :class:`~warmdb.emulator.session.Session` on its own thread, and on
stop cuts every open connection and waits for the threads. It holds what every session needs
from its server: the upstream's socket path, the TLS context, the token verifier, the
statistics and the clock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import threading
import time
from typing import Protocol

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable
    from typing import Any

    from warmdb.emulator.stats import Counters
    from warmdb.emulator.token_check import TokenVerifier

__all__ = ["Front", "Listener", "bind"]

logger = logging.getLogger(__name__)


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket listening on *host* (IPv4 or IPv6) and *port* (0: a free one).

    :raises OSError: the address cannot be bound (in use, not local, not an address).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=4096)


@dataclasses.dataclass(frozen=True)
class Front:
    """What every engine's front end is built on.

    :ivar listener: a bound, listening TCP socket, owned by the front end (the caller binds
        it first: RDS tokens name the port, so the verifier needs it before the first client).
    :ivar upstream_path: the upstream server's Unix socket.
    :ivar tls_context: the server-side TLS context.
    :ivar verifier: checks the IAM tokens.
    :ivar clock: a monotonic clock for limits and timeouts.
    """

    listener: socket.socket
    upstream_path: str
    tls_context: ssl.SSLContext
    verifier: TokenVerifier
    clock: Callable[[], float] = time.monotonic


class Served(Protocol):
    """What a listener needs of the session serving one connection
    (:class:`warmdb.emulator.session.Session` is one; this module does not import it, as a
    session knows its listener and not the other way round)."""

    thread: threading.Thread

    def abort(self) -> None:
        """Drop the connection at once (the listener is stopping)."""


class Listener:
    """Accepts client connections and runs a session thread for each.

    Subclasses say which session a connection gets (:meth:`new_session`).

    :param front: the listening socket, the upstream, TLS, the verifier and the clock.
    :param stats: the counters every session updates.
    :param name: names the accept thread (``warmdb-NAME-accept``) and the session threads.
    """

    def __init__(self, front: Front, *, stats: Counters[Any], name: str) -> None:
        self.upstream_path = front.upstream_path
        self.tls_context = front.tls_context
        self.verifier = front.verifier
        self.clock = front.clock
        self.stats = stats
        self.name = name
        self.port = int(front.listener.getsockname()[1])
        self._listener = front.listener
        self._lock = threading.Lock()
        self._sessions: set[Served] = set()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    def new_session(self, sock: socket.socket, peer: object) -> Served:
        """The session that serves the client connected on *sock* (not started)."""
        raise NotImplementedError

    def start(self) -> None:
        """Start accepting."""
        _raise_open_files_limit()
        # A short timeout lets the accept loop notice stop() on every platform.
        self._listener.settimeout(0.2)
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"warmdb-{self.name}-accept", daemon=True
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

    def forget(self, session: Served) -> None:
        """Called by a session as it ends."""
        with self._lock:
            self._sessions.discard(session)

    def _accept_loop(self) -> None:
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
            session = self.new_session(sock, peer)
            with self._lock:
                self._sessions.add(session)
            session.thread.start()


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
