"""Seeds 004 and 003 at the protocol level: an idle client timeout, and wait_timeout."""

from __future__ import annotations

import threading
import time

import pymysql
import pytest
import sqlalchemy

from tests.integration.emulator.mysql.conftest import (
    DRIVERS,
    connect,
    emulator,
    error_number,
    signed,
    wait_for,
)

IDLE = 2.0


@pytest.fixture(scope="module")
def proxy():
    """An endpoint that drops clients idle for IDLE seconds, as RDS Proxy after 30 minutes."""
    with emulator(idle_client_timeout=IDLE) as started:
        yield started


def _lost(session) -> int:
    with pytest.raises(Exception) as info:  # noqa: PT011 - each driver has its own class
        session.query("SELECT 1")
    return error_number(info.value)


@pytest.mark.parametrize("driver", DRIVERS)
def test_idle_client_gets_lost_connection_on_its_next_query(proxy, driver):
    session = connect(driver, proxy, signed(proxy))
    try:
        assert session.query("SELECT 1") == [(1,)]
        before = proxy.stats.idle_closed
        wait_for(lambda: proxy.stats.idle_closed > before, timeout=IDLE + 3)
        # Seed 004: "(2013, 'Lost connection to MySQL server during query')".
        assert _lost(session) == 2013
    finally:
        session.close()


def test_a_client_active_within_the_timeout_is_kept(proxy):
    session = connect("pymysql", proxy, signed(proxy))
    try:
        for _ in range(2):
            time.sleep(IDLE * 0.6)
            assert session.query("SELECT 1") == [(1,)]
    finally:
        session.close()


def test_a_client_waiting_for_a_long_query_is_not_idle(proxy):
    session = connect("pymysql", proxy, signed(proxy))
    try:
        assert session.query(f"SELECT SLEEP({IDLE + 1})") == [(0,)]
        assert session.query("SELECT 1") == [(1,)]
    finally:
        session.close()


def test_seed_004_plain_sqlalchemy_pool_hands_out_a_dead_connection(proxy):
    """The seed's engine: pooled, no recycle, no pre-ping. After the proxy's timeout, 2013."""
    engine = sqlalchemy.create_engine(
        "mysql+pymysql://",
        creator=lambda: pymysql.connect(**proxy.connection_params()),
        pool_size=1,
    )
    try:
        with engine.connect() as conn:
            first = conn.execute(sqlalchemy.text("SELECT CONNECTION_ID()")).scalar()
        before = proxy.stats.idle_closed
        wait_for(lambda: proxy.stats.idle_closed > before, timeout=IDLE + 3)
        with pytest.raises(sqlalchemy.exc.OperationalError) as info, engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT CONNECTION_ID()"))
        assert info.value.orig.args[0] == 2013
        assert "Lost connection to MySQL server during query" in str(info.value)
        # The pool threw the dead one away: the next checkout is a new server connection.
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT CONNECTION_ID()")).scalar() != first
    finally:
        engine.dispose()


def test_wait_timeout_is_mariadbs_and_closes_idle_sessions():
    with emulator(wait_timeout=1) as rds:
        session = connect("pymysql", rds, signed(rds))
        try:
            assert session.query("SELECT @@wait_timeout") == [(1,)]
            wait_for(lambda: rds.stats.upstream_closed == 1, timeout=5)
            assert _lost(session) == 2013
            assert rds.stats.idle_closed == 0
        finally:
            session.close()


def test_no_idle_timeout_by_default(mysql_emulator):
    assert mysql_emulator.limits.idle_client_timeout is None
    before = mysql_emulator.stats
    session = connect("pymysql", mysql_emulator, signed(mysql_emulator))
    try:
        assert session.query("SELECT @@wait_timeout") == [(28800,)]
    finally:
        session.close()
    wait_for(lambda: mysql_emulator.stats.current == before.current)
    # A client's own goodbye (COM_QUIT) is not counted as the server closing on it.
    assert mysql_emulator.stats.upstream_closed == before.upstream_closed
    assert mysql_emulator.stats.idle_closed == before.idle_closed


def test_connection_ids_are_mariadbs(mysql_emulator):
    """Seed 003 compares CONNECTION_ID() across invocations: it must be the server's own."""
    session = connect("pymysql", mysql_emulator, signed(mysql_emulator))
    try:
        (ours,) = session.query("SELECT CONNECTION_ID()")[0]
        listed = session.query("SELECT ID FROM information_schema.PROCESSLIST")
        assert (ours,) in listed
        assert session.query("SELECT CONNECTION_ID()") == [(ours,)]
    finally:
        session.close()


class _Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            return self.now


def test_iam_connect_ceiling_refuses_new_tokens_but_not_reused_ones():
    clock = _Clock()
    with emulator(iam_connect_rate=2, clock=clock) as rds:
        now = time.time()
        tokens = [signed(rds, signed_at=now - i) for i in range(3)]
        assert len(set(tokens)) == 3
        for token in tokens[:2]:
            connect("pymysql", rds, token).close()
        with pytest.raises(pymysql.err.OperationalError) as info:
            connect("pymysql", rds, tokens[2]).close()
        assert info.value.args[0] == 1045
        assert rds.stats.rejected == {"rate": 1}
        # A token already accepted is not verified again: RDS does not throttle reuse.
        for _ in range(3):
            connect("pymysql", rds, tokens[0]).close()
        assert rds.stats.reused_tokens == 3
        # A second later the bucket has refilled.
        with clock.lock:
            clock.now += 1.0
        connect("pymysql", rds, tokens[2]).close()
        assert rds.stats.accepted == 6


@pytest.mark.parametrize("driver", DRIVERS)
def test_killed_backend_gives_lost_connection(mysql_emulator, driver):
    """KILL on MariaDB ends the client's session as on RDS: 2013 (or 2006) on the next query."""
    victim = connect(driver, mysql_emulator, signed(mysql_emulator))
    admin = connect("pymysql", mysql_emulator, signed(mysql_emulator))
    try:
        (victim_id,) = victim.query("SELECT CONNECTION_ID()")[0]
        before = mysql_emulator.stats.upstream_closed
        admin.query(f"KILL {victim_id}")
        wait_for(lambda: mysql_emulator.stats.upstream_closed > before)
        assert _lost(victim) in (2006, 2013)
    finally:
        victim.close()
        admin.close()
