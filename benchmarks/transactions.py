"""Benchmark: run_transaction and write_batches next to the same work written by hand.

Run: ``.venv/bin/python benchmarks/transactions.py [--ops 300] [--rounds 11] [--rows 30000]
[--workers 8] [--increments 200] [--hot-rows 2] [--only overhead,contention,ingest]``

Everything runs against one local DSQL emulator (``warmdb.emulator.serve``), in one run,
rounds interleaved; figures are medians and ratios.

1. ``overhead``: one transaction (an UPDATE of one row) with no conflict, through
   ``run_transaction`` on a plain connection next to a hand-written begin / UPDATE / commit
   on the same connection, per driver, paired and alternating; and run_transaction's own
   cost measured without I/O. Target (issue 11): at most 1.02x.
2. ``contention``: *workers* threads each increment one of *hot-rows* counters
   *increments* times (read, 1 ms of work, write: concurrent workers collide as on DSQL),
   each thread on its own psycopg2 connection. Budgets: aurora-dsql-python-connector's own
   ``run_transaction`` (its pool, ``retry=True``: ``OCCRetryConfig()``, 3 retries), warmdb
   with that same ``OCCRetryConfig()``, and warmdb's default; then warmdb's default through
   psycopg keepers, a SQLAlchemy engine and asyncpg. Reported: increments lost to an
   exhausted budget, conflicts, and whether the counters add up.
3. ``ingest``: *rows* rows (int, short text) per driver through ``write_batches`` (default
   batches of 2,500), a hand-written loop of 3,000-row transactions with the same ingest
   method, and one INSERT per row (autocommit) on a tenth of the rows. Target: write_batches
   at least 0.95x the hand-written loop.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import threading
import time

import psycopg
import psycopg2
import psycopg2.extras

import warmdb.asyncpg
import warmdb.psycopg
import warmdb.psycopg2
import warmdb.sqlalchemy
from warmdb.emulator import serve
from warmdb.transactions import (
    OCCRetryConfig,
    run_transaction,
    run_transaction_async,
    write_batches,
    write_batches_async,
)
from warmdb.transactions._batches import PSYCOPG2_PAGE_ROWS

_names = itertools.count()


def table(admin: psycopg.Connection, columns: str) -> str:
    name = f"bench_{next(_names)}"
    admin.execute(f"CREATE TABLE {name} ({columns})")
    return name


# 1. Overhead ------------------------------------------------------------------------------


def overhead(admin, kwargs, ops: int, rounds: int) -> None:
    """Paired: each round runs one transaction by hand and one through run_transaction, in
    alternating order, and keeps each one's time; the medians of those single transactions
    are compared, which a shared, busy machine disturbs least."""
    counters = table(admin, "id int PRIMARY KEY, n int")
    admin.execute(f"INSERT INTO {counters} VALUES (1, 0), (2, 0), (3, 0)")
    pg = warmdb.psycopg.connect(**kwargs)
    pg2 = warmdb.psycopg2.connect(**kwargs)
    loop = asyncio.new_event_loop()
    apg = loop.run_until_complete(warmdb.asyncpg.connect(**kwargs))
    update = f"UPDATE {counters} SET n = n + 1 WHERE id = "
    total = ops * rounds

    def pg_hand() -> None:
        pg.execute(update + "1")
        pg.commit()

    def pg_update(conn, attempt) -> None:
        conn.execute(update + "1")

    def pg2_hand() -> None:
        with pg2.cursor() as cur:
            cur.execute(update + "2")
        pg2.commit()

    def pg2_update(conn, attempt) -> None:
        with conn.cursor() as cur:
            cur.execute(update + "2")

    def paired(hand, warm) -> tuple[list[float], list[float]]:
        by_hand, warmdb_ = [], []
        for i in range(total):
            for run, times in ((hand, by_hand), (warm, warmdb_))[:: 1 if i % 2 else -1]:
                started = time.perf_counter()
                run()
                times.append(time.perf_counter() - started)
        return by_hand, warmdb_

    async def apg_update(conn, attempt) -> None:
        await conn.execute(update + "3")

    async def apg_paired() -> tuple[list[float], list[float]]:
        by_hand, warmdb_ = [], []
        for i in range(total):
            for which in (0, 1)[:: 1 if i % 2 else -1]:
                started = time.perf_counter()
                if which == 0:
                    async with apg.transaction():
                        await apg.execute(update + "3")
                    by_hand.append(time.perf_counter() - started)
                else:
                    await run_transaction_async(apg, apg_update)
                    warmdb_.append(time.perf_counter() - started)
        return by_hand, warmdb_

    results = {
        "psycopg": paired(pg_hand, lambda: run_transaction(pg, pg_update)),
        "psycopg2": paired(pg2_hand, lambda: run_transaction(pg2, pg2_update)),
        "asyncpg": loop.run_until_complete(apg_paired()),
    }
    pg.close()
    pg2.close()
    loop.run_until_complete(apg.close())
    loop.close()
    own = machinery_us()
    print(f"1. no-conflict transaction (one UPDATE), µs, medians of {total} paired transactions")
    fastest = float("inf")
    for driver, (by_hand, warm) in results.items():
        hand_us = statistics.median(by_hand) * 1e6
        warm_us = statistics.median(warm) * 1e6
        fastest = min(fastest, hand_us)
        print(
            f"  {driver:<9} by hand {hand_us:8.1f}   run_transaction {warm_us:8.1f}   "
            f"{warm_us / hand_us:.3f}x"
        )
    print(
        f"  run_transaction's own work, no I/O: {own:.2f} µs per transaction "
        f"= {1 + own / fastest:.4f}x the fastest hand-written transaction above"
    )


def machinery_us(ops: int = 50_000) -> float:
    """What run_transaction costs beyond the driver's begin / commit: on a stub connection
    whose adapter does no I/O, minus calling the callback directly."""
    from warmdb.drivers import SyncAdapter
    from warmdb.transactions import _conflict

    class Stub:
        pass

    class StubAdapter(SyncAdapter):
        name = "stub"
        family = "postgresql"
        driver_keys = frozenset()

        def begin(self, conn) -> None:
            pass

        def commit(self, conn) -> None:
            pass

    stub, adapter = Stub(), StubAdapter()
    _conflict._ADAPTERS[(Stub, False)] = adapter  # the registry knows no stub driver
    fn = lambda conn, attempt: None  # noqa: E731

    def direct() -> None:
        adapter.begin(stub)
        fn(stub, 1)
        adapter.commit(stub)

    results = []
    for run in (lambda: run_transaction(stub, fn), direct):
        started = time.perf_counter()
        for _ in range(ops):
            run()
        results.append((time.perf_counter() - started) / ops * 1e6)
    return results[0] - results[1]


# 2. Contention ----------------------------------------------------------------------------


def contention(admin, kwargs, dsql, workers: int, increments: int, hot_rows: int) -> None:
    budgets: dict[str, object] = {
        "aurora-dsql (its defaults)": "aurora",
        "warmdb, OCCRetryConfig()": OCCRetryConfig(),
        "warmdb, default": None,
    }
    print(
        f"2. contention: {workers} workers x {increments} increments on {hot_rows} hot row(s), "
        "psycopg2; conflicts as counted by the emulator"
    )
    for name, budget in budgets.items():
        if budget == "aurora":
            try:
                from aurora_dsql_psycopg2.pool import AuroraDSQLThreadedConnectionPool
            except ImportError:
                print(f"  {name}: aurora-dsql-python-connector is not installed")
                continue
            params = {**dsql.connection_params(token=False), "region": dsql.region}
            pool = AuroraDSQLThreadedConnectionPool(workers, workers, **params, retry=True)
            try:
                lost, total, conflicts, seconds = contend(
                    admin, dsql, workers, increments, hot_rows, aurora=pool
                )
            finally:
                pool.closeall()
        else:
            lost, total, conflicts, seconds = contend(
                admin, dsql, workers, increments, hot_rows, kwargs=kwargs, retry=budget
            )
        attempted = workers * increments
        print(
            f"  {name:<28} lost {lost:>4} of {attempted} ({lost / attempted:6.1%}), "
            f"counted {total}, conflicts {conflicts:>5}, {seconds:5.1f} s"
        )
        assert total == attempted - lost, "a committed increment went missing"
    for driver in ("psycopg", "sqlalchemy", "asyncpg"):
        lost, total, conflicts, seconds = contend(
            admin, dsql, workers, increments, hot_rows, kwargs=kwargs, driver=driver
        )
        name = f"warmdb, default, {driver}"
        print(
            f"  {name:<28} lost {lost:>4} of {workers * increments}, counted {total}, "
            f"conflicts {conflicts:>5}, {seconds:5.1f} s"
        )
        assert total == workers * increments - lost, "a committed increment went missing"


def contend(
    admin,
    dsql,
    workers,
    increments,
    hot_rows,
    *,
    aurora=None,
    kwargs=None,
    retry=None,
    driver="psycopg2",
) -> tuple[int, int, int, float]:
    """Run the workload once; return (increments lost, counted, conflicts, seconds).

    psycopg2: a connection per worker; psycopg: a ``warm()`` keeper per worker; sqlalchemy:
    one engine (psycopg2) for all; asyncpg: a connection per task, in one event loop.
    """
    counters = table(admin, "id int PRIMARY KEY, n int")
    admin.execute(f"INSERT INTO {counters} SELECT g, 0 FROM generate_series(0, {hot_rows - 1}) g")
    select = f"SELECT n FROM {counters} WHERE id = %s"
    update = f"UPDATE {counters} SET n = %s WHERE id = %s"
    lost = [0]
    lock = threading.Lock()
    engine = None
    if driver == "sqlalchemy":
        engine = warmdb.sqlalchemy.create_engine(driver="psycopg2", pool_size=workers, **kwargs)

    def work(worker: int) -> None:
        row = worker % hot_rows

        def increment(conn, attempt=1) -> None:
            if engine is not None:
                n = conn.exec_driver_sql(select, (row,)).scalar_one()
                time.sleep(0.001)
                conn.exec_driver_sql(update, (n + 1, row))
                return
            with conn.cursor() as cur:
                cur.execute(select, (row,))
                (n,) = cur.fetchone()
                time.sleep(0.001)  # the work between the read and the write
                cur.execute(update, (n + 1, row))

        if aurora is not None:
            target = aurora
        elif engine is not None:
            target = engine
        elif driver == "psycopg":
            target = warmdb.psycopg.warm(**kwargs)
        else:
            target = warmdb.psycopg2.connect(**kwargs)
        try:
            for _ in range(increments):
                try:
                    if aurora is not None:
                        aurora.run_transaction(increment)
                    else:
                        run_transaction(target, increment, retry=retry)
                except Exception:
                    with lock:
                        lost[0] += 1
        finally:
            if target is not aurora and target is not engine:
                target.close()

    async def work_async(worker: int) -> None:
        row = worker % hot_rows

        async def increment(conn, attempt) -> None:
            n = await conn.fetchval(select.replace("%s", "$1"), row)
            await asyncio.sleep(0.001)
            await conn.execute(update.replace("%s", "$1", 1).replace("%s", "$2"), n + 1, row)

        conn = await warmdb.asyncpg.connect(**kwargs)
        try:
            for _ in range(increments):
                try:
                    await run_transaction_async(conn, increment, retry=retry)
                except Exception:
                    lost[0] += 1
        finally:
            await conn.close()

    async def all_async() -> None:
        await asyncio.gather(*(work_async(w) for w in range(workers)))

    before = dsql.stats.occ_conflicts
    started = time.perf_counter()
    if driver == "asyncpg":
        asyncio.run(all_async())
    else:
        threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    seconds = time.perf_counter() - started
    if engine is not None:
        engine.dispose()
    (total,) = admin.execute(f"SELECT sum(n) FROM {counters}").fetchone()
    return lost[0], total, dsql.stats.occ_conflicts - before, seconds


# 3. Ingest --------------------------------------------------------------------------------


def ingest(admin, kwargs, total: int, rounds: int) -> None:
    def source(n: int):
        return ((i, f"row {i}") for i in range(n))

    pg = warmdb.psycopg.connect(**kwargs)
    pg2 = warmdb.psycopg2.connect(**kwargs)
    loop = asyncio.new_event_loop()
    apg = loop.run_until_complete(warmdb.asyncpg.connect(**kwargs))
    columns = "id int PRIMARY KEY, v text"

    def by_hand_sync(conn, write, name: str) -> None:
        rows = source(total)
        while batch := list(itertools.islice(rows, 3_000)):
            write(conn, name, batch)
            conn.commit()

    def pg_write(conn, name, batch) -> None:
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {name} (id, v) VALUES (%s, %s)", batch)

    def pg2_write(conn, name, batch) -> None:
        with conn.cursor() as cur:
            psycopg2.extras.execute_values(
                cur, f"INSERT INTO {name} (id, v) VALUES %s", batch, page_size=PSYCOPG2_PAGE_ROWS
            )

    async def apg_by_hand(name: str) -> None:
        rows = source(total)
        while batch := list(itertools.islice(rows, 3_000)):
            async with apg.transaction():
                await apg.executemany(f"INSERT INTO {name} (id, v) VALUES ($1, $2)", batch)

    def per_row_sync(conn, name: str, placeholders: str) -> None:
        conn.autocommit = True
        with conn.cursor() as cur:
            for row in source(total // 10):
                cur.execute(f"INSERT INTO {name} (id, v) VALUES ({placeholders})", row)
        conn.autocommit = False

    async def apg_per_row(name: str) -> None:
        for row in source(total // 10):
            await apg.execute(f"INSERT INTO {name} (id, v) VALUES ($1, $2)", *row)

    cases = {
        ("psycopg", "write_batches"): lambda n: write_batches(
            pg, f"INSERT INTO {n} (id, v) VALUES (%s, %s)", source(total)
        ),
        ("psycopg", "by hand, 3,000"): lambda n: by_hand_sync(pg, pg_write, n),
        ("psycopg", "one per row"): lambda n: per_row_sync(pg, n, "%s, %s"),
        ("psycopg2", "write_batches"): lambda n: write_batches(
            pg2, f"INSERT INTO {n} (id, v) VALUES (%s, %s)", source(total)
        ),
        ("psycopg2", "by hand, 3,000"): lambda n: by_hand_sync(pg2, pg2_write, n),
        ("psycopg2", "one per row"): lambda n: per_row_sync(pg2, n, "%s, %s"),
        ("asyncpg", "write_batches"): lambda n: loop.run_until_complete(
            write_batches_async(apg, f"INSERT INTO {n} (id, v) VALUES ($1, $2)", source(total))
        ),
        ("asyncpg", "by hand, 3,000"): lambda n: loop.run_until_complete(apg_by_hand(n)),
        ("asyncpg", "one per row"): lambda n: loop.run_until_complete(apg_per_row(n)),
    }
    samples: dict[tuple[str, str], list[float]] = {case: [] for case in cases}
    for _ in range(rounds):
        for case, run in cases.items():
            name = table(admin, columns)
            started = time.perf_counter()
            run(name)
            seconds = time.perf_counter() - started
            written = total // 10 if case[1] == "one per row" else total
            (present,) = admin.execute(f"SELECT count(*) FROM {name}").fetchone()
            assert present == written, (case, present, written)
            admin.execute(f"DROP TABLE {name}")
            samples[case].append(written / seconds)
    pg.close()
    pg2.close()
    loop.run_until_complete(apg.close())
    loop.close()
    print(f"3. ingest of {total} rows (one per row: {total // 10}), rows/s, median of {rounds}")
    for (driver, name), measured in samples.items():
        median = statistics.median(measured)
        base = statistics.median(samples[(driver, "by hand, 3,000")])
        print(f"  {driver:<9}{name:<16}{median:>10.0f}   {median / base:.3f}x by hand")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--increments", type=int, default=200)
    parser.add_argument("--hot-rows", type=int, default=2)
    parser.add_argument("--only", default="overhead,contention,ingest")
    args = parser.parse_args()
    parts = set(args.only.split(","))

    with serve() as dsql:
        os.environ["AWS_ACCESS_KEY_ID"] = dsql.credentials.access_key
        os.environ["AWS_SECRET_ACCESS_KEY"] = dsql.credentials.secret_key
        os.environ.pop("AWS_SESSION_TOKEN", None)
        kwargs = {
            # A name, not an address: TLS sends SNI only for a name, and DSQL requires it.
            "host": "localhost",
            "port": dsql.port,
            "auth": "dsql",
            "region": dsql.region,
            "user": "admin",
            "dbname": "postgres",
            "sslmode": "verify-full",
            "sslrootcert": str(dsql.ca_path),
        }
        with psycopg.connect(**dsql.connection_params(), autocommit=True) as admin:
            if "overhead" in parts:
                overhead(admin, kwargs, args.ops, args.rounds)
            if "contention" in parts:
                contention(admin, kwargs, dsql, args.workers, args.increments, args.hot_rows)
            if "ingest" in parts:
                ingest(admin, kwargs, args.rows, args.rounds)


if __name__ == "__main__":
    main()
