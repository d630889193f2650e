"""Optimistic concurrency as on DSQL, through real drivers: writers never wait for each other,
the loser fails at COMMIT with 40001 and OC000; a DDL committed meanwhile on a table the
transaction used fails it with OC001."""

from __future__ import annotations

import asyncio

import asyncpg
import psycopg
import psycopg2
import psycopg2.errors
import pytest

from .conftest import asyncpg_admin

OC000 = "OC000 mutation conflicts with another transaction, retry as needed"
OC001 = "OC001 schema has been updated by another transaction, retry as needed"
# Were writers made to wait (PostgreSQL's behaviour), the second UPDATE below would block
# on the first's row lock; this upstream timeout turns that hang into a failure.
GUARD = "-c statement_timeout=5000"


@pytest.fixture
def counters(dsql_emulator):
    with psycopg.connect(**dsql_emulator.connection_params(), autocommit=True) as conn:
        conn.execute("create table if not exists counters (id int primary key, n int)")
        conn.execute("delete from counters")
        conn.execute("insert into counters values (1, 0), (2, 0)")
    return dsql_emulator


def value(dsql, row: int = 1) -> int:
    with psycopg.connect(**dsql.connection_params(), autocommit=True) as conn:
        return conn.execute("select n from counters where id = %s", (row,)).fetchone()[0]


def test_psycopg_writers_do_not_wait_and_the_later_committer_fails(counters):
    before = counters.stats.occ_conflicts
    with (
        psycopg.connect(**counters.connection_params(), options=GUARD) as first,
        psycopg.connect(**counters.connection_params(), options=GUARD) as second,
    ):
        first.execute("update counters set n = n + 1 where id = %s", (1,))
        # Same row, first still uncommitted: no wait, no error here.
        cur = second.execute("update counters set n = n + 10 where id = %s", (1,))
        assert cur.statusmessage == "UPDATE 0"
        # The transaction goes on: other statements run.
        second.execute("update counters set n = n + 10 where id = 2")
        first.commit()
        with pytest.raises(psycopg.errors.SerializationFailure) as info:
            second.commit()
        assert info.value.sqlstate == "40001"
        assert str(info.value) == OC000
    # Nothing of the loser's transaction committed.
    assert (value(counters, 1), value(counters, 2)) == (1, 0)
    assert counters.stats.occ_conflicts == before + 1


def test_psycopg2_writers_do_not_wait_and_the_later_committer_fails(counters):
    first = psycopg2.connect(**counters.connection_params(), options=GUARD)
    second = psycopg2.connect(**counters.connection_params(), options=GUARD)
    try:
        with first.cursor() as a, second.cursor() as b:
            a.execute("update counters set n = n + 1 where id = 1")
            b.execute("update counters set n = n + 10 where id = 1")
            first.commit()
            with pytest.raises(psycopg2.errors.SerializationFailure) as info:
                second.commit()
            assert info.value.pgcode == "40001"
            assert "OC000" in str(info.value)
            # Retried, it succeeds.
            b.execute("update counters set n = n + 10 where id = 1")
            second.commit()
    finally:
        first.close()
        second.close()
    assert value(counters) == 11


async def conflicting_transactions(dsql) -> str:
    first = await asyncpg_admin(dsql)
    second = await asyncpg_admin(dsql)
    try:
        await first.execute("set statement_timeout = 5000")
        await second.execute("set statement_timeout = 5000")
        one = first.transaction()
        two = second.transaction()
        await one.start()
        await two.start()
        await first.execute("update counters set n = n + $1 where id = 1", 1)
        status = await second.execute("update counters set n = n + $1 where id = 1", 10)
        await one.commit()
        with pytest.raises(asyncpg.SerializationError) as info:
            await two.commit()
        assert info.value.sqlstate == "40001"
        assert str(info.value) == OC000
        return status
    finally:
        await first.close()
        await second.close()


