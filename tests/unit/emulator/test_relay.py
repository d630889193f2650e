"""The session policy after login, driven by scripted messages and a fake clock."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warmdb.emulator import protocol
from warmdb.emulator.limits import Limits
from warmdb.emulator.relay import Relay
from warmdb.emulator.schema_log import SchemaLog
from warmdb.emulator.stats import Stats

Q = protocol.query_message


def ready(status: bytes) -> bytes:
    return protocol.ready_for_query(status)


def complete(tag: str) -> bytes:
    return protocol.encode(b"C", tag.encode() + b"\x00")


def msg(kind: bytes, body: bytes = b"") -> bytes:
    return protocol.encode(kind, body)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Harness:
    """A relay plus helpers to play both peers."""

    def __init__(self, schema_log: SchemaLog | None = None, **limits: float) -> None:
        self.clock = Clock()
        self.stats = Stats()
        self.relay = Relay(
            limits=Limits(**limits),
            stats=self.stats,
            clock=self.clock,
            rng=random.Random(1),
            schema_log=schema_log,
        )

    def client(self, *messages: bytes) -> bytes:
        """Send client messages; return what went upstream."""
        for message in messages:
            self.relay.from_client(message)
        sent = bytes(self.relay.to_upstream)
        self.relay.to_upstream.clear()
        return sent

    def upstream(self, *messages: bytes) -> bytes:
        """Send upstream messages; return what went to the client."""
        for message in messages:
            self.relay.from_upstream(message)
        sent = bytes(self.relay.to_client)
        self.relay.to_client.clear()
        return sent

    def begin(self) -> None:
        assert self.client(Q("BEGIN")) == Q("BEGIN")
        assert self.upstream(complete("BEGIN"), ready(b"T")) == complete("BEGIN") + ready(b"T")

    def savepoint(self, first: bool = True) -> None:
        """The upstream answers the relay's savepoint before a write in a transaction."""
        replies = (
            (complete("SET"), complete("SAVEPOINT"))
            if first
            else (
                complete("RELEASE"),
                complete("SAVEPOINT"),
            )
        )
        assert self.upstream(*replies, ready(b"T")) == b""

    def write(self, sql: str, tag: str, *, first: bool = True) -> bytes:
        """A write inside a transaction block, run after the relay's savepoint."""
        assert self.client(Q(sql)) == (SAVEPOINT_FIRST if first else SAVEPOINT_NEXT) + Q(sql)
        self.savepoint(first)
        return self.upstream(complete(tag), ready(b"T"))


def error(reason: str, **limits: float) -> bytes:
    refusal = Limits(**limits).refusal(reason)
    return protocol.error_response(refusal.code, refusal.message)


ROLLBACK = Q("ROLLBACK")
BEGIN, COMMIT = Q("BEGIN"), Q("COMMIT")
BEGIN_IMPLICIT = Q("BEGIN; SET LOCAL lock_timeout = '10ms'")
SAVEPOINT_FIRST = Q("SET LOCAL lock_timeout = '10ms'; SAVEPOINT warmdb_occ")
SAVEPOINT_NEXT = Q("RELEASE SAVEPOINT warmdb_occ; SAVEPOINT warmdb_occ")
ROLLBACK_TO = Q("ROLLBACK TO SAVEPOINT warmdb_occ")
FAIL = Q("SELECT 1/0")
DIVISION = protocol.error_response("22012", "division by zero")


def test_plain_traffic_passes_unchanged():
    h = Harness()
    assert h.client(Q("select 1")) == Q("select 1")
    reply = [msg(b"T", b"x"), msg(b"D", b"y"), complete("SELECT 1"), ready(b"I")]
    assert h.upstream(*reply) == b"".join(reply)
    assert h.stats.snapshot().transactions == 1
    assert h.stats.snapshot().queries == 1


def test_asynchronous_messages_pass_between_cycles():
    h = Harness()
    notice = msg(b"N", b"SWARNING\x00\x00")
    assert h.upstream(notice) == notice


def test_row_limit_fails_the_statement_and_rolls_back():
    h = Harness(transaction_rows=10)
    h.begin()
    assert h.write("insert into t select 5", "INSERT 0 5") == complete("INSERT 0 5") + ready(b"T")
    # The CommandComplete that crosses the limit becomes the error; the ReadyForQuery waits
    # for the relay's ROLLBACK.
    assert h.write("update t set v = 6", "UPDATE 6", first=False) == error("transaction_rows")
    assert h.client() == ROLLBACK
    assert h.upstream(complete("ROLLBACK"), ready(b"I")) == ready(b"I")
    assert h.stats.snapshot().limit_violations == {"transaction_rows": 1}
    # A new transaction starts from zero.
    h.begin()
    assert h.write("insert into t select 10", "INSERT 0 10").endswith(ready(b"T"))


