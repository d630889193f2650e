"""warmdb's pools (psycopg sync and async, asyncpg) against a fast-forwarded DSQL emulator:
long jobs, killed backends, connections the server closed while idle, pings only after idle,
and the minimum size opened under the rate governor.

Every scenario is written once, as a coroutine over :class:`PoolFace`, and run for each pool.
Where a scenario waits "between invocations" it blocks the thread with ``time.sleep``: an
event loop that does not run is what a frozen Lambda environment looks like, and it leaves
the server's goodbye unread in the socket, for warmdb's checkout check to find.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg.pool
import psycopg
import pytest

import warmdb.asyncpg
import warmdb.psycopg
from tests.integration.lifecycle import SCALED_POLICY, run_long_job_async
from warmdb import events
from warmdb.governor import limit_connect_rate

PID = "SELECT pg_backend_pid()"
POOLS = ["psycopg", "psycopg-async", "asyncpg"]


class PoolFace:
    """One warmdb pool behind the same async methods, whatever the driver."""

    def __init__(self, kind: str, kwargs: dict[str, object]) -> None:
        self.kind = kind
        self.kwargs = kwargs
        self.pool = None

    async def __aenter__(self) -> PoolFace:
        if self.kind == "psycopg":
            self.pool = warmdb.psycopg.pool(open=False, **self.kwargs)
            self.pool.open(wait=True, timeout=10)
        elif self.kind == "psycopg-async":
            self.pool = warmdb.psycopg.pool_async(open=False, **self.kwargs)
            await self.pool.open(wait=True, timeout=10)
        else:
            self.pool = await warmdb.asyncpg.create_pool(**self.kwargs)
        return self

    async def __aexit__(self, *exc_info) -> None:
        if self.kind == "psycopg":
            self.pool.close()
        else:
            await self.pool.close()

    async def pid(self) -> int:
        """Check a connection out, return its backend's pid."""
        if self.kind == "psycopg":
            with self.pool.connection() as conn:
                return conn.execute(PID).fetchone()[0]
        if self.kind == "psycopg-async":
            async with self.pool.connection() as conn:
                cur = await conn.execute(PID)
                return (await cur.fetchone())[0]
        async with self.pool.acquire() as conn:
            return await conn.fetchval(PID)

    async def checkout_queries(self, dsql) -> int:
        """Check a connection out and in; return the queries the server got during checkout."""
        before = dsql.stats.queries
        if self.kind == "psycopg":
            with self.pool.connection():
                return dsql.stats.queries - before
        if self.kind == "psycopg-async":
            async with self.pool.connection():
                return dsql.stats.queries - before
        async with self.pool.acquire():
            return dsql.stats.queries - before


class Recorder(events.Listener):
    """Collects when connects were dialled (after any governor wait) and recycle events while
    registered."""

    def __init__(self) -> None:
        self.dialled_at: list[float] = []
        self.recycles: list[events.RecycleEvent] = []

    def on_connect(self, event: events.ConnectEvent) -> None:
        # The successful attempt started connect_seconds ago: when the governor let it dial.
        self.dialled_at.append(time.monotonic() - event.connect_seconds)

    def on_recycle(self, event: events.RecycleEvent) -> None:
        self.recycles.append(event)

    def reasons(self) -> list[str]:
        return [event.reason for event in self.recycles]


@pytest.fixture
def recorder():
    recorder = Recorder()
    events.add_listener(recorder)
    yield recorder
    events.remove_listener(recorder)


def terminate_backend(dsql, pid: int) -> None:
    """End a backend from the upstream server's side, as an operator or a failover would."""
    with psycopg.connect(**dsql.upstream.libpq_params(), autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0]


def wait_for_open_connections(dsql, count: int) -> None:
    """Block (no event loop runs) until the emulator has *count* client connections open."""
    deadline = time.monotonic() + 5
    while dsql.stats.current != count:
        assert time.monotonic() < deadline, f"{dsql.stats.current} connections open"
        time.sleep(0.01)
    time.sleep(0.05)  # the emulator's goodbye reaches the client's socket


@pytest.mark.parametrize("kind", POOLS)
def test_long_job(kind, scaled_dsql, scaled_dsql_kwargs):
    """Five server lifetimes and more token expiries, two connections in turn: no error, no
    connection cut by the server, no expired token sent."""

    async def main() -> None:
        async with PoolFace(kind, {**scaled_dsql_kwargs, "min_size": 2, "max_size": 2}) as face:
            await run_long_job_async(face.pid, scaled_dsql)

    asyncio.run(main())


