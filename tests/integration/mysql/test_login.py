"""Each MySQL driver logs in through the RDS emulator with a warmdb token over verified TLS and
gets its own connection back; tokens the emulator must refuse are refused, and warmdb says so
with a typed error that holds no secret."""

from __future__ import annotations

import asyncio
import ssl
import time

import aiomysql
import pymysql
import pytest
from mysql.connector.connection import MySQLConnection

import warmdb
from tests.integration.emulator.mysql.conftest import signed
from tests.integration.mysql.conftest import DRIVERS, MODULES
from warmdb import events

CONNECTION_TYPES = {
    "pymysql": pymysql.connections.Connection,
    "mysql_connector": MySQLConnection,
    "aiomysql": aiomysql.Connection,
}


def is_tls(driver: str, conn) -> bool:
    """Whether the driver's connection runs over TLS, as the driver itself knows it."""
    if driver == "pymysql":
        return isinstance(conn._sock, ssl.SSLSocket)
    if driver == "mysql_connector":
        return bool(conn.is_secure)
    return conn._writer.get_extra_info("ssl_object") is not None


def connect_and_query(driver: str, sql: str, **kwargs) -> tuple[list[tuple], bool]:
    """Connect through warmdb, check the type, run *sql*; return its rows and the TLS state."""
    module = MODULES[driver]
    if driver == "aiomysql":

        async def run():
            conn = await module.connect(**kwargs)
            try:
                assert isinstance(conn, CONNECTION_TYPES[driver])
                async with conn.cursor() as cursor:
                    await cursor.execute(sql)
                    return [tuple(r) for r in await cursor.fetchall()], is_tls(driver, conn)
            finally:
                conn.close()

        return asyncio.run(run())
    conn = module.connect(**kwargs)
    try:
        assert type(conn) is CONNECTION_TYPES[driver]
        cursor = conn.cursor()
        cursor.execute(sql)
        rows = [tuple(r) for r in cursor.fetchall()]
        cursor.close()
        return rows, is_tls(driver, conn)
    finally:
        conn.close()


@pytest.mark.parametrize("driver", DRIVERS)
def test_each_driver_logs_in_with_a_token_over_verified_tls(driver, rds, rds_kwargs):
    before = rds.stats
    rows, secure = connect_and_query(driver, "SELECT CURRENT_USER()", **rds_kwargs)
    assert rows == [("admin@localhost",)]
    assert secure
    after = rds.stats
    assert after.accepted == before.accepted + 1
    assert after.rejected == before.rejected


@pytest.mark.parametrize("driver", DRIVERS)
def test_the_system_store_does_not_trust_the_emulators_ca(driver, rds, rds_kwargs):
    """verify-full without a CA file checks against the system store, which does not hold
    the emulator's throwaway CA: the connect fails on the certificate, before any login."""
    kwargs = {**rds_kwargs, "ssl_ca": "system"}
    before = rds.stats.accepted
    with pytest.raises(warmdb.ConnectError) as caught:
        connect_and_query(driver, "SELECT 1", **kwargs)
    assert not isinstance(caught.value, warmdb.AuthenticationError)
    assert caught.value.reason is None  # not retried
    chain, cause = [], caught.value.__cause__
    while cause is not None:
        chain.append(cause)
        cause = getattr(cause, "original_exception", None) or cause.__cause__ or cause.__context__
    assert any(isinstance(c, ssl.SSLCertVerificationError) for c in chain)
    assert rds.stats.accepted == before


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_token_for_another_region_is_refused_after_one_fresh_retry(driver, rds, rds_kwargs):
    events.reset_counts()
    before = rds.stats.rejected.get("auth", 0)
    with pytest.raises(warmdb.AuthenticationError) as caught:
        connect_and_query(driver, "SELECT 1", **{**rds_kwargs, "region": "eu-west-1"})
    error = caught.value
    assert error.errno == 1045
    assert error.reason == "auth"
    assert error.driver == driver
    assert "X-Amz-Signature" not in str(error)
    assert rds.stats.rejected["auth"] == before + 2  # the retry signed a new token
    assert events.counts()["retries.auth"] == 1


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_wrong_key_is_refused(driver, rds, rds_kwargs, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-emulators-secret-key-at-all")
    with pytest.raises(warmdb.AuthenticationError) as caught:
        connect_and_query(driver, "SELECT 1", **rds_kwargs)
    assert caught.value.errno == 1045
    assert "not-the-emulators" not in str(caught.value)


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(lambda rds: signed(rds, "someone_else"), id="another-user"),
        pytest.param(lambda rds: signed(rds, signed_at=time.time() - 1000), id="expired"),
    ],
)
@pytest.mark.parametrize("driver", DRIVERS)
def test_a_token_for_another_user_or_expired_is_refused(driver, token, rds, rds_kwargs):
    """A password callable handing the emulator such a token (password mode, over TLS)."""
    kwargs = {**rds_kwargs, "auth": "password", "password": lambda: token(rds)}
    kwargs.pop("region")
    if driver == "mysql_connector":
        kwargs["auth_plugin"] = "mysql_clear_password"
    before = rds.stats.rejected.get("auth", 0)
    with pytest.raises(warmdb.AuthenticationError) as caught:
        connect_and_query(driver, "SELECT 1", **kwargs)
    assert caught.value.errno == 1045
    assert "X-Amz" not in str(caught.value)
    assert rds.stats.rejected["auth"] == before + 1  # password mode: no retry


