"""run_transaction and write_batches against the DSQL emulator, with the real drivers.

Conflicts are real: the emulator runs every transaction at REPEATABLE READ and reports a lost
race as DSQL does (40001, ``OC000 ...``); a second emulator also injects them at COMMIT.
The counter workload reads, pauses, then writes, so concurrent workers do collide.
"""

from __future__ import annotations

import asyncio
import threading
import time

import psycopg
import psycopg2.extensions
import pytest
import sqlalchemy
import sqlalchemy.exc
import sqlalchemy.orm

import warmdb.asyncpg
import warmdb.psycopg
import warmdb.psycopg2
import warmdb.sqlalchemy
from tests.integration.emulator.conftest import emulator
from tests.integration.lifecycle import warmdb_kwargs
from warmdb.errors import BatchWriteError, ConflictError
from warmdb.retry import Backoff
from warmdb.transactions import (
    OCCRetryConfig,
    run_transaction,
    run_transaction_async,
    write_batches,
    write_batches_async,
)

WORKERS = 8
INCREMENTS = 20
#: Fast retries for the tests: contention, not waiting, is what they prove.
QUICK = Backoff(initial=0.002, maximum=0.05, timeout=60.0, max_retries=200)

_tables = iter(range(1_000_000))


@pytest.fixture
def admin(dsql_emulator):
    with psycopg.connect(**dsql_emulator.connection_params(), autocommit=True) as conn:
        yield conn


@pytest.fixture
def kwargs(dsql_emulator, monkeypatch):
    return warmdb_kwargs(dsql_emulator, monkeypatch)


def new_table(admin: psycopg.Connection, columns: str) -> str:
    name = f"tx_{next(_tables)}_{int(time.time() * 1000) % 100000}"
    admin.execute(f"CREATE TABLE {name} ({columns})")
    return name


def counter(admin: psycopg.Connection) -> str:
    name = new_table(admin, "id int PRIMARY KEY, n int NOT NULL")
    admin.execute(f"INSERT INTO {name} VALUES (1, 0)")
    return name


def count(admin: psycopg.Connection, table: str) -> tuple[int, int, int]:
    """Rows, distinct ids, and the highest id."""
    row = admin.execute(f"SELECT count(*), count(DISTINCT id), coalesce(max(id), -1) FROM {table}")
    return row.fetchone()


# run_transaction: a contended counter per target -------------------------------------------


def increment_sql(table: str, placeholder: str) -> tuple[str, str]:
    return (
        f"SELECT n FROM {table} WHERE id = 1",
        f"UPDATE {table} SET n = {placeholder} WHERE id = 1",
    )


def run_threads(work) -> None:
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            work()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def sync_counter(kind: str, kwargs: dict, table: str, retries: list) -> None:
    """WORKERS threads increment the counter INCREMENTS times each through run_transaction."""
    select, update = increment_sql(table, "%s")

    def increment(conn, attempt):
        with conn.cursor() as cur:
            cur.execute(select)
            (n,) = cur.fetchone()
            time.sleep(0.001)  # others read the same value meanwhile
            cur.execute(update, (n + 1,))
        return attempt

    def record(event) -> None:
        retries.append(event)

    if kind == "psycopg2":  # plain connections, one per thread

        def work() -> None:
            conn = warmdb.psycopg2.connect(**kwargs)
            try:
                assert type(conn) is psycopg2.extensions.connection
                for _ in range(INCREMENTS):
                    run_transaction(conn, increment, retry=QUICK, on_conflict=record)
            finally:
                conn.close()

        run_threads(work)
    elif kind == "psycopg-keeper":  # one warm() keeper per thread, as in one Lambda each

        def work() -> None:
            keeper = warmdb.psycopg.warm(**kwargs)
            try:
                for _ in range(INCREMENTS):
                    run_transaction(keeper, increment, retry=QUICK, on_conflict=record)
            finally:
                keeper.close()

        run_threads(work)
    elif kind == "psycopg-pool":
        with warmdb.psycopg.pool(min_size=WORKERS, max_size=WORKERS, **kwargs) as pool:
            run_threads(
                lambda: [
                    run_transaction(pool, increment, retry=QUICK, on_conflict=record)
                    for _ in range(INCREMENTS)
                ]
            )
    elif kind == "sqlalchemy":
        engine = warmdb.sqlalchemy.create_engine(driver="psycopg2", pool_size=WORKERS, **kwargs)

        def increment_sa(conn, attempt):
            n = conn.exec_driver_sql(select).scalar_one()
            time.sleep(0.001)
            conn.exec_driver_sql(update, (n + 1,))

        try:
            run_threads(
                lambda: [
                    run_transaction(engine, increment_sa, retry=QUICK, on_conflict=record)
                    for _ in range(INCREMENTS)
                ]
            )
        finally:
            engine.dispose()
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["psycopg2", "psycopg-keeper", "psycopg-pool", "sqlalchemy"])
def test_contended_counter_counts_every_increment(admin, kwargs, kind):
    table = counter(admin)
    retries: list = []
    sync_counter(kind, kwargs, table, retries)
    (n,) = admin.execute(f"SELECT n FROM {table}").fetchone()
    assert n == WORKERS * INCREMENTS
    # The workload does collide: without the retries increments would be lost or raised.
    assert retries
    assert {event.code for event in retries} == {"OC000"}