@pytest.mark.parametrize("poll_after_idle", [SCALED_POLICY.poll_after_idle, 0])
@pytest.mark.parametrize("kind", POOLS)
def test_backend_killed_between_checkouts(
    kind, poll_after_idle, scaled_dsql, scaled_dsql_kwargs, recorder
):
    """The socket is polled once the connection has been idle poll_after_idle (the default
    0.5 s, like HikariCP's bypass window), or at every checkout with 0."""
    policy = SCALED_POLICY.replace(poll_after_idle=poll_after_idle)
    kwargs = {**scaled_dsql_kwargs, "policy": policy, "min_size": 1, "max_size": 1}

    async def main() -> None:
        async with PoolFace(kind, kwargs) as face:
            first = await face.pid()
            given_back = time.monotonic()
            terminate_backend(scaled_dsql, first)
            wait_for_open_connections(scaled_dsql, 0)
            time.sleep(max(0.0, given_back + poll_after_idle - time.monotonic()))
            second = await face.pid()  # no error: the dead connection was replaced
            assert second != first
            assert await face.pid() == second

    asyncio.run(main())
    assert recorder.reasons() == ["readable"]


@pytest.mark.parametrize("kind", POOLS)
def test_connection_closed_by_server_while_idle_is_replaced(
    kind, scaled_dsql, scaled_dsql_kwargs, recorder
):
    """No lifetime of our own: the server cuts the idle connection at its limit and leaves a
    readable socket, which the next checkout replaces without a round trip."""
    policy = SCALED_POLICY.replace(max_lifetime=None, ping_after_idle=None)
    kwargs = {**scaled_dsql_kwargs, "policy": policy, "min_size": 1, "max_size": 1}

    async def main() -> None:
        async with PoolFace(kind, kwargs) as face:
            first = await face.pid()
            before = scaled_dsql.stats.expired
            wait_for_open_connections(scaled_dsql, 0)  # the server's 1.5 s limit
            assert scaled_dsql.stats.expired == before + 1
            assert await face.pid() != first

    asyncio.run(main())
    assert recorder.reasons() == ["readable"]
    assert recorder.recycles[0].idle >= 1.0


@pytest.mark.parametrize("kind", POOLS)
def test_ping_only_after_idle(kind, scaled_dsql, scaled_dsql_kwargs, recorder):
    policy = SCALED_POLICY.replace(ping_after_idle=0.3)
    kwargs = {**scaled_dsql_kwargs, "policy": policy, "min_size": 1, "max_size": 1}

    async def main() -> list[int]:
        async with PoolFace(kind, kwargs) as face:
            hot = [await face.checkout_queries(scaled_dsql) for _ in range(3)]
            await asyncio.sleep(0.4)
            after_idle = await face.checkout_queries(scaled_dsql)
            again = await face.checkout_queries(scaled_dsql)
            return [*hot, after_idle, again]

    # One round trip, the ping, and only after the idle time; the lifetime (about 1.3 s) is
    # not reached, so nothing is replaced.
    assert asyncio.run(main()) == [0, 0, 0, 1, 0]
    assert recorder.recycles == []


@pytest.mark.parametrize("kind", POOLS)
def test_min_size_opened_under_the_governor(kind, scaled_dsql, scaled_dsql_kwargs, recorder):
    rate, size = 8.0, 4
    accepted_before = scaled_dsql.stats.accepted
    limit_connect_rate(rate, burst=1)
    try:

        async def main() -> None:
            kwargs = {**scaled_dsql_kwargs, "min_size": size, "max_size": size}
            async with PoolFace(kind, kwargs) as face:
                await face.pid()

        asyncio.run(main())
    finally:
        limit_connect_rate(None)
    assert scaled_dsql.stats.accepted - accepted_before == size
    times = sorted(recorder.dialled_at)
    assert len(times) == size
    # One dial at once (burst 1), then one per 1/rate seconds, even though the pools open
    # their connections concurrently (psycopg_pool's workers, asyncpg's gather). Dial times,
    # not completion times: a slow TLS handshake must not make the spacing look short.
    for index, at in enumerate(times):
        assert at - times[0] >= index / rate - 0.05, times


