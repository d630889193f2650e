"""warm() keepers against real servers: long jobs on a fast-forwarded DSQL emulator, killed
backends, idle pings, broken work, event loops that change."""

from __future__ import annotations

import asyncio

import pytest

import warmdb.asyncpg
import warmdb.psycopg
import warmdb.psycopg2
from tests.integration.lifecycle import run_long_job, run_long_job_async

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
