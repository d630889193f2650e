"""One way to open, query and close a connection through each warmdb driver module.

Integration tests are parametrized over :data:`DRIVERS` so every behaviour is proven once for
psycopg (sync and async), psycopg2 and asyncpg.
"""

from __future__ import annotations

import asyncio

import asyncpg
import psycopg
import psycopg2.extensions

import warmdb.asyncpg
import warmdb.psycopg
import warmdb.psycopg2

DRIVERS = ["psycopg", "psycopg-async", "psycopg2", "asyncpg"]

#: Who we are and whether the session is encrypted, as the server sees it.
WHOAMI = "SELECT current_user::text, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


def connect_and_query(driver: str, dsn: str | None = None, **kwargs) -> tuple[str, bool]:
    """Connect through warmdb, check the connection is the driver's own type, run WHOAMI."""
    if driver == "psycopg2":
        conn = warmdb.psycopg2.connect(dsn, **kwargs)
        try:
            assert type(conn) is psycopg2.extensions.connection
            with conn.cursor() as cur:
                cur.execute(WHOAMI)
                return cur.fetchone()
        finally:
            conn.close()
    if driver == "psycopg":
        with warmdb.psycopg.connect(dsn or "", **kwargs) as conn:
            assert type(conn) is psycopg.Connection
            return conn.execute(WHOAMI).fetchone()
    if driver == "psycopg-async":

        async def run_psycopg_async():
            conn = await warmdb.psycopg.connect_async(dsn or "", **kwargs)
            async with conn:
                assert type(conn) is psycopg.AsyncConnection
                cur = await conn.execute(WHOAMI)
                return await cur.fetchone()

        return asyncio.run(run_psycopg_async())
    if driver == "asyncpg":

        async def run_asyncpg():
            conn = await warmdb.asyncpg.connect(dsn, **kwargs)
            try:
                assert type(conn) is asyncpg.Connection
                row = await conn.fetchrow(WHOAMI)
                return tuple(row)
            finally:
                await conn.close()

        return asyncio.run(run_asyncpg())
    raise AssertionError(f"unknown driver {driver}")
