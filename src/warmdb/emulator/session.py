"""One client connection of an emulator, on its own thread: login under a deadline, then relay.

:class:`Session` is the part the PostgreSQL and MySQL sessions share; they add the protocol
(the login exchange, and how relayed bytes are read). The shape:

- Before login the thread reads blocking, under one deadline that bounds the login packets,
  the TLS handshake and the password, so a slow client holds only its own thread. A
  malformed packet, a timeout or a hang-up ends that one connection (counted as a
  ``protocol`` refusal), never the server.
- After login :meth:`Session._relay` moves bytes both ways with non-blocking sockets and
  poll: no TLS object is shared between threads, neither peer can block the other's
  direction, and the idle timeout and the connection lifetime are the poll timeout. What
  the protocol makes of the bytes, and what it sends in the upstream's place, is in the
  *conduit* it passes (:class:`Conduit`) and its :meth:`Session._from_client` and
  :meth:`Session._from_upstream`.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import threading
import time
from typing import Protocol

from warmdb.emulator import tls, unix
from warmdb.emulator.protocol import ProtocolError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from warmdb.emulator.listener import Listener

__all__ = ["Conduit", "Refused", "Session"]

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
_READABLE = select.POLLIN
_WRITABLE = select.POLLOUT
# A hang-up or error reads as end of stream or raises: either way the reader must look.
_INPUT_EVENTS = select.POLLIN | select.POLLHUP | select.POLLERR | select.POLLNVAL


class Refused(Exception):
    """The session ended with a refusal already sent to the client (and counted)."""


class Conduit(Protocol):
    """What the relay loop reads of a protocol's relay state.

    :ivar to_client: bytes waiting to be sent to the client.
    :ivar to_upstream: bytes waiting to be sent to the upstream.
    :ivar held_bytes: client bytes held back (not yet in ``to_upstream``); they count
        against the high-water mark too, so a pipelining client cannot grow them unbounded.
    :ivar cycles: the replies the upstream still owes (a count or a queue): while it is
        true the client is not idle.
    """

    @property
    def to_client(self) -> bytearray: ...
    @property
    def to_upstream(self) -> bytearray: ...
    @property
    def held_bytes(self) -> int: ...
    @property
    def cycles(self) -> object: ...


class Session:
    """One client connection: :meth:`_serve` (login, then :meth:`_relay`) until either side
    closes. Subclasses implement :meth:`_serve`, :meth:`_from_client` and
    :meth:`_from_upstream`.

    :ivar is_open: the connection counts in ``stats.current`` (counted when the protocol
        admits it; uncounted at close).
    """

    def __init__(self, server: Listener, sock: socket.socket, peer: object) -> None:
        self.server = server
        self.stats = server.stats
        self.client: socket.socket = sock
        # As the real servers do: replies are written whole, so never wait for an ACK to send.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.peer = peer
        self._fd = sock.fileno()
        self._fd_lock = threading.Lock()
        self._is_closed = False
        self.upstream: socket.socket | None = None
        self.is_tls = False
        self.server_name: str | None = None
        self.is_open = False
        self.thread = threading.Thread(
            target=self.run, name=f"warmdb-{server.name}-session", daemon=True
        )

    # What a protocol adds ------------------------------------------------------------------

    def _serve(self) -> None:
        """Log the client in, then relay; raise :class:`Refused` after a refusal."""
        raise NotImplementedError

    def _from_client(self, data: bytes) -> None:
        """Bytes the client sent, after login."""
        raise NotImplementedError

    def _from_upstream(self, data: bytes) -> None:
        """Bytes the upstream sent, after login."""
        raise NotImplementedError

    def _login_failed(self, exc: Exception) -> None:
        """The login broke off (*exc*: a malformed packet, a timeout, a hang-up): tell the
        client, if the protocol has words for it. Nothing by default."""

    def _upstream_closed(self) -> None:
        """The upstream ended the connection after login. Nothing by default."""

    def _release(self) -> None:
        """Release what the protocol holds for this connection, as it closes."""

    # Lifecycle -----------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._serve()
        except Refused:
            pass
        except (OSError, EOFError, ProtocolError) as exc:
            if not self.is_open or self.upstream is None:
                self.stats.reject("protocol")
                self._login_failed(exc)
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
        self._release()
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
        if self.is_open:
            self.stats.close()

    # Login ---------------------------------------------------------------------------------

    def _recv(self, size: int, deadline: float) -> bytes:
        """Up to *size* bytes from the client, before *deadline*."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("login took too long")
        self.client.settimeout(remaining)
        data = self.client.recv(size)
        if not data:
            raise EOFError("client closed the connection")
        return data

    def _recv_exact(self, size: int, deadline: float) -> bytes:
        """Exactly *size* bytes from the client, before *deadline*.

        Never more than asked: a TLS handshake may follow in the same stream, and its bytes
        must stay in the socket for the TLS layer.
        """
        chunks = bytearray()
        while len(chunks) < size:
            chunks += self._recv(size - len(chunks), deadline)
        return bytes(chunks)

    def _start_tls(self, deadline: float) -> None:
        """Wrap the client's socket in TLS and complete the handshake before *deadline*."""
        self.client = self.server.tls_context.wrap_socket(
            self.client, server_side=True, do_handshake_on_connect=False
        )
        self.client.settimeout(max(0.001, deadline - time.monotonic()))
        tls.take_server_name()
        self.client.do_handshake()
        self.server_name = tls.take_server_name()
        self.is_tls = True

    def _open_upstream(self, deadline: float) -> socket.socket:
        """Connect to the upstream's Unix socket before *deadline*.

        :raises OSError: the upstream cannot be reached.
        """
        self.upstream = unix.connect(
            self.server.upstream_path, max(0.001, deadline - time.monotonic())
        )
        return self.upstream

    def _count_refusal(self, reason: str, detail: str | None = None) -> None:
        """Count and log a refusal; before the client is told, since it may read the
        statistics as soon as it has the error."""
        self.stats.reject(reason, detail)
        logger.info(
            "connection from %s refused (%s%s)", self.peer, reason, f": {detail}" if detail else ""
        )

    def _count_upstream_failure(self, what: str, exc: BaseException) -> None:
        """Count and log a login the upstream could not complete (*what* went wrong)."""
        logger.error("%s: %s", what, exc)
        self.stats.reject("upstream")

    # Relay ---------------------------------------------------------------------------------

    def _relay(
        self,
        relay: Conduit,
        *,
        idle_timeout: float | None,
        lifetime: float | None = None,
        goodbye: bytes = b"",
    ) -> None:
        """Relay until either side closes, the client idles *idle_timeout* seconds (no reply
        owed, no byte either way), or *lifetime* seconds pass (then *goodbye* is sent)."""
        assert self.upstream is not None
        client, up = self.client, self.upstream
        to_client, to_upstream = relay.to_client, relay.to_upstream
        clock = self.server.clock
        from_client, from_upstream = self._from_client, self._from_upstream
        lifetime_end = None if lifetime is None else clock() + lifetime
        last_active = clock()
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
            wait = _LONGEST_WAIT
            if lifetime_end is not None:
                if lifetime_end <= now:
                    self._expire(to_client, goodbye)
                    return
                wait = min(wait, lifetime_end - now)
            if idle_timeout is not None:
                if relay.cycles or to_client or to_upstream:
                    last_active = now
                idle_left = last_active + idle_timeout - now
                if idle_left <= 0:
                    # As RDS Proxy: closed without a word; the client learns at its next
                    # statement ("server closed the connection unexpectedly", MySQL's 2013).
                    self.stats.add("idle_closed")
                    logger.info("connection from %s closed: idle client timeout", self.peer)
                    return
                wait = min(wait, idle_left)
            read_client = len(to_upstream) + relay.held_bytes < _HIGH_WATER
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
            events = poller.poll(0 if pending else wait * 1000 + 1)
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
                    last_active = clock()
                    from_client(data)
            if up_ready:
                data = _recv(up)
                if data == b"":
                    self._upstream_closed()
                    self._flush_before_close(to_client)
                    return
                if data:
                    last_active = clock()
                    from_upstream(data)
            _flush(client, to_client)
            _flush(up, to_upstream)

    def _expire(self, to_client: bytearray, goodbye: bytes) -> None:
        self.stats.add("expired")
        logger.info("connection from %s closed: lifetime reached", self.peer)
        to_client += goodbye
        self._flush_before_close(to_client)

    def _flush_before_close(self, to_client: bytearray) -> None:
        # The upstream ended the session (often after a FATAL error): deliver what it said.
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