def test_copy_out_does_not_count_copy_in_does():
    h = Harness(transaction_rows=10)
    h.begin()
    assert h.client(Q("copy t to stdout")) == Q("copy t to stdout")
    out = h.upstream(msg(b"H", b"\x00\x00\x00"), complete("COPY 50"), ready(b"T"))
    assert out.endswith(complete("COPY 50") + ready(b"T"))
    assert h.client(Q("copy t from stdin")) == SAVEPOINT_FIRST + Q("copy t from stdin")
    h.savepoint()
    copy_in = msg(b"G", b"\x00\x00\x00")
    assert h.upstream(copy_in) == copy_in
    # COPY data flows although the relay holds other messages until the COPY ends.
    data, done = msg(b"d", b"1\n"), msg(b"c")
    assert h.client(data, done) == data + done
    assert h.upstream(complete("COPY 11"), ready(b"T")) == error("transaction_rows")
    assert h.client() == ROLLBACK


def test_size_limit():
    h = Harness(transaction_bytes=100)
    h.begin()
    out = h.write("insert into t values ('" + "x" * 200 + "')", "INSERT 0 1")
    assert out == error("transaction_size", transaction_bytes=100)
    assert h.client() == ROLLBACK


def hidden_begin(h: Harness) -> None:
    assert h.upstream(complete("BEGIN"), complete("SET"), ready(b"T")) == b""


def test_autocommitted_write_runs_in_a_hidden_transaction():
    h = Harness()
    assert h.client(Q("insert into t values (1)")) == BEGIN_IMPLICIT + Q("insert into t values (1)")
    hidden_begin(h)
    # The result goes through; the ReadyForQuery waits for the COMMIT.
    assert h.upstream(complete("INSERT 0 1"), ready(b"T")) == complete("INSERT 0 1")
    assert h.client() == COMMIT
    assert h.upstream(complete("COMMIT"), ready(b"I")) == ready(b"I")
    assert h.relay.status == b"I"
    assert h.stats.snapshot().transactions == 1


def test_autocommitted_write_over_the_row_limit_is_rolled_back():
    h = Harness(transaction_rows=10)
    h.client(Q("insert into t select generate_series(1, 20)"))
    hidden_begin(h)
    assert h.upstream(complete("INSERT 0 20"), ready(b"T")) == error("transaction_rows")
    assert h.client() == ROLLBACK
    assert h.upstream(complete("ROLLBACK"), ready(b"I")) == ready(b"I")


def test_autocommitted_write_that_fails_is_rolled_back():
    h = Harness()
    h.client(Q("insert into missing values (1)"))
    hidden_begin(h)
    failure = protocol.error_response("42P01", 'relation "missing" does not exist')
    assert h.upstream(failure, ready(b"E")) == failure
    assert h.client() == ROLLBACK
    assert h.upstream(complete("ROLLBACK"), ready(b"I")) == ready(b"I")


def test_failed_commit_of_a_wrapped_write_reaches_the_client_as_a_conflict():
    h = Harness()
    h.client(Q("update t set v = 1"))
    hidden_begin(h)
    h.upstream(complete("UPDATE 1"), ready(b"T"))
    assert h.client() == COMMIT
    failure = protocol.error_response("40001", "could not serialize access")
    out = h.upstream(failure, ready(b"I"))
    assert protocol.error_fields(out)["M"].startswith("OC000")
    assert out.endswith(ready(b"I"))


def test_autocommitted_write_that_would_wait_is_a_conflict():
    h = Harness()
    h.client(Q("update t set v = 1"))
    hidden_begin(h)
    timeout = protocol.error_response("55P03", "canceling statement due to lock timeout")
    out = h.upstream(timeout, ready(b"E"))
    assert protocol.error_fields(out)["C"] == "40001"
    assert protocol.error_fields(out)["M"].startswith("OC000")
    assert h.client() == ROLLBACK


def test_client_messages_wait_while_a_write_is_wrapped():
    h = Harness()
    assert h.client(Q("delete from t"), Q("select 1")) == BEGIN_IMPLICIT + Q("delete from t")
    hidden_begin(h)
    h.upstream(complete("DELETE 0"), ready(b"T"))
    assert h.client() == COMMIT
    # Once committed, the held query goes.
    assert h.relay.held_bytes == len(Q("select 1"))
    assert h.upstream(complete("COMMIT"), ready(b"I")) == ready(b"I")
    assert h.client() == Q("select 1")
    assert h.relay.held_bytes == 0


@pytest.mark.parametrize(
    "text",
    ["select 1", "select 1; select 2", "begin", "rollback", "set x = 1", "show all"],
)
def test_reads_and_transaction_control_are_not_held_back(text):
    h = Harness()
    assert h.client(Q(text)) == Q(text)


