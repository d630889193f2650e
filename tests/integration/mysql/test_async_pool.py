"""warmdb.aiomysql.pool(): the asyncio pool's own rules, against the MySQL emulator.

The checks at checkout (killed backends, lifetimes, idle timeouts, seeds 003 and 004) run for
this pool with the other fronts in test_lifecycle.py and test_seeds.py.
"""

from __future__ import annotations

import asyncio

import pytest

import warmdb
import warmdb.aiomysql
from warmdb import events


@pytest.fixture(autouse=True)
def fresh_counts():
    events.reset_counts()
    yield
    events.reset_counts()


async def connection_id(conn) -> int:
    async with conn.cursor() as cursor:
        await cursor.execute("SELECT CONNECTION_ID()")
        (value,) = await cursor.fetchone()
    return int(value)


def test_opens_min_size_reuses_most_recent_and_closes_extras(rds, rds_kwargs):
    async def main() -> None:
        async with warmdb.aiomysql.pool(**rds_kwargs, min_size=2, max_size=3) as pool:
            assert rds.stats.current >= 2
            assert pool.checked_out == 0
            async with pool.connection() as a, pool.connection() as b, pool.connection() as c:
                ids = {await connection_id(conn) for conn in (a, b, c)}
                assert len(ids) == 3
                assert pool.checked_out == 3
            # The third came back with nobody waiting and the pool above min_size: closed.
            assert pool._size == 2
            # Most recent first: the connection given back last is handed out again.
            conn = await pool.getconn()
            again = await connection_id(conn)
            await pool.putconn(conn)
            assert (await connection_id(await pool.getconn())) == again

    asyncio.run(main())


def test_timeout_waiters_close_and_misuse(rds, rds_kwargs):
    async def main() -> None:
        pool = await warmdb.aiomysql.pool(**rds_kwargs, min_size=1, max_size=1, timeout=0.2)
        held = await pool.getconn()
        with pytest.raises(warmdb.PoolTimeout, match="max_size=1") as caught:
            await pool.getconn()
        assert isinstance(caught.value, TimeoutError)

        # A waiting checkout gets the connection as soon as it comes back.
        waiting = asyncio.ensure_future(pool.getconn())
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await pool.putconn(held)
        handed = await asyncio.wait_for(waiting, 1)
        assert handed is held

        # A cancelled waiter loses nothing: the connection goes to the next checkout.
        cancelled = asyncio.ensure_future(pool.getconn())
        await asyncio.sleep(0.05)
        cancelled.cancel()
        await pool.putconn(handed)
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert (await pool.getconn()) is held

        with pytest.raises(warmdb.UsageError, match="not checked out"):
            await pool.putconn(object())
        await pool.close()
        with pytest.raises(warmdb.PoolClosed):
            await pool.getconn()
        # Given back after close: closed, not kept.
        await pool.putconn(held)
        assert held.closed

    asyncio.run(main())


def test_close_wakes_waiters_with_pool_closed(rds, rds_kwargs):
    async def main() -> None:
        pool = await warmdb.aiomysql.pool(**rds_kwargs, min_size=1, max_size=1, timeout=5)
        held = await pool.getconn()
        waiting = asyncio.ensure_future(pool.getconn())
        await asyncio.sleep(0.05)
        await pool.close()
        with pytest.raises(warmdb.PoolClosed):
            await asyncio.wait_for(waiting, 1)
        await pool.putconn(held)

    asyncio.run(main())


def test_a_broken_connection_frees_its_slot_and_is_reported(rds, rds_kwargs):
    async def main() -> None:
        async with warmdb.aiomysql.pool(**rds_kwargs, min_size=1, max_size=1) as pool:

            async def break_it() -> None:
                async with pool.connection() as conn:
                    conn.close()  # the driver's connection dies in the caller's hands
                    raise ZeroDivisionError

            with pytest.raises(ZeroDivisionError):
                await break_it()
            assert pool.checked_out == 0
            async with pool.connection() as fresh:
                assert not fresh.closed
                assert await connection_id(fresh) > 0
        assert events.counts().get("recycles.broken") == 1

    asyncio.run(main())


def test_bad_arguments_are_refused_before_any_connect():
    with pytest.raises(warmdb.ConfigurationError, match="max_size"):
        warmdb.aiomysql.pool(host="db.internal", password="pw", min_size=3, max_size=2)
    with pytest.raises(warmdb.ConfigurationError, match="timeout"):
        warmdb.aiomysql.pool(host="db.internal", password="pw", timeout=0)
    with pytest.raises(warmdb.ConfigurationError, match="did you mean 'charset'"):
        warmdb.aiomysql.pool(host="db.internal", password="pw", charst="utf8mb4")


def test_run_transaction(rds, rds_kwargs):
    async def main() -> None:
        async with warmdb.aiomysql.pool(**rds_kwargs, max_size=2) as pool:

            async def work(conn) -> int:
                return await connection_id(conn)

            assert await pool.run_transaction(work) > 0

    asyncio.run(main())
