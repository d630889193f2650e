"""DSQL's unsupported SQL, refused with DSQL's code and message through psql, psycopg (extended
protocol), psycopg2 (simple protocol) and asyncpg; ``CREATE INDEX ASYNC``; one DDL per
transaction, none with DML; and the postgres-compatible mode that turns the checks off."""

from __future__ import annotations

import asyncio

import asyncpg
import psycopg
import psycopg2
import psycopg2.errors
import pytest

from warmdb.emulator.limits import Limits
from warmdb.emulator.sql_rules import NOT_SUPPORTED

from .conftest import asyncpg_admin, emulator
from .test_limits import psql

REFUSED = [
    ("truncate notes", "truncate"),
    ("vacuum notes", "vacuum"),
    ("alter system set work_mem = '8MB'", "alter_system"),
    ("create temporary table scratch (a int)", "temporary"),
    ("create trigger t before insert on notes for each row execute function f()", "trigger"),
    ("create table parts (a int) partition by range (a)", "partition"),
    ("create tablespace space location '/tmp'", "tablespace"),
    ("create extension if not exists pgcrypto", "extension"),
    (
        "create function one() returns int language plpgsql as $$ begin return 1; end $$",
        None,
    ),
    ("do $$ begin perform 1; end $$", "do"),
    ("create table kids (id int, note int references notes (id))", "foreign_key"),
    ("create table spans (a int, exclude using btree (a with =))", "exclusion"),
    ("create index notes_body on notes (body)", "index_sync"),
    ("create sequence counter", "sequence_cache"),
]


def message_of(reason: str | None) -> str:
    if reason is None:
        return "functions in LANGUAGE plpgsql not supported: only SQL"
    return NOT_SUPPORTED[reason].message


@pytest.fixture
def notes(dsql_emulator):
    with psycopg.connect(**dsql_emulator.connection_params(), autocommit=True) as conn:
        conn.execute("create table if not exists notes (id int primary key, body text)")
    return dsql_emulator