def test_several_statements_run_one_at_a_time_in_one_implicit_transaction():
    h = Harness(transaction_rows=10)
    text = "insert into t select 1; insert into t select generate_series(1, 20); select 1"
    assert h.client(Q(text)) == BEGIN_IMPLICIT + Q("insert into t select 1")
    hidden_begin(h)
    assert h.upstream(complete("INSERT 0 1"), ready(b"T")) == complete("INSERT 0 1")
    # The next statement goes only once the first has ended.
    assert h.client() == Q(" insert into t select generate_series(1, 20)")
    # The statement that crosses the limit fails; the rest is never run.
    assert h.upstream(complete("INSERT 0 20"), ready(b"T")) == error("transaction_rows")
    assert h.client() == ROLLBACK
    assert h.upstream(complete("ROLLBACK"), ready(b"I")) == ready(b"I")
    assert h.stats.snapshot().limit_violations == {"transaction_rows": 1}


def test_row_limit_with_transaction_control_in_one_query():
    """What ``psql -c "begin; insert ...; commit;"`` sends: the COMMIT never runs."""
    h = Harness(transaction_rows=10)
    text = "begin; insert into t select generate_series(1, 20); commit;"
    assert h.client(Q(text)) == Q("begin")
    assert h.upstream(complete("BEGIN"), ready(b"T")) == complete("BEGIN")
    insert = Q(" insert into t select generate_series(1, 20)")
    assert h.client() == SAVEPOINT_FIRST + insert
    h.savepoint()
    assert h.upstream(complete("INSERT 0 20"), ready(b"T")) == error("transaction_rows")
    assert h.client() == ROLLBACK
    assert h.upstream(complete("ROLLBACK"), ready(b"I")) == ready(b"I")
    assert h.client() == b""


def test_commit_inside_one_query_ends_the_implicit_transaction():
    h = Harness()
    assert h.client(Q("insert into t values (1); commit; select 1")) == BEGIN_IMPLICIT + Q(
        "insert into t values (1)"
    )
    hidden_begin(h)
    h.upstream(complete("INSERT 0 1"), ready(b"T"))
    assert h.client() == Q(" commit")
    assert h.upstream(complete("COMMIT"), ready(b"I")) == complete("COMMIT")
    # What follows a COMMIT runs in an implicit transaction of its own.
    assert h.client() == BEGIN_IMPLICIT + Q(" select 1")
    hidden_begin(h)
    assert h.upstream(complete("SELECT 1"), ready(b"T")) == complete("SELECT 1")
    assert h.client() == COMMIT
    assert h.upstream(complete("COMMIT"), ready(b"I")) == ready(b"I")


def test_sql_prepare_and_execute_of_a_write_are_wrapped():
    h = Harness(transaction_rows=10)
    prepare = Q("prepare p as insert into t select generate_series(1, $1)")
    assert h.client(prepare) == prepare
    h.upstream(complete("PREPARE"), ready(b"I"))
    assert h.client(Q("execute p(20)")) == BEGIN_IMPLICIT + Q("execute p(20)")
    hidden_begin(h)
    assert h.upstream(complete("INSERT 0 20"), ready(b"T")) == error("transaction_rows")
    assert h.client() == ROLLBACK


def test_transaction_age_simple_query():
    h = Harness(transaction_age=10)
    h.begin()
    h.clock.now += 11
    # The statement is not run: the transaction is rolled back and the client told why.
    assert h.client(Q("insert")) == ROLLBACK
    assert h.upstream(complete("ROLLBACK"), ready(b"I")) == error(
        "transaction_age", transaction_age=10
    ) + ready(b"I")
    assert h.relay.status == b"I"


def test_transaction_age_extended_protocol_answers_at_once_and_skips_to_sync():
    h = Harness(transaction_age=10)
    h.begin()
    h.clock.now += 11
    parse, describe, flush, sync = msg(b"P", b"\x00q\x00\x00\x00"), msg(b"D"), msg(b"H"), msg(b"S")
    assert h.client(parse, describe, flush) == ROLLBACK
    assert h.upstream(complete("ROLLBACK"), ready(b"I")) == error(
        "transaction_age", transaction_age=10
    )
    assert h.client(sync) == sync
    assert h.upstream(ready(b"I")) == ready(b"I")


def test_transaction_age_inside_an_unfinished_sequence():
    h = Harness(transaction_age=10)
    h.begin()
    parse = msg(b"P", b"\x00q\x00\x00\x00")
    assert h.client(parse) == parse
    h.clock.now += 11
    # The forwarded Parse is closed with a hidden Sync before the ROLLBACK; the client's own
    # Sync follows for its ReadyForQuery.
    sync = msg(b"S")
    assert h.client(msg(b"B"), msg(b"E"), sync) == sync + ROLLBACK + sync
    assert h.upstream(msg(b"1"), ready(b"T")) == b""
    assert h.upstream(complete("ROLLBACK"), ready(b"I")) == error(
        "transaction_age", transaction_age=10
    )
    assert h.upstream(ready(b"I")) == ready(b"I")


