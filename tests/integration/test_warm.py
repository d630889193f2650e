"""warm() keepers against real servers: long jobs on a fast-forwarded DSQL emulator, killed
backends, idle pings, broken work, event loops that change."""

from __future__ import annotations

import asyncio
import threading
import time

import asyncpg
import psycopg
import psycopg2
import pytest

import warmdb
import warmdb.asyncpg
import warmdb.psycopg
import warmdb.psycopg2
from tests.integration.lifecycle import (
    SERVER_LIFETIME,
    run_long_job,
    run_long_job_async,
    warmdb_kwargs,
)
from warmdb import events
from warmdb.policy import DSQL

PID = "SELECT pg_backend_pid()"


def sync_pid(driver: str, conn) -> int:
    if driver == "psycopg2":
        with conn.cursor() as cur:
            cur.execute(PID)
            return cur.fetchone()[0]
    return conn.execute(PID).fetchone()[0]


async def async_pid(driver: str, conn) -> int:
    if driver == "asyncpg":
        return await conn.fetchval(PID)
    cur = await conn.execute(PID)
    return (await cur.fetchone())[0]


SYNC_WARM = {"psycopg2": warmdb.psycopg2.warm, "psycopg": warmdb.psycopg.warm}
ASYNC_WARM = {"asyncpg": warmdb.asyncpg.warm, "psycopg-async": warmdb.psycopg.warm_async}


@pytest.mark.parametrize("driver", sorted(SYNC_WARM))
def test_long_job_sync(driver, scaled_dsql, scaled_dsql_kwargs):
    keeper = SYNC_WARM[driver](**scaled_dsql_kwargs)

    def query_once() -> int:
        with keeper.connection() as conn:
            return sync_pid(driver, conn)

    try:
        run_long_job(query_once, scaled_dsql)
    finally:
        keeper.close()


@pytest.mark.parametrize("driver", sorted(ASYNC_WARM))
def test_long_job_async(driver, scaled_dsql, scaled_dsql_kwargs):
    keeper = ASYNC_WARM[driver](**scaled_dsql_kwargs)

    async def query_once() -> int:
        async with keeper.connection() as conn:
            return await async_pid(driver, conn)

    async def main() -> None:
        try:
            await run_long_job_async(query_once, scaled_dsql)
        finally:
            await keeper.close()

    asyncio.run(main())


class Front:
    """One keeper driven through a sync interface; async keepers run on one event loop, as a
    Lambda handler keeping its loop between invocations would."""

    def __init__(self, driver: str, kwargs: dict[str, object]) -> None:
        self.driver = driver
        self.is_async = driver in ASYNC_WARM
        self.keeper = (ASYNC_WARM if self.is_async else SYNC_WARM)[driver](**kwargs)
        self.loop = asyncio.new_event_loop() if self.is_async else None

    def run(self, work):
        """Check out, call ``work(conn)`` (awaited for async drivers), check in."""
        if not self.is_async:
            with self.keeper.connection() as conn:
                return work(conn)

        async def checkout():
            async with self.keeper.connection() as conn:
                return await work(conn)

        return self.loop.run_until_complete(checkout())

    def pid(self) -> int:
        if self.is_async:
            return self.run(lambda conn: async_pid(self.driver, conn))
        return self.run(lambda conn: sync_pid(self.driver, conn))

    def execute(self, sql: str):
        """Run *sql* in the checked-out connection (no commit)."""
        if self.driver == "asyncpg":
            return self.run(lambda conn: conn.execute(sql))
        if self.driver == "psycopg2":

            def work(conn):
                with conn.cursor() as cur:
                    cur.execute(sql)

            return self.run(work)
        if self.is_async:
            return self.run(lambda conn: conn.execute(sql))
        return self.run(lambda conn: conn.execute(sql))

    def close(self) -> None:
        if self.is_async:
            self.loop.run_until_complete(self.keeper.close())
            self.loop.close()
        else:
            self.keeper.close()


ALL_FRONTS = sorted(SYNC_WARM) + sorted(ASYNC_WARM)


@pytest.fixture
def dsql_kwargs(dsql_emulator, monkeypatch) -> dict[str, object]:
    """warmdb arguments for the session's emulator (DSQL's real limits)."""
    return warmdb_kwargs(dsql_emulator, monkeypatch)


