"""DSQL's limits through real clients: connection rate and burst, open connections, lifetime,
transaction age, rows and size (per transaction, whatever the framing: psql -c, several
statements in one Query, PREPARE/EXECUTE, the extended protocol)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time

import asyncpg
import psycopg
import psycopg2
import psycopg2.errors
import pytest

from warmdb.emulator.limits import Limits

from .conftest import asyncpg_admin, emulator, login, wait_for


def test_rate_limit_burst_then_refill():
    with emulator(limits=Limits(connection_rate=2, connection_burst=10)) as dsql:
        token = dsql.token()
        results = [login(dsql, token) for _ in range(10)]
        assert results == [{}] * 10
        refused = login(dsql, token)
        assert (refused["C"], refused["M"]) == (
            "53400",
            "Unable to accept connection, rate exceeded.",
        )
        assert refused["S"] == "FATAL"
        # The bucket refills at 2 per second: one connection after half a second, not two.
        time.sleep(0.6)
        assert login(dsql, token) == {}
        assert login(dsql, token)["C"] == "53400"
        stats = dsql.stats
        assert stats.accepted == 11
        assert stats.rejected == {"rate": 2}


def test_max_connections():
    with emulator(limits=Limits(max_connections=3)) as dsql:
        conns = [psycopg.connect(**dsql.connection_params()) for _ in range(3)]
        try:
            with pytest.raises(psycopg.OperationalError) as info:
                psycopg.connect(**dsql.connection_params())
            assert "Unable to accept connection, too many open connections." in str(info.value)
            assert login(dsql, dsql.token())["C"] == "53300"
            conns.pop().close()
            wait_for(lambda: dsql.stats.current == 2)
            conns.append(psycopg.connect(**dsql.connection_params()))
            assert dsql.stats.peak == 3
            assert dsql.stats.rejected == {"max_connections": 2}
        finally:
            for conn in conns:
                conn.close()


def test_connection_lifetime_under_time_scale():
    # 60 s of DSQL time at scale 60: one real second (tokens last 900 / 60 = 15 s).
    with emulator(time_scale=60, limits=Limits(connection_lifetime=60)) as dsql:
        conn = psycopg.connect(**dsql.connection_params(), autocommit=True)
        assert conn.execute("select 1").fetchone() == (1,)
        time.sleep(1.2)
        with pytest.raises(psycopg.OperationalError, match="connection duration limit exceeded"):
            conn.execute("select 1")
        assert conn.closed
        assert dsql.stats.expired == 1
        wait_for(lambda: dsql.stats.current == 0)


@pytest.fixture(scope="module")
def aged():
    # 300 s of transaction age at scale 300: one real second; tokens 3 s, lifetime 12 s.
    with emulator(time_scale=300) as dsql:
        with psycopg.connect(**dsql.connection_params(), autocommit=True) as conn:
            conn.execute("create table aged (id int primary key)")
        yield dsql


def test_transaction_age_simple_protocol(aged):
    with psycopg.connect(**aged.connection_params()) as conn:
        conn.execute("insert into aged values (1)")
        time.sleep(1.2)
        with pytest.raises(psycopg.errors.ProgramLimitExceeded) as info:
            conn.execute("insert into aged values (2)")
        assert info.value.sqlstate == "54000"
        assert str(info.value) == "transaction age limit of 300s exceeded"
        conn.rollback()
        # The transaction was rolled back; the connection keeps working.
        assert conn.execute("select count(*) from aged").fetchone() == (0,)
        conn.rollback()
    assert aged.stats.limit_violations["transaction_age"] >= 1


async def refused_in_old_transaction(conn):
    async with conn.transaction():
        await conn.execute("insert into aged values (10)")
        await asyncio.sleep(1.2)
        await conn.fetch("select $1::int", 1)


def test_transaction_age_extended_protocol(aged):

    async def main():
        conn = await asyncpg_admin(aged)
        try:
            with pytest.raises(asyncpg.PostgresError) as info:
                await refused_in_old_transaction(conn)
            assert info.value.sqlstate == "54000"
            assert await conn.fetchval("select count(*) from aged where id = 10") == 0
        finally:
            await conn.close()

    asyncio.run(main())


def test_transaction_age_resets_between_transactions(aged):
    with psycopg.connect(**aged.connection_params()) as conn:
        for _ in range(3):
            conn.execute("select 1")
            conn.commit()
            time.sleep(0.4)


PSQL = "/usr/lib/postgresql/15/bin/psql"


def psql(dsql, sql: str) -> subprocess.CompletedProcess[str]:
    """Run ``psql -c SQL`` against *dsql* (one simple Query holding the whole string)."""
    params = dsql.connection_params()
    password = params.pop("password")
    conninfo = " ".join(f"{key}={value}" for key, value in params.items())
    env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"}
    return subprocess.run(
        [PSQL, "-X", "-v", "ON_ERROR_STOP=1", conninfo, "-c", sql],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture
def items(dsql_emulator):
    conn = psycopg.connect(**dsql_emulator.connection_params())
    # One DDL per transaction, and no DML with it, as on DSQL.
    conn.execute("create table if not exists items (id int primary key, payload text)")
    conn.commit()
    conn.execute("delete from items")
    conn.commit()
    yield conn
    conn.close()


def count(conn) -> int:
    value = conn.execute("select count(*) from items").fetchone()[0]
    conn.rollback()
    return value


def test_row_limit_in_one_statement(items):
    with pytest.raises(psycopg.errors.ProgramLimitExceeded, match="transaction row limit exceeded"):
        items.execute("insert into items select g, 'x' from generate_series(1, 3001) g")
    items.rollback()
    assert count(items) == 0


def test_row_limit_across_statements(items):
    items.execute("insert into items select g, 'x' from generate_series(1, 2000) g")
    items.execute("update items set payload = 'y' where id <= 1000")
    with pytest.raises(psycopg.errors.ProgramLimitExceeded) as info:
        items.execute("delete from items where id <= 1")
    assert info.value.sqlstate == "54000"
    items.rollback()
    assert count(items) == 0


def test_row_limit_allows_exactly_3000(items):
    items.execute("insert into items select g, 'x' from generate_series(1, 3000) g")
    items.commit()
    assert count(items) == 3000


def copy_rows(conn, n):
    with conn.cursor().copy("copy items from stdin") as copy:
        for i in range(n):
            copy.write_row((10_000 + i, "c"))


def test_row_limit_counts_copy_in_not_copy_out(items):
    items.execute("insert into items select g, 'x' from generate_series(1, 2000) g")
    items.commit()
    with items.cursor().copy("copy items to stdout") as copy:
        assert sum(bytes(chunk).count(b"\n") for chunk in copy) == 2000
    with pytest.raises(psycopg.errors.ProgramLimitExceeded):
        copy_rows(items, 3001)
    items.rollback()
    assert count(items) == 2000


def test_size_limit(items):
    big = "x" * (6 * 1024 * 1024)
    items.execute("insert into items values (1, %s)", (big,))
    with pytest.raises(psycopg.errors.ProgramLimitExceeded) as info:
        items.execute("insert into items values (2, %s)", (big,))
    assert str(info.value) == "transaction size limit 10mb exceeded"
    items.rollback()
    assert count(items) == 0


def test_stats_count_violations(dsql_emulator, items):
    before = dsql_emulator.stats.limit_violations.get("transaction_rows", 0)
    with pytest.raises(psycopg.errors.ProgramLimitExceeded):
        items.execute("insert into items select g, 'x' from generate_series(1, 3001) g")
    items.rollback()
    assert dsql_emulator.stats.limit_violations["transaction_rows"] == before + 1


def test_row_limit_applies_to_autocommitted_statements(dsql_emulator, items):
    with psycopg.connect(**dsql_emulator.connection_params(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.ProgramLimitExceeded):
            conn.execute("insert into items select g, 'x' from generate_series(1, 3001) g")
        assert conn.execute("select count(*) from items").fetchone() == (0,)
        conn.execute("insert into items select g, 'x' from generate_series(1, 3000) g")
        assert conn.execute("select count(*) from items").fetchone() == (3000,)


def test_row_limit_applies_to_an_autocommitted_multi_statement_query(dsql_emulator, items):
    # psycopg2 sends the whole string as one simple-protocol Query.
    conn = psycopg2.connect(**dsql_emulator.connection_params())
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            with pytest.raises(psycopg2.errors.ProgramLimitExceeded):
                cur.execute(
                    "insert into items values (0, 'x'); "
                    "insert into items select g, 'x' from generate_series(1, 3000) g"
                )
            cur.execute("select count(*) from items")
            assert cur.fetchone() == (0,)
    finally:
        conn.close()


def test_row_limit_applies_to_autocommitted_extended_protocol(dsql_emulator, items):
    with psycopg.connect(**dsql_emulator.connection_params(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.ProgramLimitExceeded):
            conn.execute("insert into items select g, %s from generate_series(1, 3001) g", ("x",))
        assert conn.execute("select count(*) from items").fetchone() == (0,)


def test_row_limit_applies_to_asyncpg_executemany(dsql_emulator, items):

    async def main():
        conn = await asyncpg_admin(dsql_emulator)
        try:
            rows = [(i, "many") for i in range(3001)]
            with pytest.raises(asyncpg.PostgresError) as info:
                await conn.executemany("insert into items values ($1, $2)", rows)
            assert info.value.sqlstate == "54000"
            assert await conn.fetchval("select count(*) from items") == 0
            await conn.executemany("insert into items values ($1, $2)", rows[:3000])
            return await conn.fetchval("select count(*) from items")
        finally:
            await conn.close()

    assert asyncio.run(main()) == 3000


def test_row_limit_with_begin_and_commit_inside_psql_c(dsql_emulator, items):
    """``psql -c "begin; insert ...; commit;"`` is one Query: the COMMIT must not run."""
    result = psql(
        dsql_emulator,
        "begin; insert into items select g, 'x' from generate_series(1, 3001) g; commit;",
    )
    assert result.returncode == 1
    assert "ERROR:  transaction row limit exceeded" in result.stderr
    assert count(items) == 0
    ok = psql(
        dsql_emulator,
        "begin; insert into items select g, 'x' from generate_series(1, 3000) g; commit;",
    )
    assert ok.returncode == 0, ok.stderr
    assert count(items) == 3000


def test_row_limit_counts_across_statements_of_one_query(dsql_emulator, items):
    result = psql(
        dsql_emulator,
        "insert into items select g, 'x' from generate_series(1, 2000) g; "
        "insert into items select g, 'x' from generate_series(2001, 3001) g",
    )
    assert result.returncode == 1
    assert "transaction row limit exceeded" in result.stderr
    assert count(items) == 0


def test_row_limit_with_begin_and_commit_in_one_psycopg2_execute(dsql_emulator, items):
    conn = psycopg2.connect(**dsql_emulator.connection_params())
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            with pytest.raises(psycopg2.errors.ProgramLimitExceeded):
                cur.execute(
                    "begin; insert into items select g, 'x' from generate_series(1, 3001) g; commit"
                )
            # The transaction was rolled back: the session is usable and nothing committed.
            cur.execute("select count(*) from items")
            assert cur.fetchone() == (0,)
    finally:
        conn.close()


def test_row_limit_applies_to_sql_prepare_and_execute(dsql_emulator, items):
    with psycopg.connect(**dsql_emulator.connection_params(), autocommit=True) as conn:
        conn.execute(
            "prepare fill (int) as insert into items select g, 'x' from generate_series(1, $1) g",
            prepare=False,
        )
        with pytest.raises(psycopg.errors.ProgramLimitExceeded):
            conn.execute("execute fill (3001)", prepare=False)
        assert conn.execute("select count(*) from items").fetchone() == (0,)
        conn.execute("execute fill (3000)", prepare=False)
        assert conn.execute("select count(*) from items").fetchone() == (3000,)


def test_row_limit_applies_to_sql_execute_through_psql(dsql_emulator, items):
    result = psql(
        dsql_emulator,
        "prepare fill as insert into items select g, 'x' from generate_series(1, 3001) g; "
        "execute fill;",
    )
    assert result.returncode == 1
    assert "transaction row limit exceeded" in result.stderr
    assert count(items) == 0


async def fill_in_one_transaction(conn):
    async with conn.transaction():
        await conn.execute("insert into items select g, $1 from generate_series(1, 2000) g", "x")
        await conn.execute("insert into items select g, 'x' from generate_series(2001, 3001) g")


def test_row_limit_in_a_transaction_through_asyncpg(dsql_emulator, items):

    async def main():
        conn = await asyncpg_admin(dsql_emulator)
        try:
            with pytest.raises(asyncpg.PostgresError) as info:
                await fill_in_one_transaction(conn)
            assert info.value.sqlstate == "54000"
            return await conn.fetchval("select count(*) from items")
        finally:
            await conn.close()

    assert asyncio.run(main()) == 0