def test_age_not_enforced_outside_transaction_blocks():
    h = Harness(transaction_age=10)
    h.client(Q("select pg_sleep(20)"))
    h.clock.now += 20
    assert h.upstream(complete("SELECT 1"), ready(b"I")).endswith(ready(b"I"))
    assert h.client(Q("select 1")) == Q("select 1")


def test_conflicting_write_proceeds_and_commit_fails():
    """A write that would wait for another writer's row lock neither waits nor fails: it
    "succeeds" with its changes undone, and the COMMIT fails with OC000."""
    h = Harness()
    h.begin()
    h.client(Q("update t set v = 1 where id = 1"))
    h.savepoint()
    timeout = protocol.error_response("55P03", "canceling statement due to lock timeout")
    assert h.upstream(timeout, ready(b"E")) == complete("UPDATE 0")
    assert h.client() == ROLLBACK_TO
    assert h.upstream(complete("ROLLBACK"), ready(b"T")) == ready(b"T")
    # The transaction goes on: reads run; the COMMIT is refused.
    assert h.client(Q("select 1")) == Q("select 1")
    h.upstream(complete("SELECT 1"), ready(b"T"))
    assert h.client(Q("COMMIT")) == ROLLBACK
    assert h.upstream(complete("ROLLBACK"), ready(b"I")) == error("occ") + ready(b"I")
    assert h.stats.snapshot().occ_conflicts == 1


def test_serialization_failure_in_a_transaction_fails_at_commit():
    h = Harness()
    h.begin()
    h.client(Q("delete from t where id = 1"))
    h.savepoint()
    conflict = protocol.error_response("40001", "could not serialize access")
    assert h.upstream(conflict, ready(b"E")) == complete("DELETE 0")
    h.client()
    h.upstream(complete("ROLLBACK"), ready(b"T"))
    assert h.client(Q("commit")) == ROLLBACK
    out = h.upstream(complete("ROLLBACK"), ready(b"I"))
    assert protocol.error_fields(out[: -len(ready(b"I"))])["M"].startswith("OC000")


def test_simulated_conflict_on_commit():
    h = Harness()
    h.relay.occ_conflict_rate = 1.0
    h.begin()
    assert h.client(Q("COMMIT")) == ROLLBACK
    assert h.upstream(complete("ROLLBACK"), ready(b"I")) == error("occ") + ready(b"I")
    # Outside a transaction block a COMMIT is only a warning upstream; nothing is simulated.
    assert h.client(Q("commit")) == Q("commit")


@pytest.mark.parametrize("text", ["COMMIT", "commit;", " END ", "commit work", "END TRANSACTION;"])
def test_commit_spellings(text):
    h = Harness()
    h.relay.occ_conflict_rate = 1.0
    h.begin()
    assert h.client(Q(text)) == ROLLBACK


def test_schema_change_committed_meanwhile_fails_commit_with_oc001():
    log = SchemaLog()
    writer, changer = Harness(schema_log=log), Harness(schema_log=log)
    writer.begin()
    # The other session's DDL commits after the writer's transaction began.
    alter = Q("alter table t add column w int")
    assert changer.client(alter) == alter
    assert changer.upstream(complete("ALTER TABLE"), ready(b"I")) == (
        complete("ALTER TABLE") + ready(b"I")
    )
    assert writer.write("insert into t values (1)", "INSERT 0 1").endswith(ready(b"T"))
    assert writer.client(Q("commit")) == ROLLBACK
    out = writer.upstream(complete("ROLLBACK"), ready(b"I"))
    assert protocol.error_fields(out[: -len(ready(b"I"))])["M"] == (
        "OC001 schema has been updated by another transaction, retry as needed"
    )
    # A transaction that begins after the change commits.
    writer.begin()
    writer.write("insert into t values (1)", "INSERT 0 1")
    assert writer.client(Q("commit")) == Q("commit")


def test_pipelined_cycles_keep_their_order():
    h = Harness(transaction_rows=1)
    h.begin()
    # A pipelined plain read goes at once; the write waits for it to end.
    assert h.client(Q("select 1"), Q("insert into t select 2"), Q("select 3")) == Q("select 1")
    assert h.upstream(complete("SELECT 1"), ready(b"T")) == complete("SELECT 1") + ready(b"T")
    assert h.client() == SAVEPOINT_FIRST + Q("insert into t select 2")
    h.savepoint()
    assert h.upstream(complete("INSERT 0 2"), ready(b"T")) == error("transaction_rows")
    assert h.client() == ROLLBACK
    assert h.upstream(complete("ROLLBACK"), ready(b"I")) == ready(b"I")
    assert h.client() == Q("select 3")