@pytest.mark.parametrize("kind", ["asyncpg", "asyncpg-pool", "psycopg-async"])
def test_contended_counter_async(admin, kwargs, kind):
    table = counter(admin)
    placeholder = "$1" if kind.startswith("asyncpg") else "%s"
    select, update = increment_sql(table, placeholder)
    retries: list = []

    async def increment(conn, attempt):
        if kind.startswith("asyncpg"):
            n = await conn.fetchval(select)
            await asyncio.sleep(0.001)
            await conn.execute(update, n + 1)
        else:
            cur = await conn.execute(select)
            (n,) = await cur.fetchone()
            await asyncio.sleep(0.001)
            await conn.execute(update, (n + 1,))

    async def main() -> None:
        if kind == "asyncpg-pool":
            pool = await warmdb.asyncpg.create_pool(min_size=2, max_size=WORKERS, **kwargs)
            targets = [pool] * WORKERS
        elif kind == "asyncpg":
            targets = [await warmdb.asyncpg.connect(**kwargs) for _ in range(WORKERS)]
        else:
            targets = [await warmdb.psycopg.connect_async(**kwargs) for _ in range(WORKERS)]

        async def work(target) -> None:
            for _ in range(INCREMENTS):
                await run_transaction_async(
                    target, increment, retry=QUICK, on_conflict=retries.append
                )

        try:
            await asyncio.gather(*(work(target) for target in targets))
        finally:
            for target in set(targets):
                await target.close()

    asyncio.run(main())
    (n,) = admin.execute(f"SELECT n FROM {table}").fetchone()
    assert n == WORKERS * INCREMENTS
    assert retries


# What is retried and what is not ---------------------------------------------------------


def lose_once(admin: psycopg.Connection, table: str):
    """A callback that loses a conflict on its first attempt only: between its read and its
    write, another transaction changes the row."""
    attempts: list[int] = []

    def fn(conn, attempt):
        attempts.append(attempt)
        n = conn.exec_driver_sql(f"SELECT n FROM {table} WHERE id = 1").scalar_one()
        if attempt == 1:
            admin.execute(f"UPDATE {table} SET n = n + 100 WHERE id = 1")
        conn.exec_driver_sql(f"UPDATE {table} SET n = %s WHERE id = 1", (n + 1,))
        return n + 1

    return fn, attempts


def test_a_conflict_wrapped_by_sqlalchemy_is_retried(admin, kwargs):
    table = counter(admin)
    engine = warmdb.sqlalchemy.create_engine(driver="psycopg2", **kwargs)
    try:
        fn, attempts = lose_once(admin, table)
        # The connector's own check misses it: SQLAlchemy's exception has no sqlstate.
        from dsql_core.occ_retry import is_occ_error

        with pytest.raises(sqlalchemy.exc.OperationalError) as wrapped:
            run_transaction(engine, fn, retry=False)
        assert not is_occ_error(wrapped.value)
        assert wrapped.value.orig.pgcode == "40001"

        fn, attempts = lose_once(admin, table)
        assert run_transaction(engine, fn, retry=QUICK) == 201  # 100 + 100 from the rival, + 1
        assert attempts == [1, 2]

        # A SQLAlchemy Connection: the same, on that connection.
        with engine.connect() as connection:
            fn, attempts = lose_once(admin, table)
            assert run_transaction(connection, fn, retry=QUICK) == 302
            assert attempts == [1, 2]

        # A session factory: the same, with the ORM's session.
        sessions = sqlalchemy.orm.sessionmaker(bind=engine)
        fn, attempts = lose_once(admin, table)
        assert run_transaction(sessions, lambda s, a: fn(s.connection(), a), retry=QUICK) == 403
        assert attempts == [1, 2]
    finally:
        engine.dispose()


