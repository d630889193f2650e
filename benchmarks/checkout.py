"""Benchmark: what a warm() checkout costs when no ping is due, liveness check included.

Run: ``.venv/bin/python benchmarks/checkout.py [--checkouts 20000] [--rounds 7] [--json]``

Each keeper holds a real connection to a local PostgreSQL (Unix socket). One operation is a
whole ``with keeper.connection() as conn: pass`` (``async with`` for the async fronts): the
verdict, the socket readability poll, the transaction-status check on the way back. The
median over ``--rounds`` rounds of ``--checkouts`` operations is reported in microseconds,
next to a ``SELECT 1`` round trip on the same connection, interleaved in the same run.

Targets (issue 4): at most 5 µs for the sync fronts, 20 µs for the async ones.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import warmdb.asyncpg
import warmdb.psycopg
import warmdb.psycopg2
from warmdb.emulator.postgres import EmbeddedPostgres

TARGET_US = {"sync": 5.0, "async": 20.0}


def sync_checkout_us(keeper, checkouts: int) -> float:
    connection = keeper.connection
    started = time.perf_counter()
    for _ in range(checkouts):
        with connection():
            pass
    return (time.perf_counter() - started) / checkouts * 1e6


async def async_checkout_us(keeper, checkouts: int) -> float:
    connection = keeper.connection
    started = time.perf_counter()
    for _ in range(checkouts):
        async with connection():
            pass
    return (time.perf_counter() - started) / checkouts * 1e6


def sync_select_us(keeper, queries: int) -> float:
    with keeper.connection() as conn:
        if hasattr(conn, "execute"):
            run = conn.execute
        else:
            cursor = conn.cursor()
            run = cursor.execute
        started = time.perf_counter()
        for _ in range(queries):
            run("SELECT 1")
        elapsed = time.perf_counter() - started
        conn.rollback()
    return elapsed / queries * 1e6


async def async_select_us(keeper, queries: int) -> float:
    async with keeper.connection() as conn:
        started = time.perf_counter()
        for _ in range(queries):
            await conn.execute("SELECT 1")
        elapsed = time.perf_counter() - started
        if hasattr(conn, "rollback"):
            await conn.rollback()
    return elapsed / queries * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkouts", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    with EmbeddedPostgres() as pg:
        kwargs = {"host": str(pg.socket_dir), "port": pg.port, "user": pg.superuser}
        sync_keepers = {
            "psycopg2": warmdb.psycopg2.warm(**kwargs, dbname="postgres"),
            "psycopg": warmdb.psycopg.warm(**kwargs, dbname="postgres"),
        }
        async_keepers = {
            "asyncpg": warmdb.asyncpg.warm(**kwargs, database="postgres"),
            "psycopg-async": warmdb.psycopg.warm_async(**kwargs, dbname="postgres"),
        }
        loop = asyncio.new_event_loop()
        samples: dict[str, dict[str, list[float]]] = {
            name: {"checkout": [], "select": []} for name in [*sync_keepers, *async_keepers]
        }
        for _ in range(args.rounds):
            for name, keeper in sync_keepers.items():
                samples[name]["checkout"].append(sync_checkout_us(keeper, args.checkouts))
                samples[name]["select"].append(sync_select_us(keeper, args.checkouts // 10))
            for name, keeper in async_keepers.items():
                samples[name]["checkout"].append(
                    loop.run_until_complete(async_checkout_us(keeper, args.checkouts))
                )
                samples[name]["select"].append(
                    loop.run_until_complete(async_select_us(keeper, args.checkouts // 10))
                )
        for keeper in sync_keepers.values():
            keeper.close()
        for keeper in async_keepers.values():
            loop.run_until_complete(keeper.close())
        loop.close()

    results = {}
    for name, measured in samples.items():
        kind = "async" if name in async_keepers else "sync"
        checkout = statistics.median(measured["checkout"])
        select = statistics.median(measured["select"])
        results[name] = {
            "checkout_us": round(checkout, 2),
            "select_1_us": round(select, 1),
            "checkout_per_select": round(checkout / select, 3),
            "target_us": TARGET_US[kind],
            "met": checkout <= TARGET_US[kind],
        }
    if args.json:
        print(json.dumps(results))
        return
    print(f"warm() checkout+checkin, no ping due; median of {args.rounds} rounds")
    print(f"{'front':<15}{'checkout µs':>12}{'SELECT 1 µs':>13}{'ratio':>8}{'target':>9}")
    for name, row in results.items():
        missed = "" if row["met"] else "  (missed)"
        print(
            f"{name:<15}{row['checkout_us']:>12.2f}{row['select_1_us']:>13.1f}"
            f"{row['checkout_per_select']:>8.3f}{row['target_us']:>8.0f}{missed}"
        )


if __name__ == "__main__":
    main()