@pytest.mark.parametrize(("sql", "reason"), REFUSED)
def test_psycopg_extended_protocol(notes, sql, reason):
    with psycopg.connect(**notes.connection_params(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.FeatureNotSupported) as info:
            conn.execute(sql)
        assert info.value.sqlstate == "0A000"
        assert str(info.value) == message_of(reason)
        # The session goes on.
        assert conn.execute("select 1").fetchone() == (1,)


@pytest.mark.parametrize(("sql", "reason"), REFUSED)
def test_psycopg2_in_a_transaction_block(notes, sql, reason):
    conn = psycopg2.connect(**notes.connection_params())
    try:
        with conn.cursor() as cur:
            with pytest.raises(psycopg2.errors.FeatureNotSupported) as info:
                cur.execute(sql)
            assert info.value.pgcode == "0A000"
            assert info.value.pgerror.strip() == f"ERROR:  {message_of(reason)}"
            # As after any error, the transaction is failed until rolled back.
            with pytest.raises(psycopg2.errors.InFailedSqlTransaction):
                cur.execute("select 1")
            conn.rollback()
            cur.execute("select 1")
    finally:
        conn.close()


def test_savepoint_is_refused_and_the_transaction_failed(notes):
    conn = psycopg2.connect(**notes.connection_params())
    try:
        with conn.cursor() as cur:
            cur.execute("insert into notes values (100, 'kept?')")
            with pytest.raises(psycopg2.errors.FeatureNotSupported, match="SAVEPOINT"):
                cur.execute("savepoint before_update")
            conn.rollback()
            cur.execute("select count(*) from notes where id = 100")
            assert cur.fetchone() == (0,)
    finally:
        conn.close()


def test_psql(notes):
    result = psql(notes, "truncate notes")
    assert result.returncode == 1
    assert result.stderr.strip() == "ERROR:  TRUNCATE not supported"
    result = psql(notes, "begin; insert into notes values (200, 'x'); savepoint s; commit;")
    assert result.returncode == 1
    assert "ERROR:  SAVEPOINT not supported" in result.stderr
    result = psql(notes, "select count(*) from notes where id = 200")
    assert result.stdout.split()[2] == "0"


def test_psql_ddl_and_dml_in_one_query(notes):
    result = psql(notes, "create table made (a int); insert into made values (1);")
    assert result.returncode == 1
    assert "ERROR:  ddl and dml are not supported in the same transaction" in result.stderr
    # The implicit transaction was rolled back: the table was not created.
    assert "does not exist" in psql(notes, "select * from made").stderr


def test_asyncpg(notes):

    async def main():
        conn = await asyncpg_admin(notes)
        try:
            with pytest.raises(asyncpg.FeatureNotSupportedError) as simple:
                await conn.execute("truncate notes")
            # fetch() prepares the statement: the extended protocol.
            with pytest.raises(asyncpg.FeatureNotSupportedError) as extended:
                await conn.fetch("create index notes_body on notes (body)")
            return str(simple.value), str(extended.value), await conn.fetchval("select 1")
        finally:
            await conn.close()

    assert asyncio.run(main()) == (
        "TRUNCATE not supported",
        "unsupported mode. please use CREATE INDEX ASYNC.",
        1,
    )


def test_create_index_async_creates_the_index(notes):
    with psycopg.connect(**notes.connection_params(), autocommit=True) as conn:
        conn.execute("create index async if not exists notes_by_body on notes (body)")
        names = conn.execute(
            "select indexname from pg_indexes where tablename = 'notes'"
        ).fetchall()
        assert ("notes_by_body",) in names


@pytest.mark.parametrize(
    ("first", "second", "reason"),
    [
        ("create table one_ddl (a int)", "insert into notes values (300, 'x')", "ddl_and_dml"),
        ("insert into notes values (301, 'x')", "create table one_dml (a int)", "ddl_and_dml"),
        ("create table ddl_a (a int)", "create table ddl_b (a int)", "multiple_ddl"),
    ],
)
def test_one_ddl_per_transaction_and_none_with_dml(notes, first, second, reason):
    with psycopg.connect(**notes.connection_params()) as conn:
        conn.execute(first)
        with pytest.raises(psycopg.errors.FeatureNotSupported) as info:
            conn.execute(second)
        assert str(info.value) == NOT_SUPPORTED[reason].message
        conn.rollback()
        # Each in its own transaction, both run.
        conn.execute(first)
        conn.commit()
        conn.execute(second)
        conn.commit()
        for table in ("one_ddl", "one_dml", "ddl_a", "ddl_b"):
            conn.execute(f"drop table if exists {table}")
            conn.commit()


def test_reads_may_accompany_ddl(notes):
    with psycopg.connect(**notes.connection_params()) as conn:
        conn.execute("select count(*) from notes")
        conn.execute("create table with_read (a int)")
        conn.commit()
        conn.execute("drop table with_read")
        conn.commit()


def test_postgres_compatible_mode_runs_everything():
    with (
        emulator(limits=Limits(sql_checks=False)) as dsql,
        psycopg.connect(**dsql.connection_params()) as conn,
    ):
        conn.execute("create table parent (id int primary key)")
        conn.execute("create table child (id int references parent (id))")
        conn.execute("insert into parent values (1)")
        conn.execute("savepoint s")
        conn.execute("insert into child values (1)")
        conn.execute("release savepoint s")
        conn.execute("create index child_id on child (id)")
        conn.commit()
        conn.execute("truncate child")
        conn.commit()
        assert conn.execute("select count(*) from parent").fetchone() == (1,)
        conn.rollback()
        # Limits still hold.
        with pytest.raises(psycopg.errors.ProgramLimitExceeded):
            conn.execute("insert into parent select generate_series(2, 3002)")
