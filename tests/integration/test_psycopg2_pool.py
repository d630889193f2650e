"""warmdb.psycopg2.pool() against a fast-forwarded DSQL emulator: the long job, a backend killed
between checkouts, rollback on return, broken work, getconn/putconn, the wait timeout."""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
import psycopg2
import psycopg2.errors
import psycopg2.extensions
import pytest

import warmdb
import warmdb.psycopg2
from tests.integration.lifecycle import SCALED_POLICY, run_long_job
from warmdb import events

PID = "SELECT pg_backend_pid()"


@pytest.fixture(autouse=True)
def fresh_counts():
    events.reset_counts()
    yield
    events.reset_counts()


@pytest.fixture
def pool(scaled_dsql_kwargs):
    with warmdb.psycopg2.pool(max_size=2, timeout=0.2, **scaled_dsql_kwargs) as pool:
        yield pool


def pid_of(conn) -> int:
    with conn.cursor() as cur:
        cur.execute(PID)
        return cur.fetchone()[0]


def recycles() -> dict[str, int]:
    return {k: v for k, v in events.counts().items() if k.startswith("recycles.")}


def test_long_job(pool, scaled_dsql):
    def query_once() -> int:
        with pool.connection() as conn:
            assert type(conn) is psycopg2.extensions.connection
            return pid_of(conn)

    run_long_job(query_once, scaled_dsql)
    assert recycles().get("recycles.lifetime", 0) >= 4


def test_backend_killed_between_checkouts_is_replaced(pool, scaled_dsql):
    with pool.connection() as conn:
        first = pid_of(conn)
    with psycopg.connect(**scaled_dsql.upstream.libpq_params(), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (first,))
    # The emulator passes the termination on to the client's socket, and the connection
    # idles past poll_after_idle, after which checkouts poll its socket.
    time.sleep(max(0.3, SCALED_POLICY.poll_after_idle))
    with pool.connection() as conn:
        assert pid_of(conn) != first
    assert recycles() == {"recycles.readable": 1}


def test_open_transaction_is_rolled_back_on_return(pool):
    table = f"scratch_{uuid.uuid4().hex[:8]}"
    with pool.connection() as conn:
        conn.autocommit = True  # DSQL: DDL in a transaction of its own
        with conn.cursor() as cur:
            cur.execute(f"CREATE TABLE {table} (n int)")
        conn.autocommit = False
        with conn.cursor() as cur:
            cur.execute(f"INSERT INTO {table} VALUES (1)")
        assert conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_INTRANS
    with pool.connection() as again:
        assert again is conn  # LIFO: the same connection, rolled back
        assert again.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE
        with again.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {table}")
            assert cur.fetchone()[0] == 0
        again.rollback()


def test_broken_work_propagates_and_the_connection_is_replaced(pool, scaled_dsql):
    with pytest.raises(psycopg2.OperationalError), pool.connection() as conn:  # noqa: PT012
        first = pid_of(conn)
        with psycopg.connect(**scaled_dsql.upstream.libpq_params(), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        pid_of(conn)
    with pool.connection() as conn:
        assert pid_of(conn) != first
    assert recycles() == {"recycles.broken": 1}


def test_server_error_keeps_the_connection(pool):
    with pool.connection() as first:
        pid_of(first)
    with pytest.raises(psycopg2.errors.DivisionByZero), pool.connection() as conn:
        conn.cursor().execute("SELECT 1 / 0")
    with pool.connection() as conn:
        assert conn is first
        pid_of(conn)
    assert recycles() == {}


def test_getconn_putconn_and_the_wait_timeout(pool):
    a = pool.getconn()
    b = pool.getconn()
    assert a is not b
    assert pool.checked_out == 2
    started = time.monotonic()
    with pytest.raises(warmdb.PoolTimeout, match="timeout"):
        pool.getconn()
    assert time.monotonic() - started >= 0.2
    pool.putconn(a)
    with pytest.raises(warmdb.WarmdbError, match="not checked out"):
        pool.putconn(a)
    # A waiting thread gets the connection given back.
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(pool.getconn()))
    with pool.connection() as c:
        assert c is a
        waiter.start()
    waiter.join()
    assert got == [a]
    pool.putconn(a)
    pool.putconn(b, close=True)
    assert b.closed
    assert pool.checked_out == 0


def test_close_closes_idle_connections_now_and_held_ones_on_return(scaled_dsql_kwargs):
    pool = warmdb.psycopg2.pool(min_size=1, max_size=2, **scaled_dsql_kwargs)
    held = pool.getconn()
    idle = pool.getconn()
    pool.putconn(idle)
    assert not idle.closed
    pool.close()
    assert idle.closed
    assert not held.closed
    pool.putconn(held)
    assert held.closed
    with pytest.raises(warmdb.WarmdbError, match="closed"):
        pool.getconn()