def test_copy_data_of_a_wrapped_copy_is_not_held():
    h = Harness(transaction_rows=10)
    h.client(Q("copy t from stdin"))
    hidden_begin(h)
    h.upstream(msg(b"G", b"\x00\x00\x00"))
    data, done = msg(b"d", b"1\n"), msg(b"c")
    assert h.client(data, done) == data + done
    assert h.upstream(complete("COPY 11"), ready(b"T")) == error("transaction_rows")
    assert h.client() == ROLLBACK


def parse(name: bytes, sql: bytes) -> bytes:
    return msg(b"P", name + b"\x00" + sql + b"\x00\x00\x00")


def bind(statement: bytes) -> bytes:
    return msg(b"B", b"\x00" + statement + b"\x00\x00\x00\x00\x00\x00\x00")


def test_autocommitted_extended_write_is_wrapped_up_to_its_sync():
    h = Harness(transaction_rows=10)
    p, b, e, s = parse(b"", b"insert into t values ($1)"), bind(b""), msg(b"E"), msg(b"S")
    assert h.client(p, b, e, s, Q("select 1")) == BEGIN_IMPLICIT + p + b + e + s
    hidden_begin(h)
    assert h.upstream(msg(b"1"), msg(b"2"), complete("INSERT 0 1")) == (
        msg(b"1") + msg(b"2") + complete("INSERT 0 1")
    )
    assert h.upstream(ready(b"T")) == b""
    assert h.client() == COMMIT
    assert h.upstream(complete("COMMIT"), ready(b"I")) == ready(b"I")
    assert h.client() == Q("select 1")


def test_named_prepared_writes_are_recognised_at_bind():
    h = Harness(transaction_rows=10)
    h.client(parse(b"s1", b"update t set v = $1"), msg(b"S"))
    hidden_begin(h)
    h.upstream(msg(b"1"), ready(b"T"))
    h.client()
    h.upstream(complete("COMMIT"), ready(b"I"))
    # Executions bind the named statement only; 11 rows over two Executes is over the limit.
    b, e, s = bind(b"s1"), msg(b"E"), msg(b"S")
    assert h.client(b, e, b, e, s) == BEGIN_IMPLICIT + b + e + b + e + s
    hidden_begin(h)
    out = h.upstream(msg(b"2"), complete("UPDATE 6"), msg(b"2"), complete("UPDATE 5"))
    assert out == msg(b"2") + complete("UPDATE 6") + msg(b"2") + error("transaction_rows")
    assert h.upstream(ready(b"T")) == b""
    assert h.client() == ROLLBACK
    assert h.upstream(complete("ROLLBACK"), ready(b"I")) == ready(b"I")


def test_a_sequence_left_open_by_a_flush_is_closed_before_a_write_is_judged():
    """asyncpg prepares with Parse, Describe, Flush and binds later: the relay closes such
    a sequence with a Sync of its own before it judges a write, which it then wraps."""
    h = Harness()
    prepared = parse(b"w", b"insert into t values ($1)")
    h.client(prepared, msg(b"S"))
    hidden_begin(h)
    h.upstream(msg(b"1"), ready(b"T"))
    h.client()
    h.upstream(complete("COMMIT"), ready(b"I"))
    p, d, flush = parse(b"r", b"select $1"), msg(b"D", b"Sr\x00"), msg(b"H")
    assert h.client(p, d, flush) == p + d + flush
    assert h.upstream(msg(b"1"), msg(b"n")) == msg(b"1") + msg(b"n")
    b, e, s = bind(b"w"), msg(b"E"), msg(b"S")
    assert h.client(b, e, s) == msg(b"S")
    assert h.upstream(ready(b"I")) == b""
    assert h.client() == BEGIN_IMPLICIT + b + e + s
    hidden_begin(h)
    assert h.upstream(msg(b"2"), complete("INSERT 0 1"), ready(b"T")) == (
        msg(b"2") + complete("INSERT 0 1")
    )
    assert h.client() == COMMIT
    assert h.upstream(complete("COMMIT"), ready(b"I")) == ready(b"I")


def test_copy_data_sent_before_copy_in_response_follows_its_copy():
    h = Harness()
    p, d, flush = parse(b"s1", b"select * from t limit 0"), msg(b"D", b"Ss1\x00"), msg(b"H")
    assert h.client(p, d, flush) == p + d + flush
    h.upstream(msg(b"1"), msg(b"t"), msg(b"T"))
    copy, data, done = Q("copy t from stdin"), msg(b"d", b"1\n"), msg(b"c")
    # The COPY waits for the open sequence to close; its data waits with it, in order.
    assert h.client(copy, data, done) == msg(b"S")
    assert h.upstream(ready(b"I")) == b""
    assert h.client() == BEGIN_IMPLICIT + copy + data + done
    hidden_begin(h)
    assert h.upstream(msg(b"G", b"\x00\x00\x00"), complete("COPY 1"), ready(b"T")) == (
        msg(b"G", b"\x00\x00\x00") + complete("COPY 1")
    )
    assert h.client() == COMMIT
    assert h.upstream(complete("COMMIT"), ready(b"I")) == ready(b"I")