def test_other_errors_propagate_at_once(admin, kwargs):
    table = new_table(admin, "id int PRIMARY KEY")
    admin.execute(f"INSERT INTO {table} VALUES (1)")
    attempts: list[int] = []

    def duplicate(conn, attempt):
        attempts.append(attempt)
        conn.execute(f"INSERT INTO {table} VALUES (2)")
        conn.execute(f"INSERT INTO {table} VALUES (1)")

    with warmdb.psycopg.connect(**kwargs) as conn:
        with pytest.raises(psycopg.errors.UniqueViolation):
            run_transaction(conn, duplicate)
        assert attempts == [1]
        # Rolled back, and the connection is usable again.
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert run_transaction(conn, lambda c, a: c.execute("SELECT 7").fetchone()[0]) == 7
    assert count(admin, table)[0] == 1


def test_an_exhausted_budget_raises_conflict_error(admin, kwargs):
    table = counter(admin)

    def always_loses(conn, attempt):
        with conn.cursor() as cur:
            cur.execute(f"SELECT n FROM {table} WHERE id = 1")
            admin.execute(f"UPDATE {table} SET n = n + 1 WHERE id = 1")
            cur.execute(f"UPDATE {table} SET n = 0 WHERE id = 1")

    conn = warmdb.psycopg2.connect(**kwargs)
    try:
        config = OCCRetryConfig(max_retries=2, base_delay_ms=1, max_delay_ms=2)
        with pytest.raises(ConflictError) as raised:
            run_transaction(conn, always_loses, retry=config)
        assert raised.value.attempts == 3
        assert raised.value.code == "OC000"
        assert isinstance(raised.value.__cause__, psycopg2.errors.SerializationFailure)
    finally:
        conn.close()
    # Three attempts, each one lost to the admin's update; none of ours committed.
    assert admin.execute(f"SELECT n FROM {table}").fetchone()[0] == 3


def kill_first_attempt(admin: psycopg.Connection, table: str):
    """A callback whose first attempt loses its connection (the server ends the backend)
    before it commits; later attempts insert a row."""
    attempts: list[int] = []

    def fn(conn, attempt):
        attempts.append(attempt)
        if hasattr(conn, "exec_driver_sql"):  # a SQLAlchemy Connection
            conn.exec_driver_sql(f"INSERT INTO {table} VALUES (%s)", (attempt,))
            if attempt == 1:
                pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
                conn.exec_driver_sql("SELECT 1")
            return attempt
        with conn.cursor() as cur:
            cur.execute(f"INSERT INTO {table} VALUES (%s)", (attempt,))
            if attempt == 1:
                cur.execute("SELECT pg_backend_pid()")
                admin.execute("SELECT pg_terminate_backend(%s)", cur.fetchone())
                cur.execute("SELECT 1")
        return attempt

    return fn, attempts


@pytest.mark.parametrize("target", ["keeper", "psycopg2-pool", "sqlalchemy"])
def test_a_connection_lost_before_commit_is_replaced(admin, kwargs, target):
    table = new_table(admin, "attempt int")
    fn, attempts = kill_first_attempt(admin, table)
    retries: list = []
    if target == "keeper":
        keeper = warmdb.psycopg.warm(**kwargs)
        assert run_transaction(keeper, fn, retry=QUICK, on_conflict=retries.append) == 2
        keeper.close()
    elif target == "psycopg2-pool":
        with warmdb.psycopg2.pool(min_size=1, max_size=1, **kwargs) as pool:
            assert run_transaction(pool, fn, retry=QUICK, on_conflict=retries.append) == 2
    else:
        engine = warmdb.sqlalchemy.create_engine(driver="psycopg2", **kwargs)
        assert run_transaction(engine, fn, retry=QUICK, on_conflict=retries.append) == 2
        engine.dispose()
    assert attempts == [1, 2]
    assert [event.code for event in retries] == ["broken"]
    # The first attempt's row died with its connection.
    assert admin.execute(f"SELECT array_agg(attempt) FROM {table}").fetchone()[0] == [2]


