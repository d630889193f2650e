"""One bad client loses its own connection and nothing else; the server keeps serving."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time

import psycopg
import pytest

from warmdb.emulator import Limits, protocol

from .conftest import emulator, login, open_socket, read_until, wait_for


@pytest.fixture(scope="module")
def dsql():
    with emulator(startup_timeout=1.0) as started:
        yield started


@pytest.fixture
def healthy(dsql):
    """A logged-in connection kept open across the bad client's attempt."""
    conn = psycopg.connect(**dsql.connection_params(), autocommit=True)
    yield conn
    # The bystander still works, and new clients still get in.
    assert conn.execute("select 1").fetchone() == (1,)
    conn.close()
    assert login(dsql, dsql.token()) == {}


def closed_by_server(sock: socket.socket, timeout: float = 3.0) -> bool:
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


@pytest.mark.parametrize(
    "payload",
    [
        b"\x00\x00\x00\x05x",  # shorter than any startup packet
        struct.pack("!i", 1_000_000),  # oversized startup packet
        struct.pack("!ii", 8, 1234),  # unknown request code
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        struct.pack("!ii", 12, 196608) + b"a\x00b\x00",  # no user
    ],
)
def test_malformed_startup(dsql, healthy, payload):
    with socket.create_connection(("127.0.0.1", dsql.port)) as sock:
        sock.sendall(payload)
        assert closed_by_server(sock)


def test_garbage_after_tls(dsql, healthy):
    with open_socket(dsql) as sock:
        sock.sendall(b"\xff" * 64)
        assert closed_by_server(sock)


def test_oversized_message_after_login(dsql, healthy):
    with open_socket(dsql) as sock:
        sock.sendall(protocol.startup_message({"user": "admin", "database": "postgres"}))
        read_until(sock, b"R")
        sock.sendall(protocol.encode(b"p", dsql.token().encode() + b"\x00"))
        read_until(sock, b"Z")
        sock.sendall(b"Q" + struct.pack("!i", 1 << 30))
        assert closed_by_server(sock)


def test_oversized_password_message(dsql, healthy):
    with open_socket(dsql) as sock:
        sock.sendall(protocol.startup_message({"user": "admin"}))
        read_until(sock, b"R")
        sock.sendall(b"p" + struct.pack("!i", 10_000_000))
        assert closed_by_server(sock)


@pytest.mark.parametrize("stage", ["connect", "ssl_request", "handshake", "startup", "password"])
def test_early_close(dsql, healthy, stage):
    sock = socket.create_connection(("127.0.0.1", dsql.port))
    if stage != "connect":
        sock.sendall(bytes.fromhex("0000000804d2162f"))
        sock.recv(1)
    if stage in ("handshake", "startup", "password"):
        sock = open_socket(dsql)  # a second one that completes the handshake
    if stage in ("startup", "password"):
        sock.sendall(protocol.startup_message({"user": "admin"}))
    if stage == "password":
        read_until(sock, b"R")
    sock.close()


def test_slow_loris_is_cut_without_blocking_others(dsql, healthy):
    before = dsql.stats.rejected.get("protocol", 0)
    with socket.create_connection(("127.0.0.1", dsql.port)) as slow:
        slow.sendall(b"\x00\x00")  # half a length word, then nothing
        # Others are served while the slow client dawdles.
        assert login(dsql, dsql.token()) == {}
        started = time.monotonic()
        assert closed_by_server(slow)
        assert time.monotonic() - started < 3
    assert dsql.stats.rejected["protocol"] >= before + 1


def test_many_bad_clients_at_once(dsql, healthy):
    def bad(i: int) -> None:
        with socket.create_connection(("127.0.0.1", dsql.port)) as sock:
            sock.sendall(struct.pack("!i", i * 7919) + b"\x01" * (i % 13))

    threads = [threading.Thread(target=bad, args=(i,)) for i in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


# The lifetime cut ends the upstream work too -----------------------------------------------


def test_lifetime_cut_stops_the_statement_and_releases_its_locks():
    # 60 s of DSQL time at scale 30: the cut comes two real seconds after login.
    limits = Limits(connection_lifetime=60, time_scale=30, token_time_scale=1)
    with emulator(limits=limits) as dsql:
        direct = psycopg.connect(**dsql.upstream.libpq_params(), autocommit=True)
        direct.execute("create table held (id int primary key, n int)")
        direct.execute("insert into held values (1, 0)")
        cut = psycopg.connect(**dsql.connection_params())
        pid = cut.execute("select pg_backend_pid()").fetchone()[0]
        cut.execute("update held set n = 1 where id = 1")  # a row lock, held to the end
        with pytest.raises(psycopg.OperationalError, match="connection duration limit"):
            cut.execute("select pg_sleep(60)")

        def backend_gone() -> bool:
            row = direct.execute("select count(*) from pg_stat_activity where pid = %s", [pid])
            return row.fetchone()[0] == 0

        wait_for(backend_gone, timeout=5)
        # The row lock went with it: an update that would wait for it goes through at once.
        direct.execute("set lock_timeout = '1s'")
        direct.execute("update held set n = 2 where id = 1")
        assert direct.execute("select n from held").fetchone() == (2,)
        direct.close()


def test_client_vanishing_mid_statement_stops_it(dsql):
    direct = psycopg.connect(**dsql.upstream.libpq_params(), autocommit=True)
    conn = psycopg.connect(**dsql.connection_params(), autocommit=True)
    pid = conn.execute("select pg_backend_pid()").fetchone()[0]
    # Start a long statement, then drop the socket without a word.
    conn.pgconn.send_query(b"select pg_sleep(60)")
    wait_for(
        lambda: (
            direct.execute(
                "select count(*) from pg_stat_activity where pid = %s and state = 'active'", [pid]
            ).fetchone()[0]
            == 1
        )
    )
    socket.socket(fileno=os.dup(conn.pgconn.socket)).shutdown(socket.SHUT_RDWR)
    wait_for(
        lambda: (
            direct.execute(
                "select count(*) from pg_stat_activity where pid = %s", [pid]
            ).fetchone()[0]
            == 0
        ),
        timeout=5,
    )
    conn.close()
    direct.close()


# One large message -------------------------------------------------------------------------


def test_a_32_mib_query_passes_and_others_keep_being_served(dsql, healthy):
    literal = "x" * (32 * 1024 * 1024)
    result: list[object] = []

    def big() -> None:
        with psycopg.connect(**dsql.connection_params(), autocommit=True) as conn:
            result.append(conn.execute(f"select length('{literal}')").fetchone())

    thread = threading.Thread(target=big)
    thread.start()
    served = 0
    while thread.is_alive():
        healthy.execute("select 1")
        served += 1
    thread.join()
    assert result == [(len(literal),)]
    assert served > 0