def test_reads_through_the_extended_protocol_are_not_wrapped():
    h = Harness()
    p, b, s = parse(b"", b"select $1"), bind(b""), msg(b"S")
    assert h.client(p, b, s) == p + b + s


def test_conflicting_extended_write_proceeds_and_commit_fails():
    h = Harness()
    h.begin()
    p, b, e, s = parse(b"", b"update t set v = $1"), bind(b""), msg(b"E"), msg(b"S")
    assert (
        h.client(p, b, msg(b"D", b"P\x00"), e, s)
        == SAVEPOINT_FIRST + p + b + msg(b"D", b"P\x00") + e + s
    )
    h.savepoint()
    timeout = protocol.error_response("55P03", "canceling statement due to lock timeout")
    out = h.upstream(msg(b"1"), msg(b"2"), msg(b"n"), timeout, ready(b"E"))
    assert out == msg(b"1") + msg(b"2") + msg(b"n") + complete("UPDATE 0")
    assert h.client() == ROLLBACK_TO
    assert h.upstream(complete("ROLLBACK"), ready(b"T")) == ready(b"T")
    assert h.client(Q("commit")) == ROLLBACK


def test_conflict_before_more_statements_of_a_sequence_fails_the_statement():
    """A conflict cannot be hidden when statements follow it in the same sequence (their
    replies would be missing): the client gets the conflict at once."""
    h = Harness()
    h.begin()
    p, b, e, s = parse(b"", b"update t set v = $1"), bind(b""), msg(b"E"), msg(b"S")
    h.client(p, b, e, b, e, s)
    h.savepoint()
    conflict = protocol.error_response("40001", "could not serialize access")
    out = h.upstream(msg(b"1"), msg(b"2"), conflict, ready(b"E"))
    fields = protocol.error_fields(out[len(msg(b"1") + msg(b"2")) : -len(ready(b"E"))])
    assert fields["M"].startswith("OC000")
    assert out.endswith(ready(b"E"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("truncate t", "TRUNCATE not supported"),
        ("savepoint a", "SAVEPOINT not supported"),
        ("vacuum", "VACUUM not supported"),
        ("create index i on t (v)", "unsupported mode. please use CREATE INDEX ASYNC."),
        ("create temp table x (a int)", "temporary tables not supported"),
    ],
)
def test_unsupported_sql_is_refused(text, message):
    h = Harness()
    # In place of the statement, one that fails: PostgreSQL's transaction status follows.
    assert h.client(Q(text)) == FAIL
    out = h.upstream(DIVISION, ready(b"I"))
    assert out == protocol.error_response("0A000", message) + ready(b"I")


def test_refusal_in_a_transaction_block_fails_the_transaction():
    h = Harness()
    h.begin()
    assert h.client(Q("truncate t")) == FAIL
    out = h.upstream(DIVISION, ready(b"E"))
    assert out == protocol.error_response("0A000", "TRUNCATE not supported") + ready(b"E")


def test_postgres_compatible_mode_runs_unsupported_sql():
    h = Harness(sql_checks=False)
    assert h.client(Q("truncate t")) == Q("truncate t")
    h.upstream(complete("TRUNCATE TABLE"), ready(b"I"))
    h.begin()
    assert h.client(Q("create table a (x int)")) == Q("create table a (x int)")
    h.upstream(complete("CREATE TABLE"), ready(b"T"))
    assert h.write("insert into a values (1)", "INSERT 0 1").endswith(ready(b"T"))


def test_client_savepoints_in_postgres_compatible_mode_get_a_fresh_relay_savepoint():
    """Releasing the relay's savepoint would release the client's later ones too."""
    h = Harness(sql_checks=False)
    h.begin()
    h.write("insert into t values (1)", "INSERT 0 1")
    assert h.client(Q("savepoint s")) == Q("savepoint s")
    h.upstream(complete("SAVEPOINT"), ready(b"T"))
    assert h.write("insert into t values (2)", "INSERT 0 1").endswith(ready(b"T"))


def test_create_index_async_runs_as_create_index():
    h = Harness()
    assert h.client(Q("CREATE INDEX ASYNC i ON t (v)")) == Q("CREATE INDEX  i ON t (v)")
    assert h.upstream(complete("CREATE INDEX"), ready(b"I")) == (
        complete("CREATE INDEX") + ready(b"I")
    )


