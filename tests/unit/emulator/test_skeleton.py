"""The skeleton both emulators share: listener, session threads, counters (no database)."""

from __future__ import annotations

import socket
import time

import pytest

from warmdb.emulator.listener import Front, Listener, bind
from warmdb.emulator.mysql.limits import MySQLStats
from warmdb.emulator.protocol import ProtocolError
from warmdb.emulator.session import Refused, Session
from warmdb.emulator.stats import Stats


class _OneByte(Session):
    """A toy protocol: b"x" is malformed, b"r" is refused, anything else waits for EOF."""

    def _serve(self) -> None:
        first = self._recv(1, time.monotonic() + 5)
        if first == b"x":
            raise ProtocolError("malformed")
        if first == b"r":
            self._count_refusal("auth", "expired")
            raise Refused
        self.is_open = self.stats.try_open(10)
        self.client.settimeout(None)
        while self.client.recv(1):
            pass


class _Toy(Listener):
    def new_session(self, sock: socket.socket, peer: object) -> Session:
        return _OneByte(self, sock, peer)


@pytest.fixture
def toy():
    front = Front(
        listener=bind("127.0.0.1", 0),
        upstream_path="/nonexistent",
        tls_context=None,  # type: ignore[arg-type]
        verifier=None,  # type: ignore[arg-type]
    )
    server = _Toy(front, stats=Stats(), name="toy")
    server.start()
    yield server
    server.stop()


def _wait(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_malformed_packet_closes_one_connection_not_the_server(toy):
    with socket.create_connection(("127.0.0.1", toy.port)) as bad:
        bad.sendall(b"x")
        assert bad.recv(1) == b""
    with socket.create_connection(("127.0.0.1", toy.port)) as refused:
        refused.sendall(b"r")
        assert refused.recv(1) == b""
    with socket.create_connection(("127.0.0.1", toy.port)) as good:
        good.sendall(b"g")
        _wait(lambda: toy.stats.snapshot().current == 1)
    _wait(lambda: toy.stats.snapshot().current == 0)
    snapshot = toy.stats.snapshot()
    assert snapshot.rejected == {"protocol": 1, "auth": 1}
    assert snapshot.auth_failures == {"expired": 1}
    assert snapshot.peak == 1


def test_stop_cuts_open_connections(toy):
    client = socket.create_connection(("127.0.0.1", toy.port))
    try:
        client.sendall(b"g")
        _wait(lambda: toy.stats.snapshot().current == 1)
        toy.stop()
        client.settimeout(5)
        assert client.recv(1) == b""
        assert toy.stats.snapshot().current == 0
    finally:
        client.close()


def test_bind_listens_on_the_address_given():
    with bind("127.0.0.1", 0) as sock:
        assert sock.getsockname()[0] == "127.0.0.1"


def test_snapshots_are_filled_by_field_name():
    stats = MySQLStats()
    stats.add("reused_tokens", 2)
    stats.add("upstream_closed")
    stats.reject("rate")
    assert stats.try_open(1)
    snapshot = stats.snapshot()
    assert (snapshot.reused_tokens, snapshot.upstream_closed) == (2, 1)
    assert (snapshot.current, snapshot.peak, snapshot.rejected) == (1, 1, {"rate": 1})
    assert Stats().snapshot().limit_violations == {}