@pytest.fixture
def front(request, dsql_kwargs):
    made = Front(request.param, dsql_kwargs)
    yield made
    made.close()


@pytest.fixture
def recycles():
    """The recycle reasons reported while the test runs."""
    seen: list[str] = []

    class Recorder(events.Listener):
        def on_recycle(self, event: events.RecycleEvent) -> None:
            seen.append(event.reason)

    recorder = Recorder()
    events.add_listener(recorder)
    yield seen
    events.remove_listener(recorder)


def terminate(dsql, pid: int) -> None:
    """Kill one backend from the upstream server's side, as an operator or fail-over would."""
    with psycopg.connect(**dsql.upstream.libpq_params(), autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)


def wait_for_server_close(dsql, before: int) -> None:
    deadline = time.monotonic() + 5
    while dsql.stats.current > before - 1 and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.mark.parametrize("front", ALL_FRONTS, indirect=True)
def test_killed_between_invocations_reconnects_transparently(front, dsql_emulator, recycles):
    first = front.pid()
    assert front.pid() == first  # a warm start reuses the connection
    before = dsql_emulator.stats.current
    terminate(dsql_emulator, first)
    wait_for_server_close(dsql_emulator, before)
    second = front.pid()
    assert second != first
    # Noticed without a round trip: the socket turned readable (the termination notice).
    assert recycles == ["readable"]


@pytest.mark.parametrize("driver", ALL_FRONTS)
def test_pings_only_after_idle(driver, dsql_kwargs, dsql_emulator):
    front = Front(driver, {**dsql_kwargs, "policy": DSQL.replace(ping_after_idle=0.3)})

    def queries_of_one_checkout() -> int:
        before = dsql_emulator.stats.queries
        front.pid()
        return dsql_emulator.stats.queries - before

    try:
        front.pid()
        # psycopg and psycopg2 outside autocommit add BEGIN and the ROLLBACK on the way back.
        per_checkout = queries_of_one_checkout()
        assert [queries_of_one_checkout() for _ in range(5)] == [per_checkout] * 5
        time.sleep(0.35)
        assert queries_of_one_checkout() == per_checkout + 1, "an idle checkout pings once"
    finally:
        front.close()


@pytest.mark.parametrize("front", ALL_FRONTS, indirect=True)
def test_failed_work_is_not_retried_and_a_broken_connection_is_replaced(
    front, dsql_emulator, recycles
):
    first = front.pid()
    calls = []

    def doomed(conn):
        calls.append(1)
        terminate(dsql_emulator, first)
        return (async_pid if front.is_async else sync_pid)(front.driver, conn)

    driver_errors = (psycopg.Error, psycopg2.Error, asyncpg.PostgresError, asyncpg.InterfaceError)
    with pytest.raises(driver_errors):  # the driver's own error, not retried nor wrapped
        front.run(doomed)
    assert calls == [1]
    assert recycles == ["broken"]
    assert front.pid() != first


@pytest.mark.parametrize("front", ALL_FRONTS, indirect=True)
def test_a_sql_error_keeps_the_connection_and_rolls_back(front, dsql_emulator, recycles):
    first = front.pid()
    with psycopg.connect(**dsql_emulator.upstream.libpq_params(), autocommit=True) as admin:
        admin.execute("CREATE TABLE IF NOT EXISTS warm_rollback (id int)")
    with pytest.raises(Exception, match="warm_no_such_table"):
        front.execute("SELECT * FROM warm_no_such_table")
    assert front.pid() == first
    assert recycles == []
    # Work left uncommitted when the block ends is rolled back, as a pool would.
    if front.driver == "asyncpg":

        async def open_transaction(conn):
            await conn.execute("BEGIN")
            await conn.execute("INSERT INTO warm_rollback VALUES (1)")

        front.run(open_transaction)
        assert front.run(lambda conn: conn.fetchval("SELECT count(*) FROM warm_rollback")) == 0
    elif front.driver == "psycopg-async":
        front.execute("INSERT INTO warm_rollback VALUES (1)")

        async def count(conn) -> int:
            cur = await conn.execute("SELECT count(*) FROM warm_rollback")
            return (await cur.fetchone())[0]

        assert front.run(count) == 0
    else:
        front.execute("INSERT INTO warm_rollback VALUES (1)")
        assert front.run(lambda conn: count_rows(front.driver, conn)) == 0