@pytest.mark.parametrize(
    ("statements", "message"),
    [
        (["create table a (x int)", "insert into a values (1)"], "ddl and dml"),
        (["insert into a values (1)", "create table b (x int)"], "ddl and dml"),
        (["create table a (x int)", "create table b (x int)"], "multiple ddl"),
    ],
)
def test_one_ddl_per_transaction_and_no_dml_with_it(statements, message):
    h = Harness()
    h.begin()
    first, second = statements
    sent = h.client(Q(first))
    assert sent.endswith(Q(first))
    if sent != Q(first):
        h.savepoint()
    h.upstream(complete("X"), ready(b"T"))
    assert h.client(Q(second)) == FAIL
    out = h.upstream(DIVISION, ready(b"E"))
    assert protocol.error_fields(out[: -len(ready(b"E"))])["M"].startswith(message)


def test_ddl_and_dml_in_one_query_are_refused_before_the_dml_runs():
    h = Harness()
    assert h.client(Q("create table a (x int); insert into a values (1)")) == (
        BEGIN_IMPLICIT + Q("create table a (x int)")
    )
    hidden_begin(h)
    assert h.upstream(complete("CREATE TABLE"), ready(b"T")) == complete("CREATE TABLE")
    assert h.client() == FAIL
    out = h.upstream(DIVISION, ready(b"E"))
    assert out == protocol.error_response("0A000", sql_rules_message("ddl_and_dml"))
    assert h.client() == ROLLBACK
    assert h.upstream(complete("ROLLBACK"), ready(b"I")) == ready(b"I")


def sql_rules_message(name: str) -> str:
    from warmdb.emulator.sql_rules import NOT_SUPPORTED

    return NOT_SUPPORTED[name].message


def test_extended_refusal_answers_at_once_and_skips_to_sync():
    h = Harness()
    p, b, e, s = parse(b"", b"truncate t"), bind(b""), msg(b"E"), msg(b"S")
    assert h.client(p, b, e) == b""
    assert h.upstream() == protocol.error_response("0A000", "TRUNCATE not supported")
    assert h.client(s) == s
    assert h.upstream(ready(b"I")) == ready(b"I")


def test_extended_refusal_in_a_transaction_block_fails_it():
    h = Harness()
    h.begin()
    h.write("insert into t values (1)", "INSERT 0 1")
    p, b, e, s = parse(b"", b"create table b (x int)"), bind(b""), msg(b"E"), msg(b"S")
    assert h.client(p, b, e) == b""
    out = h.upstream()
    assert protocol.error_fields(out)["M"] == sql_rules_message("ddl_and_dml")
    assert h.client(s) == FAIL
    assert h.upstream(DIVISION, ready(b"E")) == ready(b"E")


_client_messages = st.one_of(
    st.builds(
        Q,
        st.sampled_from(
            [
                "BEGIN",
                "COMMIT",
                "select 1",
                "insert into t values (1)",
                "delete from t; select 1",
                "begin; insert into t values (1); commit",
                "truncate t",
                "create table a (x int)",
                "prepare p as delete from t",
                "execute p",
            ]
        ),
    ),
    st.builds(
        parse,
        st.sampled_from([b"", b"s1"]),
        st.sampled_from([b"select 1", b"delete", b"create table b (x int)", b"vacuum"]),
    ),
    st.builds(bind, st.sampled_from([b"", b"s1", b"unknown"])),
    st.sampled_from([msg(b"E"), msg(b"S"), msg(b"H"), msg(b"D"), msg(b"d", b"x"), msg(b"c")]),
)
_upstream_messages = st.one_of(
    st.builds(complete, st.sampled_from(["INSERT 0 7", "UPDATE 2", "COPY 9", "SELECT 1"])),
    st.builds(ready, st.sampled_from([b"I", b"T", b"E"])),
    st.sampled_from(
        [
            msg(b"G", b"\x00\x00\x00"),
            msg(b"1"),
            protocol.error_response("40001", "conflict"),
            protocol.error_response("55P03", "lock timeout"),
            protocol.error_response("42P01", "missing"),
        ]
    ),
)


@settings(max_examples=300)
@given(
    steps=st.lists(
        st.tuples(st.booleans(), st.one_of(_client_messages, _upstream_messages)), max_size=40
    ),
    advance=st.lists(st.floats(min_value=0, max_value=20), min_size=40, max_size=40),
)
def test_any_message_sequence_keeps_the_streams_well_formed(steps, advance):
    """Whatever the peers send, the relay never fails and only ever emits whole messages."""
    h = Harness(transaction_rows=10, transaction_age=30, transaction_bytes=500)
    h.relay.occ_conflict_rate = 0.3
    for (from_client, message), seconds in zip(steps, advance, strict=False):
        h.clock.now += seconds
        if from_client:
            h.relay.from_client(message)
        else:
            h.relay.from_upstream(message)
    for stream in (h.relay.to_client, h.relay.to_upstream):
        framer = protocol.MessageFramer(1 << 20)
        framer.feed(bytes(stream))
        assert framer.buffered == 0


