"""Logins through the MySQL emulator with the real drivers: warmdb's tokens in, bad ones out."""

from __future__ import annotations

import time

import pytest

from tests.integration.emulator.mysql.conftest import (
    DRIVERS,
    RawClient,
    connect,
    refusal,
    signed,
)
from warmdb.emulator.mysql import packets
from warmdb.emulator.service import random_credentials


@pytest.mark.parametrize("driver", DRIVERS)
def test_driver_logs_in_with_a_warmdb_token_over_tls(mysql_emulator, driver):
    before = mysql_emulator.stats.accepted
    session = connect(driver, mysql_emulator, signed(mysql_emulator))
    try:
        assert session.query("SELECT CURRENT_USER()") == [("admin@localhost",)]
        # The command phase is relayed both ways: a result set with many rows comes back.
        rows = session.query("SELECT seq FROM mysql.seq_1_to_5000")
        assert [r[0] for r in rows] == list(range(1, 5001))
    finally:
        session.close()
    assert mysql_emulator.stats.accepted == before + 1


@pytest.mark.parametrize("driver", DRIVERS)
def test_the_client_sees_tls(mysql_emulator, driver):
    session = connect(driver, mysql_emulator, signed(mysql_emulator))
    try:
        conn = session.conn
        if driver == "pymysql":
            sock = conn._sock
        elif driver == "aiomysql":
            sock = conn._writer.get_extra_info("ssl_object")
        else:
            sock = conn._socket.sock
        assert sock.version().startswith("TLSv1.")
    finally:
        session.close()


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("another_user", "db_user"),
        ("another_region", "region"),
        ("expired", "expired"),
        ("unknown_key", "access_key"),
        ("another_port", "port"),
    ],
)
def test_bad_tokens_are_refused_with_1045(mysql_emulator, driver, case, reason):
    rds = mysql_emulator
    token = {
        "another_user": lambda: signed(rds, "app"),
        "another_region": lambda: signed(rds, region="eu-west-1"),
        "expired": lambda: signed(rds, signed_at=time.time() - 901),
        "unknown_key": lambda: signed(rds, credentials=random_credentials()),
        "another_port": lambda: signed(rds, port=rds.port + 1),
    }[case]()
    before = rds.stats.auth_failures.get(reason, 0)
    number, message = refusal(driver, rds, token)
    assert number == 1045
    assert message == "Access denied for user 'admin'@'127.0.0.1' (using password: YES)"
    assert rds.stats.auth_failures.get(reason, 0) == before + 1
    # The token never appears in what the client is told.
    assert token not in message


@pytest.mark.parametrize("driver", ["pymysql", "aiomysql"])
def test_plaintext_login_is_refused_before_the_password_is_asked(mysql_emulator, driver):
    before = mysql_emulator.stats.rejected.get("no_tls", 0)
    number, message = refusal(driver, mysql_emulator, signed(mysql_emulator), tls=False)
    assert number == 1045
    assert "Access denied for user 'admin'" in message
    assert mysql_emulator.stats.rejected.get("no_tls", 0) == before + 1


def test_plaintext_raw_login_gets_1045_and_no_auth_switch(mysql_emulator):
    client = RawClient(mysql_emulator)
    try:
        assert client.greeting.capabilities & packets.CLIENT_SSL
        client.handshake(1)
        answer = client.read()
        assert answer.seq == 2
        code, sqlstate, message = packets.parse_err(answer.payload)
        assert (code, sqlstate) == (1045, "28000")
        assert message.endswith("(using password: YES)")
        assert client.is_closed()
    finally:
        client.close()


def test_mysql_connector_refuses_clear_password_in_plaintext_itself(mysql_emulator):
    # The driver's own guard, which the emulator does not replace: nothing is sent.
    import mysql.connector

    with pytest.raises(mysql.connector.Error, match=r"(?i)clear|insecure|ssl"):
        connect("mysql_connector", mysql_emulator, signed(mysql_emulator), tls=False)


def test_the_server_asks_for_mysql_clear_password_inside_tls(mysql_emulator):
    client = RawClient(mysql_emulator)
    try:
        client.start_tls()
        client.handshake(2)
        switch = client.read()
        assert switch.seq == 3
        assert switch.payload == b"\xfemysql_clear_password\x00"
        client.send(4, signed(mysql_emulator).encode() + b"\x00")
        ok = client.read()
        assert ok.seq == 5
        assert packets.is_ok(ok.payload)
    finally:
        client.close()


def test_unknown_user_gets_mariadbs_own_refusal(mysql_emulator):
    before = mysql_emulator.stats.rejected.get("upstream", 0)
    token = signed(mysql_emulator, "ghost")
    number, message = refusal("pymysql", mysql_emulator, token, user="ghost")
    assert number == 1045
    assert "'ghost'@'localhost'" in message
    assert mysql_emulator.stats.rejected.get("upstream", 0) == before + 1


def test_created_user_logs_in_and_database_is_passed(mysql_emulator):
    admin = connect("pymysql", mysql_emulator, signed(mysql_emulator))
    try:
        admin.query("CREATE DATABASE IF NOT EXISTS shop")
        admin.query("CREATE USER IF NOT EXISTS 'app'@'localhost'")
        admin.query("GRANT ALL ON shop.* TO 'app'@'localhost'")
    finally:
        admin.close()
    for driver in DRIVERS:
        session = connect(
            driver, mysql_emulator, signed(mysql_emulator, "app"), user="app", database="shop"
        )
        try:
            assert session.query("SELECT CURRENT_USER(), DATABASE()") == [("app@localhost", "shop")]
        finally:
            session.close()


@pytest.mark.parametrize("driver", ["pymysql", "mysql_connector"])
def test_drivers_thread_id_is_mariadbs_connection_id(mysql_emulator, driver):
    """What a driver's KILL QUERY would use must name its own MariaDB session."""
    session = connect(driver, mysql_emulator, signed(mysql_emulator))
    try:
        conn = session.conn
        thread_id = conn.thread_id() if driver == "pymysql" else conn.connection_id
        assert session.query("SELECT CONNECTION_ID()") == [(thread_id,)]
    finally:
        session.close()


def test_too_many_connections_is_mariadbs_1040():
    from tests.integration.emulator.mysql.conftest import emulator

    with emulator(max_connections=10) as rds:
        admin = connect("pymysql", rds, signed(rds))
        admin.query("CREATE USER 'app'@'localhost'")
        sessions = [admin]
        try:
            token = signed(rds, "app")
            sessions += [connect("pymysql", rds, token, user="app") for _ in range(9)]
            number, message = refusal("pymysql", rds, signed(rds, "app"), user="app")
            assert (number, message) == (1040, "Too many connections")
            assert rds.stats.rejected == {"upstream": 1}
        finally:
            for session in sessions:
                session.close()
        # Room again once one leaves.
        connect("pymysql", rds, signed(rds, "app"), user="app").close()