def count_rows(driver: str, conn) -> int:
    if driver == "psycopg2":
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM warm_rollback")
            return cur.fetchone()[0]
    return conn.execute("SELECT count(*) FROM warm_rollback").fetchone()[0]


@pytest.mark.parametrize("front", sorted(SYNC_WARM), indirect=True)
def test_nested_checkout_is_an_error(front):
    nested = pytest.raises(warmdb.WarmdbError, match="nested checkout")
    with front.keeper.connection(), nested, front.keeper.connection():
        pass
    front.pid()  # the keeper is usable afterwards


def test_asyncpg_reconnects_when_the_event_loop_changes(dsql_kwargs, recycles):
    keeper = warmdb.asyncpg.warm(**dsql_kwargs)

    async def pid() -> int:
        async with keeper.connection() as conn:
            return await conn.fetchval(PID)

    first = asyncio.run(pid())
    second = asyncio.run(pid())  # asyncio.run per invocation: a new loop each time
    assert first != second
    assert recycles == ["loop-changed"]


def test_psycopg_async_survives_a_new_event_loop(dsql_kwargs, recycles):
    keeper = warmdb.psycopg.warm_async(**dsql_kwargs)

    async def pid() -> int:
        async with keeper.connection() as conn:
            return await async_pid("psycopg-async", conn)

    assert asyncio.run(pid()) == asyncio.run(pid())
    assert recycles == []
    asyncio.run(keeper.close())


@pytest.mark.parametrize("driver", ALL_FRONTS)
def test_frozen_past_the_server_lifetime_wakes_up_to_a_new_connection(
    driver, scaled_dsql, scaled_dsql_kwargs, recycles
):
    """A Lambda environment frozen past DSQL's connection limit: no timer ran, the server
    closed the connection; the next checkout notices without a round trip and reconnects."""
    threads = set(threading.enumerate())
    kwargs = {**scaled_dsql_kwargs, "policy": DSQL.replace(max_lifetime=None)}
    front = Front(driver, kwargs)
    try:
        first = front.pid()
        expired = scaled_dsql.stats.expired
        time.sleep(SERVER_LIFETIME + 0.3)  # the "freeze"
        assert scaled_dsql.stats.expired == expired + 1
        assert front.pid() != first
        assert recycles == ["readable"]
        started = {thread.name for thread in set(threading.enumerate()) - threads}
        # asyncio_N: the event loop's resolver thread, looking up the host name (a name, not an
        # address, for the TLS server name); asyncio's, not warmdb's.
        assert all(
            name.startswith(("warmdb-emulator", "warmdb-spawner", "asyncio_")) for name in started
        ), started
    finally:
        front.close()


@pytest.mark.parametrize("front", sorted(SYNC_WARM), indirect=True)
def test_close_inside_a_checkout_takes_effect_when_it_ends(front, recycles):
    """Regression: Keeper.close() from the thread holding the connection deadlocked."""
    keeper = front.keeper
    with keeper.connection() as conn:
        first = sync_pid(front.driver, conn)
        keeper.close()  # returns at once
        assert sync_pid(front.driver, conn) == first  # still the holder's until the end
    assert not keeper.is_connected
    assert front.pid() != first
    assert recycles == []  # closing on request is not a recycle


def test_async_close_inside_a_checkout_takes_effect_when_it_ends(dsql_kwargs):
    keeper = warmdb.psycopg.warm_async(**dsql_kwargs)

    async def main() -> tuple[int, int, bool]:
        async with keeper.connection() as conn:
            first = await async_pid("psycopg-async", conn)
            await keeper.close()
        connected = keeper.is_connected
        async with keeper.connection() as conn:
            second = await async_pid("psycopg-async", conn)
        await keeper.close()
        return first, second, connected

    # The whole run is bounded: a deadlock fails the test instead of hanging it.
    first, second, connected = asyncio.run(asyncio.wait_for(main(), timeout=10))
    assert second != first
    assert not connected