class FakePostgres:
    """Answers what the relay sends as PostgreSQL would, in outline: enough to check that
    every client cycle gets exactly one ReadyForQuery, whatever the relay runs in between."""

    def __init__(self) -> None:
        self.status = b"I"
        self.skipping = False  # after an error in an extended-protocol sequence
        self.parsed = b""

    def answer(self, sent: bytes) -> list[bytes]:
        framer = protocol.MessageFramer(1 << 20)
        replies: list[bytes] = []
        for message in framer.feed(sent):
            kind = message[:1]
            if kind == b"Q":
                replies += self._query(protocol.query_text(message).strip().lower())
            elif kind == b"S":
                self.skipping = False
                replies.append(ready(self.status))
            elif self.skipping:
                continue
            elif kind == b"P":
                self.parsed = protocol.parse_statement(message)[1]
                replies.append(msg(b"1"))
            elif kind == b"B":
                replies.append(msg(b"2"))
            elif kind == b"E":
                if self.status == b"T" and b"update" in self.parsed:
                    replies.append(protocol.error_response("55P03", "lock timeout"))
                    self.status, self.skipping = b"E", True
                else:
                    replies.append(complete("UPDATE 2"))
        return replies

    def _query(self, text: str) -> list[bytes]:
        replies: list[bytes] = []
        for statement in filter(None, (part.strip() for part in text.split(";"))):
            if statement.startswith(("begin", "start")):
                self.status = b"T" if self.status == b"I" else self.status
                replies.append(complete("BEGIN"))
            elif statement.startswith(("commit", "rollback", "end", "abort")) and (
                "to savepoint" not in statement
            ):
                self.status = b"I"
                replies.append(complete("COMMIT"))
            elif self.status == b"E" and not statement.startswith("rollback to"):
                replies.append(protocol.error_response("25P02", "aborted"))
                break
            elif statement.startswith("rollback to"):
                self.status = b"T"
                replies.append(complete("ROLLBACK"))
            elif statement.startswith("select 1/0") or "conflict" in statement:
                code = "55P03" if "conflict" in statement else "22012"
                replies.append(protocol.error_response(code, "x"))
                if self.status == b"T":
                    self.status = b"E"
                break
            else:
                replies.append(complete("INSERT 0 4" if statement.startswith("insert") else "SET"))
        return [*replies, ready(self.status)]


_queries = st.sampled_from(
    [
        "select 1",
        "begin",
        "commit",
        "rollback",
        "insert into t select 1",
        "update t set conflict = 1",
        "begin; insert into t select 1; commit",
        "insert into t select 1; insert into t select 2",
        "create table a (x int)",
        "truncate t",
        "savepoint s",
        "create index async i on t (x)",
        "prepare p as insert into t select 1",
        "execute p",
    ]
)
_sequences = st.sampled_from(
    [
        [parse(b"", b"update t set v = $1"), bind(b""), msg(b"E"), msg(b"S")],
        [parse(b"", b"select 1"), bind(b""), msg(b"E"), msg(b"S")],
        [parse(b"", b"truncate t"), bind(b""), msg(b"E"), msg(b"S")],
        [parse(b"", b"create table c (x int)"), msg(b"S")],
        [parse(b"w", b"update t set v = $1"), msg(b"S")],
        [bind(b"w"), msg(b"E"), msg(b"S")],
        # Left open, as asyncpg does when it prepares: no Sync, so no ReadyForQuery.
        [parse(b"r", b"select $1"), msg(b"D", b"Sr\x00"), msg(b"H")],
    ]
)


@settings(max_examples=300)
@given(
    st.lists(st.one_of(st.builds(lambda q: [Q(q)], _queries), _sequences), max_size=12),
    st.booleans(),
)
def test_every_client_cycle_gets_one_ready_for_query(cycles, pipelined):
    h = Harness(transaction_rows=10)
    h.relay.occ_conflict_rate = 0.2
    pg = FakePostgres()
    expected = 0
    received = b""

    def pump() -> bytes:
        out = b""
        for _ in range(200):
            sent = h.client()
            if not sent:
                return out
            out += h.upstream(*pg.answer(sent))
        raise AssertionError("the relay never settles")

    for cycle in cycles:
        expected += sum(message[:1] in (b"Q", b"S") for message in cycle)
        for message in cycle:
            h.relay.from_client(message)
        if not pipelined:
            received += pump()
    received += pump()
    framer = protocol.MessageFramer(1 << 20)
    readies = [m for m in framer.feed(received) if m[:1] == b"Z"]
    assert len(readies) == expected
    assert not h.relay.holding
    assert not h.relay.cycles
