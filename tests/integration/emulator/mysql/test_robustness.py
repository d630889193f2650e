"""Malformed or hostile clients lose their own connection; the emulator keeps serving."""

from __future__ import annotations

import socket
import struct

import pytest

from tests.integration.emulator.mysql.conftest import RawClient, connect, signed, wait_for
from warmdb.emulator.mysql import packets


def _still_serves(rds) -> None:
    session = connect("pymysql", rds, signed(rds))
    try:
        assert session.query("SELECT 1") == [(1,)]
    finally:
        session.close()


def _bad_handshake(client: RawClient) -> None:
    answer = client.read()
    assert packets.parse_err(answer.payload) == (1043, "08S01", "Bad handshake")
    assert client.is_closed()


@pytest.mark.parametrize(
    "payload",
    [
        b"\x00",  # truncated
        struct.pack("<IIB", 0, 1 << 24, 33) + bytes(23) + b"admin\x00",  # not protocol 4.1
        # protocol 4.1 but the user name is not terminated
        struct.pack("<IIB", packets.CLIENT_PROTOCOL_41, 1 << 24, 33) + bytes(23) + b"admin",
        # a length-encoded auth response longer than the packet
        struct.pack("<IIB", packets.RELAYABLE, 1 << 24, 33) + bytes(23) + b"a\x00\xfc\xff\xff",
    ],
)
def test_malformed_handshake_closes_that_connection_only(mysql_emulator, payload):
    before = mysql_emulator.stats.rejected.get("protocol", 0)
    client = RawClient(mysql_emulator)
    try:
        client.send(1, payload)
        _bad_handshake(client)
    finally:
        client.close()
    assert mysql_emulator.stats.rejected.get("protocol", 0) == before + 1
    _still_serves(mysql_emulator)


def test_oversized_login_packet_is_refused_before_it_is_read(mysql_emulator):
    client = RawClient(mysql_emulator)
    try:
        # Announces 16 MiB - 1 and sends none of it: refused on the header alone.
        client.sock.sendall(b"\xff\xff\xff\x01")
        _bad_handshake(client)
    finally:
        client.close()
    _still_serves(mysql_emulator)


def test_packet_out_of_sequence_is_refused(mysql_emulator):
    client = RawClient(mysql_emulator)
    try:
        client.handshake(seq=7)
        _bad_handshake(client)
    finally:
        client.close()


def test_garbage_inside_tls_after_the_auth_switch(mysql_emulator):
    client = RawClient(mysql_emulator)
    try:
        client.start_tls()
        client.handshake(2)
        assert client.read().payload.startswith(b"\xfe")
        # An answer that is not UTF-8 cannot be a token.
        client.send(4, b"\xff\xfe\x00")
        _bad_handshake(client)
    finally:
        client.close()
    _still_serves(mysql_emulator)


def test_a_client_that_says_nothing_is_dropped_at_the_login_timeout():
    from tests.integration.emulator.mysql.conftest import emulator
    from warmdb.emulator.mysql.limits import MySQLLimits

    with emulator(limits=MySQLLimits(login_timeout=0.5)) as rds:
        with socket.create_connection(("127.0.0.1", rds.port), timeout=5) as sock:
            sock.recv(65536)  # the greeting
            sock.settimeout(5)
            assert sock.recv(65536) == b""
        assert rds.stats.rejected == {"protocol": 1}
        _still_serves(rds)


def test_garbage_in_the_command_phase_ends_that_session(mysql_emulator):
    """After login, bytes go to MariaDB unchanged; it judges them, as a server would."""
    victim = connect("pymysql", mysql_emulator, signed(mysql_emulator))
    other = connect("pymysql", mysql_emulator, signed(mysql_emulator))
    try:
        before = mysql_emulator.stats.upstream_closed
        # A command with the wrong sequence number: MariaDB answers 1156 and hangs up.
        sock = victim.conn._sock
        sock.sendall(b"\x09\x00\x00\x05\x03SELECT 1")
        sock.settimeout(5)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        assert received[4:] == b"\xff\x84\x04#08S01Got packets out of order"
        wait_for(lambda: mysql_emulator.stats.upstream_closed > before)
        assert other.query("SELECT 2") == [(2,)]
    finally:
        victim.close()
        other.close()
    _still_serves(mysql_emulator)


def test_many_clients_at_once(mysql_emulator):
    sessions = [connect("pymysql", mysql_emulator, signed(mysql_emulator)) for _ in range(20)]
    try:
        assert mysql_emulator.stats.current >= 20
        ids = {s.query("SELECT CONNECTION_ID()")[0][0] for s in sessions}
        assert len(ids) == 20
    finally:
        for session in sessions:
            session.close()
    assert mysql_emulator.stats.peak >= 20


def test_stop_drops_open_sessions_and_cleans_up():
    from pathlib import Path

    from tests.integration.emulator.mysql.conftest import emulator

    with emulator() as rds:
        session = connect("pymysql", rds, signed(rds))
        workdir = Path(rds.ca_path).parent.parent
        upstream_dir = Path(rds.upstream.socket_path).parent
    try:
        with pytest.raises(Exception) as info:  # noqa: PT011 - the driver's own class
            session.query("SELECT 1")
        assert info.value.args[0] in (2006, 2013)
    finally:
        session.close()
    assert not workdir.exists()
    assert not upstream_dir.exists()
