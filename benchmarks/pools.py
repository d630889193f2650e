"""Benchmark: pool acquire + release, warmdb's pools next to the pools they are built on.

Run: ``.venv/bin/python benchmarks/pools.py [--ops 20000] [--rounds 7] [--poll-after-idle S]``

Every pool holds one open connection to a local emulator and is measured in the same run,
rounds interleaved: one operation is a checkout and its return, no query, no ping due. Pairs:

- ``warmdb.psycopg.pool`` vs ``psycopg_pool.ConnectionPool`` (what it is built on);
- ``warmdb.asyncpg.create_pool`` vs ``asyncpg.create_pool``;
- ``warmdb.psycopg2.pool`` vs SQLAlchemy's ``QueuePool`` (what it is built on);
- ``warmdb.pymysql.pool`` vs SQLAlchemy's ``QueuePool`` of PyMySQL connections, and
  ``warmdb.aiomysql.pool`` (warmdb's own asyncio pool) vs ``aiomysql.create_pool``, against a
  local MySQL emulator (``warmdb.emulator.mysql.serve``);
- aurora-dsql-python-connector's psycopg and psycopg2 pools where it is installed (its
  asyncpg pool cannot reach a loopback endpoint: it turns any host without ``.dsql`` into a
  cluster id).

Target (issue 4): warmdb's acquire/release at most 1.2x the underlying pool's.

warmdb's pools run with the DSQL preset, whose ``poll_after_idle`` (0.5 s) skips the socket
poll for connections given back moments ago, as every checkout here is; ``--poll-after-idle 0``
measures them polling at every checkout instead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

import aiomysql
import asyncpg
import psycopg2
import psycopg_pool
import pymysql
from sqlalchemy.pool import QueuePool

import warmdb.aiomysql
import warmdb.asyncpg
import warmdb.psycopg
import warmdb.psycopg2
import warmdb.pymysql
from warmdb._tls import ssl_context
from warmdb.emulator import serve
from warmdb.emulator.mysql import serve as serve_mysql
from warmdb.policy import DSQL, RDS


def sync_us(pool_connection, ops: int) -> float:
    started = time.perf_counter()
    for _ in range(ops):
        with pool_connection():
            pass
    return (time.perf_counter() - started) / ops * 1e6


def getconn_us(getconn, putconn, ops: int) -> float:
    started = time.perf_counter()
    for _ in range(ops):
        putconn(getconn())
    return (time.perf_counter() - started) / ops * 1e6


async def async_us(acquire, ops: int) -> float:
    started = time.perf_counter()
    for _ in range(ops):
        async with acquire():
            pass
    return (time.perf_counter() - started) / ops * 1e6


def queue_pool_us(pool: QueuePool, ops: int) -> float:
    started = time.perf_counter()
    for _ in range(ops):
        pool.connect().close()
    return (time.perf_counter() - started) / ops * 1e6


def aurora_pools(dsql, libpq: dict[str, str]) -> dict[str, object]:
    """aurora-dsql-python-connector's pools on the emulator, or a reason they are missing."""
    try:
        from aurora_dsql_psycopg import AuroraDSQLPool
        from aurora_dsql_psycopg.connection_class import DSQLConnection
        from aurora_dsql_psycopg2.pool import AuroraDSQLThreadedConnectionPool
    except ImportError as exc:
        return {"missing": f"aurora-dsql-python-connector not installed ({exc})"}
    # It signs for the host name and connects to hostaddr, as libpq allows.
    params = {**libpq, "host": dsql.hostname, "region": dsql.region}
    psycopg_pool_ = AuroraDSQLPool(
        connection_class=DSQLConnection, kwargs=params, min_size=1, max_size=1, open=True
    )
    psycopg_pool_.wait()
    psycopg2_pool = AuroraDSQLThreadedConnectionPool(1, 1, **params)
    return {"psycopg": psycopg_pool_, "psycopg2": psycopg2_pool}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--poll-after-idle",
        type=float,
        default=DSQL.poll_after_idle,
        help="the policy's poll_after_idle for warmdb's pools (0: poll at every checkout)",
    )
    args = parser.parse_args()

    with serve() as dsql, serve_mysql(credentials=dsql.credentials) as rds:
        os.environ["AWS_ACCESS_KEY_ID"] = dsql.credentials.access_key
        os.environ["AWS_SECRET_ACCESS_KEY"] = dsql.credentials.secret_key
        os.environ.pop("AWS_SESSION_TOKEN", None)
        warm_kwargs = {
            "host": "localhost",
            "port": dsql.port,
            "auth": "dsql",
            "region": dsql.region,
            "sslmode": "verify-full",
            "sslrootcert": str(dsql.ca_path),
            "policy": DSQL.replace(poll_after_idle=args.poll_after_idle),
        }
        libpq = dsql.connection_params(token=False)
        token = dsql.token(host="localhost")
        loop = asyncio.new_event_loop()

        bare_psycopg = psycopg_pool.ConnectionPool(
            kwargs={**libpq, "password": dsql.token()}, min_size=1, max_size=1, open=True
        )
        bare_psycopg.wait()
        warm_psycopg = warmdb.psycopg.pool(**warm_kwargs, min_size=1, max_size=1)
        warm_psycopg.wait()

        async def asyncpg_pools() -> tuple[asyncpg.Pool, asyncpg.Pool]:
            # Made inside the loop: asyncpg's pools belong to the loop that creates them.
            bare = await asyncpg.create_pool(
                host="localhost",
                port=dsql.port,
                user="admin",
                database="postgres",
                password=token,
                ssl=ssl_context("verify-full", str(dsql.ca_path)),
                min_size=1,
                max_size=1,
            )
            warm = await warmdb.asyncpg.create_pool(**warm_kwargs, min_size=1, max_size=1)
            return bare, warm

        bare_asyncpg, warm_asyncpg = loop.run_until_complete(asyncpg_pools())
        password = dsql.token()
        queue_pool = QueuePool(
            lambda: psycopg2.connect(**libpq, password=password), pool_size=1, max_overflow=0
        )
        warm_psycopg2 = warmdb.psycopg2.pool(**warm_kwargs, min_size=1, max_size=1)
        aurora = aurora_pools(dsql, libpq)

        mysql_kwargs = {
            "host": rds.host,
            "port": rds.port,
            "user": "admin",
            "auth": "rds",
            "region": rds.region,
            "ssl_mode": "VERIFY_CA",
            "ssl_ca": str(rds.ca_path),
            "policy": RDS.replace(poll_after_idle=args.poll_after_idle),
        }
        pymysql_params = rds.connection_params()
        # As with psycopg2, the base is QueuePool as configured by default: it rolls back on
        # return, which for PyMySQL is a round trip (psycopg2 knows its transaction state and
        # skips it); warmdb reads the server's status flag instead. The same pool without any
        # reset (which would leave a transaction open) is the stricter comparison.
        pymysql_queue = QueuePool(
            lambda: pymysql.connect(**pymysql_params), pool_size=1, max_overflow=0
        )
        pymysql_bare = QueuePool(
            lambda: pymysql.connect(**pymysql_params),
            pool_size=1,
            max_overflow=0,
            reset_on_return=None,
        )
        warm_pymysql = warmdb.pymysql.pool(**mysql_kwargs, min_size=1, max_size=1)

        async def aiomysql_pools() -> tuple[aiomysql.Pool, warmdb.aiomysql.AsyncConnectionPool]:
            params = {**rds.connection_params(), "ssl": rds.ssl_context()}
            bare = await aiomysql.create_pool(minsize=1, maxsize=1, **params)
            warm = await warmdb.aiomysql.pool(**mysql_kwargs, min_size=1, max_size=1)
            return bare, warm

        bare_aiomysql, warm_aiomysql = loop.run_until_complete(aiomysql_pools())

        cases = {
            ("psycopg", "psycopg_pool"): lambda: sync_us(bare_psycopg.connection, args.ops),
            ("psycopg", "warmdb"): lambda: sync_us(warm_psycopg.connection, args.ops),
            ("asyncpg", "asyncpg.Pool"): lambda: loop.run_until_complete(
                async_us(bare_asyncpg.acquire, args.ops)
            ),
            ("asyncpg", "warmdb"): lambda: loop.run_until_complete(
                async_us(warm_asyncpg.acquire, args.ops)
            ),
            ("psycopg2", "QueuePool"): lambda: queue_pool_us(queue_pool, args.ops),
            ("psycopg2", "warmdb"): lambda: sync_us(warm_psycopg2.connection, args.ops),
            ("pymysql", "QueuePool"): lambda: queue_pool_us(pymysql_queue, args.ops),
            ("pymysql", "no reset"): lambda: queue_pool_us(pymysql_bare, args.ops),
            ("pymysql", "warmdb"): lambda: sync_us(warm_pymysql.connection, args.ops),
            ("aiomysql", "aiomysql.Pool"): lambda: loop.run_until_complete(
                async_us(bare_aiomysql.acquire, args.ops)
            ),
            ("aiomysql", "warmdb"): lambda: loop.run_until_complete(
                async_us(warm_aiomysql.connection, args.ops)
            ),
        }
        if "missing" not in aurora:
            aurora_psycopg, aurora_psycopg2 = aurora["psycopg"], aurora["psycopg2"]
            cases[("psycopg", "aurora-dsql")] = lambda: sync_us(aurora_psycopg.connection, args.ops)
            cases[("psycopg2", "aurora-dsql")] = lambda: getconn_us(
                aurora_psycopg2.getconn, aurora_psycopg2.putconn, args.ops
            )
        samples: dict[tuple[str, str], list[float]] = {case: [] for case in cases}
        for _ in range(args.rounds):
            for case, run in cases.items():
                samples[case].append(run())

        for closing in (bare_psycopg, warm_psycopg, warm_psycopg2, warm_pymysql):
            closing.close()
        queue_pool.dispose()
        pymysql_queue.dispose()
        pymysql_bare.dispose()
        bare_aiomysql.close()
        loop.run_until_complete(bare_aiomysql.wait_closed())
        loop.run_until_complete(warm_aiomysql.close())
        loop.run_until_complete(bare_asyncpg.close())
        loop.run_until_complete(warm_asyncpg.close())
        if "missing" not in aurora:
            aurora["psycopg"].close()
            aurora["psycopg2"].closeall()
        loop.close()

    print(
        f"pool acquire + release, µs, median of {args.rounds} rounds x {args.ops}; "
        f"warmdb's poll_after_idle={args.poll_after_idle:g} s"
    )
    baselines = {
        "psycopg": "psycopg_pool",
        "asyncpg": "asyncpg.Pool",
        "psycopg2": "QueuePool",
        "pymysql": "QueuePool",
        "aiomysql": "aiomysql.Pool",
    }
    for (driver, name), measured in samples.items():
        median = statistics.median(measured)
        base = statistics.median(samples[(driver, baselines[driver])])
        print(f"  {driver:<9}{name:<14}{median:>8.2f}   {median / base:.2f}x {baselines[driver]}")
    if "missing" in aurora:
        print(f"  aurora-dsql-python-connector: {aurora['missing']}")


if __name__ == "__main__":
    main()