@pytest.mark.parametrize("driver", DRIVERS)
def test_plaintext_is_refused(driver, rds, rds_kwargs):
    """With a token warmdb refuses to turn TLS off; a password that is a token sent in
    plaintext (password mode, TLS off) is refused by the endpoint with 1045."""
    with pytest.raises(warmdb.ConfigurationError, match="clear text"):
        connect_and_query(driver, "SELECT 1", **{**rds_kwargs, "ssl_mode": "DISABLED"})
    kwargs = {**rds_kwargs, "auth": "password", "password": rds.token(), "ssl_mode": "DISABLED"}
    kwargs.pop("ssl_ca")
    if driver == "aiomysql":
        kwargs.pop("ssl_mode")  # aiomysql without a context: plaintext
    before = rds.stats.rejected.get("no_tls", 0)
    with pytest.raises(warmdb.ConnectError) as caught:
        connect_and_query(driver, "SELECT 1", **kwargs)
    assert caught.value.errno == 1045
    assert rds.stats.rejected["no_tls"] == before + 1
    if driver == "mysql_connector":
        # Asked for mysql_clear_password in plaintext, mysql-connector refuses by itself.
        with pytest.raises(warmdb.ConnectError, match="insecure"):
            connect_and_query(driver, "SELECT 1", **kwargs, auth_plugin="mysql_clear_password")
        assert rds.stats.rejected["no_tls"] == before + 1


@pytest.mark.parametrize("driver", DRIVERS)
def test_static_and_callable_passwords(driver, rds, rds_kwargs):
    """Password mode: a string, or a callable called at every connect."""
    calls = []

    def password() -> str:
        calls.append(1)
        return rds.token()

    base = {**rds_kwargs, "auth": "password"}
    base.pop("region")
    if driver == "mysql_connector":
        base["auth_plugin"] = "mysql_clear_password"
    rows, _ = connect_and_query(driver, "SELECT 1", **base, password=rds.token())
    assert rows == [(1,)]
    for _ in range(2):
        connect_and_query(driver, "SELECT 1", **base, password=password)
    assert len(calls) == 2


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_server_without_tls_is_refused_when_tls_is_required(driver):
    """PyMySQL, aiomysql and mysql-connector alone would log in in plaintext when the server
    offers no TLS (aiomysql even when given a TLS context); with ``ssl_mode=require`` warmdb's
    connects refuse with 2026 (PyMySQL and aiomysql before the password is sent). A plain
    MariaDB without TLS plays the server."""
    from warmdb.emulator.mysql import upstream
    from warmdb.emulator.mysql.mariadb import EmbeddedMariaDB
    from warmdb.emulator.postgres import free_port

    port = free_port()
    settings = {"skip_networking": "0", "port": str(port), "bind_address": "127.0.0.1"}
    with EmbeddedMariaDB(settings=settings) as server:
        # A user that could log in over TCP: only the missing TLS stops it.
        upstream.run_sql(
            server.socket_path, "root", ["CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY 'secret'"]
        )
        with pytest.raises(warmdb.ConnectError) as caught:
            connect_and_query(
                driver,
                "SELECT 1",
                host="127.0.0.1",
                port=port,
                user="app",
                password="secret",
                ssl_mode="require",
            )
    assert caught.value.errno == 2026
