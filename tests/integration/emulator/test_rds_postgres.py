"""The RDS PostgreSQL engine: rds-db tokens, RDS's connect-rate ceiling, RDS Proxy's idle cut."""

from __future__ import annotations

import time

import psycopg
import pytest

from warmdb.auth.tokens import TokenSpec, sign_token
from warmdb.emulator import Limits

from .conftest import emulator, wait_for

# One second of real time stands for RDS Proxy's default 1,800 s idle client timeout.
IDLE_SCALE = 1800.0


@pytest.fixture(scope="module")
def rds():
    with emulator(engine="rds-postgres") as started:
        yield started


def test_rds_token_logs_in_as_plain_postgresql(rds):
    token = rds.token("admin")
    assert f"{rds.hostname}:{rds.port}/?Action=connect&DBUser=admin" in token
    with psycopg.connect(**rds.connection_params(user="admin")) as conn:
        # No DSQL rules: PostgreSQL's default isolation, SAVEPOINT works.
        row = conn.execute("select current_setting('transaction_isolation')").fetchone()
        assert row == ("read committed",)
        conn.execute("savepoint s1")
        conn.execute("rollback to savepoint s1")


def test_dsql_token_is_refused_with_rds_words(rds):
    spec = TokenSpec(
        kind="dsql",
        host=rds.hostname,
        port=rds.port,
        region=rds.region,
        user="admin",
        expires_in=900,
    )
    dsql_token = sign_token(spec, rds.credentials, time.time())
    params = rds.connection_params(user="admin", token=False)
    with pytest.raises(
        psycopg.OperationalError, match='PAM authentication failed for user "admin"'
    ):
        psycopg.connect(**params, password=dsql_token)
    assert rds.stats.auth_failures["service"] >= 1


def test_token_for_another_port_is_refused(rds):
    spec = TokenSpec(
        kind="rds",
        host=rds.hostname,
        port=rds.port + 1,
        region=rds.region,
        user="admin",
        expires_in=900,
    )
    params = rds.connection_params(user="admin", token=False)
    with pytest.raises(psycopg.OperationalError, match="PAM authentication failed"):
        psycopg.connect(**params, password=sign_token(spec, rds.credentials, time.time()))
    assert rds.stats.auth_failures["port"] >= 1


def test_token_for_another_user_is_refused(rds):
    params = rds.connection_params(user="admin", token=False)
    with pytest.raises(psycopg.OperationalError, match="PAM authentication failed"):
        psycopg.connect(**params, password=rds.token("postgres"))


def test_default_connect_rate_is_rds_iam_ceiling(rds):
    assert (rds.limits.connection_rate, rds.limits.connection_burst) == (200.0, 200)


def test_connect_rate_ceiling_refuses_beyond_the_burst():
    limits = Limits(connection_rate=0.5, connection_burst=2)
    with emulator(engine="rds-postgres", limits=limits) as rds:
        for _ in range(2):
            psycopg.connect(**rds.connection_params()).close()
        with pytest.raises(psycopg.OperationalError, match="PAM authentication failed"):
            psycopg.connect(**rds.connection_params())
        assert rds.stats.rejected["rate"] == 1


@pytest.fixture(scope="module")
def proxied():
    """RDS Proxy's idle client timeout (1,800 s), one real second here."""
    with emulator(
        engine="rds-postgres",
        idle_client_timeout=1800,
        time_scale=IDLE_SCALE,
        token_time_scale=1,
    ) as started:
        yield started


def test_idle_pooled_connection_is_dropped_as_rds_proxy_does(proxied):
    """Seed 004's failure: a connection kept idle past the proxy's timeout is gone."""
    conn = psycopg.connect(**proxied.connection_params(), autocommit=True)
    try:
        conn.execute("select 1")
        wait_for(lambda: proxied.stats.idle_closed >= 1, timeout=10)
        with pytest.raises(psycopg.OperationalError, match=r"closed|lost|terminat"):
            conn.execute("select 1")
    finally:
        conn.close()


def test_busy_connection_is_not_idle(proxied):
    before = proxied.stats.idle_closed
    with psycopg.connect(**proxied.connection_params(), autocommit=True) as conn:
        # A statement running longer than the timeout: the connection is busy, not idle.
        conn.execute("select pg_sleep(1.5)")
        assert conn.execute("select 2").fetchone() == (2,)
    assert proxied.stats.idle_closed == before


def test_dsql_engine_has_no_idle_timeout_by_default(dsql_emulator):
    with psycopg.connect(**dsql_emulator.connection_params(), autocommit=True) as conn:
        conn.execute("select 1")
        time.sleep(0.3)
        assert conn.execute("select 1").fetchone() == (1,)
    assert dsql_emulator.stats.idle_closed == 0
