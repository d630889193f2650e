"""The SQL classifier: statement kinds, tables, DSQL's refusals, and what runs upstream."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warmdb.emulator import sql_rules
from warmdb.emulator.sql_rules import NOT_SUPPORTED, classify, is_plain_read, split


def kinds(sql: bytes) -> list[str]:
    return [statement.kind for statement in split(sql)]


def test_split_at_top_level_semicolons_only():
    sql = (
        b"insert into t values ('a;b', E'c\\';d', $$e;f$$, $x$g;$x$); -- h;\n"
        b'/* i; /* nested; */ j; */ update "k;l" set a = 1;; select 2'
    )
    statements = split(sql)
    assert [s.kind for s in statements] == ["write", "write", "read"]
    assert statements[1].tables == {"k;l"}
    assert statements[2].sql == b" select 2"


def test_what_psql_c_sends():
    statements = split(b"begin; insert into t select generate_series(1,3001); commit;\x00")
    assert [s.kind for s in statements] == ["begin", "write", "commit"]
    assert statements[1].tables == {"t"}


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        (b"SELECT 1", "read"),
        (b"with a as (select 1) select * from a", "read"),
        (b"with a as (delete from t returning *) select * from a", "write"),
        (b"copy t from stdin", "write"),
        (b"copy t to stdout", "read"),
        (b"merge into t using u on t.id = u.id when matched then delete", "write"),
        (b"start transaction isolation level repeatable read", "begin"),
        (b"END", "commit"),
        (b"abort", "rollback"),
        (b"create table t (id int primary key)", "ddl"),
        (b"drop table t", "ddl"),
        (b"set search_path = x", "other"),
        (b"execute p (1)", "execute"),
        (b"select * from t where id = 1 for update", "write"),
        (b"select * from t for no key update skip locked", "write"),
        (b"select 'for update' from t", "read"),
    ],
)
def test_kinds(sql, kind):
    assert classify(sql).kind == kind


@pytest.mark.parametrize(
    ("sql", "tables"),
    [
        (b"insert into s.t values (1)", {"t"}),
        (b'update "Mixed" set a = 1 from u where true', {"Mixed", "u"}),
        (b"delete from only t", {"t"}),
        (b"select * from a join b on true", {"a", "b"}),
        (b"alter table if exists t add column c int", {"t"}),
        (b"create index async i on s.t (c)", {"t"}),
        (b"copy t (a, b) from stdin", {"t"}),
    ],
)
def test_tables(sql, tables):
    assert classify(sql).tables == tables


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        (b"TRUNCATE t", "truncate"),
        (b"savepoint s", "savepoint"),
        (b"release savepoint s", "savepoint"),
        (b"rollback to savepoint s", "savepoint"),
        (b"rollback work to s", "savepoint"),
        (b"vacuum analyze t", "vacuum"),
        (b"alter system set work_mem = '1MB'", "alter_system"),
        (b"create temporary table t (a int)", "temporary"),
        (b"create global temp table t (a int)", "temporary"),
        (b"create trigger g before insert on t execute function f()", "trigger"),
        (
            b"create or replace constraint trigger g after insert on t execute function f()",
            "trigger",
        ),
        (b"create event trigger e on ddl_command_start execute function f()", "trigger"),
        (b"create table t (a int) partition by list (a)", "partition"),
        (b"create table p partition of t for values in (1)", "partition"),
        (b"alter table t attach partition p for values in (1)", "partition"),
        (b"create table t (a int) tablespace x", "tablespace"),
        (b"create tablespace x location '/tmp'", "tablespace"),
        (b"create extension if not exists vector", "extension"),
        (b"create database other", "database"),
        (b"do $$ begin perform 1; end $$", "do"),
        (b"create table c (p int references t (id))", "foreign_key"),
        (b"create table c (p int, foreign key (p) references t (id))", "foreign_key"),
        (b"alter table c add constraint f foreign key (p) references t (id)", "alter_foreign_key"),
        (b"create table r (a int, exclude using gist (a with =))", "exclusion"),
        (b"create index i on t (a)", "index_sync"),
        (b"create unique index concurrently i on t (a)", "index_sync"),
        (b"create index async i on t using btree (a)", "index_using"),
        (b"create sequence s", "sequence_cache"),
        (b"create sequence s cache 10", "sequence_cache"),
    ],
)
def test_refusals(sql, reason):
    assert classify(sql).refusal == NOT_SUPPORTED[reason]


def test_functions_in_languages_other_than_sql():
    refusal = classify(b"create function f() returns int language 'plpgsql' as 'begin end'").refusal
    assert refusal is not None
    assert (refusal.code, refusal.message) == (
        "0A000",
        "functions in LANGUAGE plpgsql not supported: only SQL",
    )
    assert classify(b"create function f() returns int as $$select 1$$ language sql").refusal is None


def test_serial_types_do_not_exist():
    refusal = classify(b"create table t (id bigserial primary key)").refusal
    assert refusal is not None
    assert (refusal.code, refusal.message) == ("42704", 'type "bigserial" does not exist')


@pytest.mark.parametrize(
    "sql",
    [
        b"create sequence s cache 65536",
        b"create sequence s cache 1",
        b"create table t (id int generated always as identity, note text)",
        b"create table t (exclude int, \"references\" int, note text default 'references')",
        b"create unique index async i on t (a)",
        b"select * from t where note = 'truncate'",
        b"create view v as select 1",
    ],
)
def test_supported_statements_are_not_refused(sql):
    assert all(statement.refusal is None for statement in split(sql))


def test_sql_standard_function_bodies_are_one_statement():
    sql = (
        b"create function f(x int) returns int begin atomic; "
        b"select case when x > 0 then 1 else 0 end; end; select f(1)"
    )
    assert [s.kind for s in split(sql)] == ["ddl", "read"]


def test_create_index_async_runs_upstream_without_async():
    statement = classify(b"CREATE UNIQUE INDEX ASYNC IF NOT EXISTS i ON t (a)")
    assert statement.is_rewritten
    assert statement.sql == b"CREATE UNIQUE INDEX  IF NOT EXISTS i ON t (a)"
    assert not classify(b"create table async (a int)").is_rewritten


def test_prepare_remembers_what_it_prepares():
    statement = classify(b'PREPARE "Ins" (int) AS insert into t values ($1)')
    assert (statement.kind, statement.name) == ("prepare", b"Ins")
    assert statement.inner is not None
    assert statement.inner.kind == "write"
    assert classify(b"execute ins (1)").name == b"ins"


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (b"select 1\x00", True),
        (b"  SELECT 1;  \x00", True),
        (b"show all", True),
        (b"select 1; delete from t", False),
        (b"insert into t values (1)", False),
        (b"selectx", False),
        (b"select * from jobs for update skip locked", False),
    ],
)
def test_plain_reads(sql, expected):
    assert is_plain_read(sql) is expected


def test_only_ddl_keeps_every_token():
    """A bulk INSERT is classified from its first tokens; its tail is never tokenized."""
    values = b", ".join(b"(%d, 'x')" % i for i in range(50_000))
    statement = classify(b"insert into t values " + values + b" returning id")
    assert (statement.kind, statement.tables) == ("write", {"t"})


@given(st.binary(max_size=200))
def test_any_bytes_classify_without_error(sql):
    for statement in split(sql):
        assert statement.kind in {
            sql_rules.READ,
            sql_rules.WRITE,
            sql_rules.DDL,
            sql_rules.BEGIN,
            sql_rules.COMMIT,
            sql_rules.ROLLBACK,
            sql_rules.PREPARE,
            sql_rules.EXECUTE,
            sql_rules.OTHER,
        }


def test_plain_read_of_a_huge_query_sees_a_locking_clause_at_either_end():
    """The plain-read check runs on every Query; it must not scan megabytes with a regular
    expression (the emulator's other clients would stall behind it), yet still see a locking
    clause where a query puts it."""
    from warmdb.emulator.sql_rules import is_plain_read

    literal = b"'" + b"x" * (4 * 1024 * 1024) + b"'"
    assert is_plain_read(b"SELECT " + literal + b"\x00")
    assert not is_plain_read(b"SELECT " + literal + b" FROM t FOR UPDATE\x00")
    assert not is_plain_read(b"SELECT * FROM t FOR SHARE /* " + literal + b" */\x00")
    assert not is_plain_read(b"SELECT " + literal + b"; DELETE FROM t\x00")