def test_asyncpg_writers_do_not_wait_and_the_later_committer_fails(counters):
    assert asyncio.run(conflicting_transactions(counters)) == "UPDATE 0"
    assert value(counters) == 1


def test_a_write_after_a_concurrent_commit_fails_at_commit_not_at_the_statement(counters):
    with (
        psycopg.connect(**counters.connection_params()) as first,
        psycopg.connect(**counters.connection_params()) as second,
    ):
        assert second.execute("select n from counters where id = 1").fetchone() == (0,)
        first.execute("delete from counters where id = 1")
        first.commit()
        second.execute("delete from counters where id = 1")
        with pytest.raises(psycopg.errors.SerializationFailure, match="OC000"):
            second.commit()


def test_autocommitted_write_that_conflicts_fails_with_oc000(counters):
    with (
        psycopg.connect(**counters.connection_params(), options=GUARD) as first,
        psycopg.connect(**counters.connection_params(), options=GUARD, autocommit=True) as second,
    ):
        first.execute("update counters set n = 5 where id = 1")
        # Its own commit is the statement's end: the conflict is reported there.
        with pytest.raises(psycopg.errors.SerializationFailure) as info:
            second.execute("update counters set n = 6 where id = 1")
        assert str(info.value) == OC000
        first.commit()
    assert value(counters) == 5


def test_schema_change_committed_meanwhile_fails_the_writer_with_oc001(dsql_emulator):
    with psycopg.connect(**dsql_emulator.connection_params(), autocommit=True) as admin:
        admin.execute("create table if not exists shapes (id int primary key)")
    with (
        psycopg.connect(**dsql_emulator.connection_params()) as writer,
        psycopg.connect(**dsql_emulator.connection_params(), autocommit=True) as changer,
    ):
        writer.execute("select 1")
        changer.execute("alter table shapes add column if not exists colour text")
        writer.execute("insert into shapes (id) values (%s)", (1,))
        with pytest.raises(psycopg.errors.SerializationFailure) as info:
            writer.commit()
        assert info.value.sqlstate == "40001"
        assert str(info.value) == OC001
        # The retry sees the new schema and commits.
        writer.execute("insert into shapes (id, colour) values (%s, 'red')", (1,))
        writer.commit()
    with psycopg.connect(**dsql_emulator.connection_params(), autocommit=True) as admin:
        assert admin.execute("select colour from shapes").fetchall() == [("red",)]
        admin.execute("drop table shapes")


def test_schema_change_on_another_table_does_not_conflict(dsql_emulator):
    with psycopg.connect(**dsql_emulator.connection_params(), autocommit=True) as admin:
        admin.execute("create table if not exists kept (id int primary key)")
        admin.execute("create table if not exists changed (id int primary key)")
    with (
        psycopg.connect(**dsql_emulator.connection_params()) as writer,
        psycopg.connect(**dsql_emulator.connection_params(), autocommit=True) as changer,
    ):
        writer.execute("select 1")
        changer.execute("alter table changed add column if not exists note text")
        writer.execute("insert into kept values (1)")
        writer.commit()
    with psycopg.connect(**dsql_emulator.connection_params(), autocommit=True) as admin:
        admin.execute("drop table kept")
        admin.execute("drop table changed")


def test_select_for_update_does_not_wait_and_conflicts_at_commit(counters):
    with (
        psycopg.connect(**counters.connection_params(), options=GUARD) as first,
        psycopg.connect(**counters.connection_params(), options=GUARD) as second,
    ):
        first.execute("update counters set n = 7 where id = 1")
        # On PostgreSQL this waits for the first writer; on DSQL it does not.
        second.execute("select n from counters where id = 1 for update").fetchall()
        second.execute("update counters set n = 8 where id = 2")
        first.commit()
        with pytest.raises(psycopg.errors.SerializationFailure, match="OC000"):
            second.commit()
    assert (value(counters, 1), value(counters, 2)) == (7, 0)