def test_a_plain_connection_lost_is_not_retried(admin, kwargs):
    table = new_table(admin, "attempt int")
    fn, attempts = kill_first_attempt(admin, table)
    conn = warmdb.psycopg.connect(**kwargs)
    with pytest.raises(psycopg.OperationalError):
        run_transaction(conn, fn, retry=QUICK)
    assert attempts == [1]
    assert conn.closed


def test_the_callback_style_of_the_connector(admin, kwargs):
    """``with_attempt=False``: callbacks written for aurora-dsql's pools run unchanged."""
    table = counter(admin)
    with warmdb.psycopg.pool(min_size=1, max_size=2, **kwargs) as pool:
        result = run_transaction(
            pool,
            lambda conn: conn.execute(f"UPDATE {table} SET n = n + 1 RETURNING n").fetchone()[0],
            retry=OCCRetryConfig(),
            with_attempt=False,
        )
    assert result == 1


# write_batches ----------------------------------------------------------------------------


def rows(total: int, start: int = 0, *, bad: int | None = None):
    """Rows (id, v): a generator, so nothing is held in memory; row *bad* breaks a CHECK."""
    for i in range(start, total):
        yield (i, -1 if i == bad else i % 97)


def test_a_single_insert_of_5000_rows_is_refused_and_write_batches_succeeds(admin, kwargs):
    table = new_table(admin, "id int PRIMARY KEY, v int")
    with warmdb.psycopg.connect(**kwargs) as conn:
        with pytest.raises(psycopg.errors.ProgramLimitExceeded) as refused:
            conn.execute(f"INSERT INTO {table} SELECT g, 0 FROM generate_series(1, 5000) g")
        assert refused.value.sqlstate == "54000"
        conn.rollback()
        result = write_batches(conn, f"INSERT INTO {table} (id, v) VALUES (%s, %s)", rows(5000))
    assert (result.rows, result.batches, result.resume_from) == (5000, 2, 5000)
    assert count(admin, table) == (5000, 5000, 4999)


def test_100000_rows_exactly_once(admin, kwargs):
    table = new_table(admin, "id int PRIMARY KEY, v int")
    progress: list[int] = []

    async def main():
        conn = await warmdb.asyncpg.connect(**kwargs)
        try:
            return await write_batches_async(
                conn,
                f"INSERT INTO {table} (id, v) VALUES ($1, $2)",
                rows(100_000),
                progress=lambda r: progress.append(r.rows),
            )
        finally:
            await conn.close()

    result = asyncio.run(main())
    assert (result.rows, result.batches) == (100_000, 40)
    assert progress == list(range(2_500, 100_001, 2_500))
    assert count(admin, table) == (100_000, 100_000, 99_999)


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2", "sqlalchemy"])
def test_injected_conflicts_still_write_each_row_once(driver, monkeypatch):
    with emulator(occ_conflict_rate=0.3, seed=11) as dsql:
        kwargs = warmdb_kwargs(dsql, monkeypatch)
        with psycopg.connect(**dsql.connection_params(), autocommit=True) as admin:
            table = new_table(admin, "id int PRIMARY KEY, v int")
            statement = f"INSERT INTO {table} (id, v) VALUES (%s, %s)"
            if driver == "psycopg":
                with warmdb.psycopg.connect(**kwargs) as conn:
                    result = write_batches(conn, statement, rows(12_000), batch_rows=1_000)
            elif driver == "psycopg2":
                keeper = warmdb.psycopg2.warm(**kwargs)
                result = write_batches(keeper, statement, rows(12_000), batch_rows=1_000)
                keeper.close()
            else:
                engine = warmdb.sqlalchemy.create_engine(driver="psycopg2", **kwargs)
                result = write_batches(engine, statement, rows(12_000), batch_rows=1_000)
                engine.dispose()
            assert result.rows == 12_000
            assert result.batches == 12
            assert result.retries > 0  # 30% of the COMMITs failed
            assert count(admin, table) == (12_000, 12_000, 11_999)