@pytest.mark.parametrize("kind", ["psycopg", "psycopg-async"])
def test_connections_psycopg_pool_closes_itself_are_reported(kind, scaled_dsql, scaled_dsql_kwargs):
    """Regression: psycopg_pool shrinks idle connections above min_size on its own, and no
    RecycleEvent was sent for them."""
    policy = SCALED_POLICY.replace(max_idle=0.3, max_lifetime=None)
    kwargs = {**scaled_dsql_kwargs, "policy": policy, "min_size": 1, "max_size": 2}

    async def main(recorder: Recorder) -> None:
        async with PoolFace(kind, kwargs) as face:
            pool = face.pool
            if kind == "psycopg":
                first, second = pool.getconn(), pool.getconn()
                pool.putconn(first)
                pool.putconn(second)
            else:
                first, second = await pool.getconn(), await pool.getconn()
                await pool.putconn(first)
                await pool.putconn(second)
            deadline = time.monotonic() + 5
            while "idle" not in recorder.reasons() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)

    recorder = Recorder()
    events.add_listener(recorder)
    try:
        asyncio.run(main(recorder))
    finally:
        events.remove_listener(recorder)
    assert "idle" in recorder.reasons()


def test_psycopg_pool_timeout_and_closed_are_warmdb_errors(scaled_dsql_kwargs):
    import psycopg_pool

    pool = warmdb.psycopg.pool(open=True, min_size=1, max_size=1, timeout=0.2, **scaled_dsql_kwargs)
    try:
        with pool.connection(), pytest.raises(warmdb.PoolTimeout) as timed_out:
            pool.getconn()
        assert isinstance(timed_out.value, psycopg_pool.PoolTimeout)
        assert isinstance(timed_out.value, TimeoutError)
    finally:
        pool.close()
    with pytest.raises(warmdb.PoolClosed) as closed:
        pool.getconn()
    assert isinstance(closed.value, psycopg_pool.PoolClosed)


def test_asyncpg_pool_timeout_closed_and_timers(scaled_dsql_kwargs):
    """Regression: WarmPool's lifetime timers outlived close(), keeping the pool alive."""

    async def main():
        pool = await warmdb.asyncpg.create_pool(min_size=1, max_size=1, **scaled_dsql_kwargs)
        timers = list(pool._timers)
        assert timers  # one per connection with a lifetime
        async with pool.acquire():
            with pytest.raises(warmdb.PoolTimeout) as timed_out:
                await pool.acquire(timeout=0.2)
            assert isinstance(timed_out.value, asyncio.TimeoutError)
        await pool.close()
        assert all(handle.cancelled() for handle in timers)
        assert not pool._timers
        with pytest.raises(warmdb.PoolClosed):
            await pool.acquire()

    asyncio.run(main())


def test_pools_run_transaction_like_the_official_connector(scaled_dsql, scaled_dsql_kwargs):
    """``pool.run_transaction(callback, retry=...)`` on every warmdb pool, callbacks taking
    the connection only, as aurora-dsql-python-connector's pools do."""
    import warmdb.psycopg2

    kwargs = {**scaled_dsql_kwargs, "policy": SCALED_POLICY.replace(max_lifetime=None)}
    retry = warmdb.OCCRetryConfig(max_retries=5)

    def sync_value(conn) -> int:
        cur = conn.cursor()
        cur.execute("SELECT 41 + 1")
        return cur.fetchone()[0]

    psycopg2_pool = warmdb.psycopg2.pool(min_size=1, max_size=1, retry=retry, **kwargs)
    try:
        assert psycopg2_pool.retry is retry
        assert psycopg2_pool.run_transaction(sync_value) == 42
    finally:
        psycopg2_pool.close()
    with warmdb.psycopg.pool(min_size=1, max_size=1, open=True, **kwargs) as psycopg_pool:
        assert psycopg_pool.run_transaction(sync_value, retry=retry) == 42

    async def main() -> list[int]:
        async def async_value(conn) -> int:
            if isinstance(conn, asyncpg.pool.PoolConnectionProxy):
                return await conn.fetchval("SELECT 42")
            cur = await conn.execute("SELECT 42")
            return (await cur.fetchone())[0]

        results = []
        async with warmdb.psycopg.pool_async(min_size=1, max_size=1, open=False, **kwargs) as pool:
            results.append(await pool.run_transaction(async_value))
        pool = await warmdb.asyncpg.create_pool(min_size=1, max_size=1, retry=retry, **kwargs)
        try:
            results.append(await pool.run_transaction(async_value))
        finally:
            await pool.close()
        return results

    assert asyncio.run(main()) == [42, 42]