@pytest.mark.parametrize("driver", ["psycopg2", "asyncpg"])
def test_a_failure_part_way_reports_what_was_committed_and_resumes(admin, kwargs, driver):
    table = new_table(admin, "id int PRIMARY KEY, v int CHECK (v >= 0)")
    total, bad = 10_000, 6_123
    placeholders = "$1, $2" if driver == "asyncpg" else "%s, %s"
    statement = f"INSERT INTO {table} (id, v) VALUES ({placeholders})"

    def write(source, resume_from=0):
        if driver == "psycopg2":
            with warmdb.psycopg2.pool(min_size=1, max_size=1, **kwargs) as pool:
                return write_batches(
                    pool, statement, source, batch_rows=1_000, resume_from=resume_from
                )

        async def main():
            conn = await warmdb.asyncpg.connect(**kwargs)
            try:
                return await write_batches_async(
                    conn, statement, source, batch_rows=1_000, resume_from=resume_from
                )
            finally:
                await conn.close()

        return asyncio.run(main())

    with pytest.raises(BatchWriteError) as stopped:
        write(rows(total, bad=bad))
    assert stopped.value.committed == 6_000
    assert stopped.value.resume_from == 6_000
    assert "resume_from=6000" in str(stopped.value)
    assert count(admin, table) == (6_000, 6_000, 5_999)

    # The bad row fixed at its source; the same rows, in the same order, from resume_from.
    result = write(rows(total), resume_from=stopped.value.resume_from)
    assert (result.rows, result.resume_from) == (4_000, total)
    assert count(admin, table) == (total, total, total - 1)


def test_rows_of_one_mib_are_split_by_size(admin, kwargs):
    table = new_table(admin, "id int PRIMARY KEY, body text")
    mib = "x" * (1024 * 1024)
    with warmdb.psycopg.connect(**kwargs) as conn:
        # Ten of them in one transaction are over DSQL's 10 MiB.
        with (
            pytest.raises(psycopg.errors.ProgramLimitExceeded, match="size"),
            conn.transaction(),
            conn.cursor() as cur,
        ):
            cur.executemany(f"INSERT INTO {table} VALUES (%s, %s)", [(i, mib) for i in range(10)])
        result = write_batches(
            conn, f"INSERT INTO {table} (id, body) VALUES (%s, %s)", ((i, mib) for i in range(20))
        )
    # 8 MiB a batch: 7 rows of 1 MiB and their overhead.
    assert result.batches == 3
    assert result.rows == 20
    assert count(admin, table) == (20, 20, 19)


@pytest.mark.parametrize("driver", ["psycopg", "asyncpg"])
def test_copy_from_stdin_in_batches(admin, kwargs, driver):
    """COPY ... FROM STDIN, which DSQL accepts, counts against the same limits: one COPY
    of 5,000 rows is refused, write_batches' COPY batches are not."""
    table = new_table(admin, "id int PRIMARY KEY, v int")
    statement = f"COPY {table} (id, v) FROM STDIN"
    if driver == "psycopg":
        with warmdb.psycopg.connect(**kwargs) as conn:

            def copy_all() -> None:
                with conn.transaction(), conn.cursor() as cur, cur.copy(statement) as copy:
                    for row in rows(5_000):
                        copy.write_row(row)

            with pytest.raises(psycopg.errors.ProgramLimitExceeded):
                copy_all()
            result = write_batches(conn, statement, rows(5_000))
    else:

        async def main():
            conn = await warmdb.asyncpg.connect(**kwargs)
            try:
                # Bounded: a relay that stalls on COPY must fail the test, not hang it.
                return await asyncio.wait_for(
                    write_batches_async(conn, statement, rows(5_000)), timeout=30
                )
            finally:
                conn.terminate()

        result = asyncio.run(main())
    assert (result.rows, result.batches) == (5_000, 2)
    assert count(admin, table) == (5_000, 5_000, 4_999)
