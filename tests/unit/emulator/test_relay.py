"""The session policy after login, driven by scripted messages and a fake clock."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warmdb.emulator import protocol
from warmdb.emulator.limits import Limits
from warmdb.emulator.relay import Relay
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

    def __init__(self, **limits: float) -> None:
        self.clock = Clock()
        self.stats = Stats()
        self.relay = Relay(
            limits=Limits(**limits),
            stats=self.stats,
            clock=self.clock,
            rng=random.Random(1),
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


def error(reason: str, **limits: float) -> bytes:
    refusal = Limits(**limits).refusal(reason)
    return protocol.error_response(refusal.code, refusal.message)


ROLLBACK = Q("ROLLBACK")


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
    assert h.client(Q("insert 5")) == Q("insert 5")
    assert h.upstream(complete("INSERT 0 5"), ready(b"T")) == complete("INSERT 0 5") + ready(b"T")
    h.client(Q("update 6"))
    # The CommandComplete that crosses the limit becomes the error; the ReadyForQuery waits.
    assert h.upstream(complete("UPDATE 6"), ready(b"T")) == error("transaction_rows")
    assert h.client() == ROLLBACK
    assert h.upstream(complete("ROLLBACK"), ready(b"I")) == ready(b"I")
    assert h.stats.snapshot().limit_violations == {"transaction_rows": 1}
    # A new transaction starts from zero.
    h.begin()
    h.client(Q("insert 10"))
    assert h.upstream(complete("INSERT 0 10"), ready(b"T")).endswith(ready(b"T"))


def test_copy_out_does_not_count_copy_in_does():
    h = Harness(transaction_rows=10)
    h.begin()
    h.client(Q("copy t to stdout"))
    out = h.upstream(msg(b"H", b"\x00\x00\x00"), complete("COPY 50"), ready(b"T"))
    assert out.endswith(complete("COPY 50") + ready(b"T"))
    h.client(Q("copy t from stdin"))
    h.upstream(msg(b"G", b"\x00\x00\x00"))
    h.client(msg(b"d", b"1\n"), msg(b"c"))
    assert h.upstream(complete("COPY 11"), ready(b"T")) == error("transaction_rows")


def test_size_limit():
    h = Harness(transaction_bytes=100)
    h.begin()
    big = Q("insert " + "x" * 200)
    assert h.client(big) == big
    assert h.upstream(complete("INSERT 0 1"), ready(b"T")) == error(
        "transaction_size", transaction_bytes=100
    )
    assert h.client() == ROLLBACK


BEGIN, COMMIT = Q("BEGIN"), Q("COMMIT")


def hidden_begin(h: Harness) -> None:
    assert h.upstream(complete("BEGIN"), ready(b"T")) == b""


def test_autocommitted_write_runs_in_a_hidden_transaction():
    h = Harness()
    assert h.client(Q("insert into t values (1)")) == BEGIN + Q("insert into t values (1)")
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


def test_client_messages_wait_while_a_write_is_wrapped():
    h = Harness()
    assert h.client(Q("delete from t"), Q("select 1")) == BEGIN + Q("delete from t")
    hidden_begin(h)
    h.upstream(complete("DELETE 0"), ready(b"T"))
    assert h.client() == COMMIT
    # Once committed, the held query goes.
    assert h.upstream(complete("COMMIT"), ready(b"I")) == ready(b"I")
    assert h.client() == Q("select 1")


@pytest.mark.parametrize(
    "text",
    [
        "select 1",
        "select 1; select 2",
        "vacuum",
        "begin",
        "begin; insert into t values (1); commit",
        "insert into t values (1); end",
        "insert into t values (1); rollback",
        "set transaction isolation level serializable; insert into t values (1)",
    ],
)
def test_reads_and_transaction_control_are_not_wrapped(text):
    h = Harness()
    assert h.client(Q(text)) == Q(text)


def test_several_autocommitted_writes_in_one_query_are_wrapped_together():
    h = Harness(transaction_rows=10)
    text = "insert into t select 1; insert into t select generate_series(1, 20); select 1"
    assert h.client(Q(text)) == BEGIN + Q(text)
    hidden_begin(h)
    # The statement that crosses the limit fails; what PostgreSQL still runs is discarded.
    out = h.upstream(
        complete("INSERT 0 1"), complete("INSERT 0 20"), complete("SELECT 1"), ready(b"T")
    )
    assert out == complete("INSERT 0 1") + error("transaction_rows")
    assert h.client() == ROLLBACK
    assert h.upstream(complete("ROLLBACK"), ready(b"I")) == ready(b"I")
    assert h.stats.snapshot().limit_violations == {"transaction_rows": 1}


def test_over_the_limit_with_transaction_control_in_one_query_is_only_logged(caplog):
    h = Harness(transaction_rows=10)
    text = "begin; insert into t select generate_series(1, 20); commit"
    h.client(Q(text))
    replies = complete("BEGIN"), complete("INSERT 0 20"), complete("COMMIT"), ready(b"I")
    assert h.upstream(*replies) == b"".join(replies)
    assert "autocommitted" in caplog.text


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


def test_real_conflicts_are_renamed():
    h = Harness()
    h.begin()
    h.client(Q("update"))
    conflict = protocol.encode(
        b"E", b"SERROR\x00C40001\x00Mcould not serialize access due to concurrent update\x00\x00"
    )
    out = h.upstream(conflict, ready(b"E"))
    fields = protocol.error_fields(out[: -len(ready(b"E"))])
    assert fields["C"] == "40001"
    assert fields["M"] == "OC000 mutation conflicts with another transaction, retry as needed"
    assert h.stats.snapshot().occ_conflicts == 1


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


def test_pipelined_cycles_keep_their_order():
    h = Harness(transaction_rows=1)
    h.begin()
    h.client(Q("insert 2"), Q("select 1"))
    # The first cycle fails; the injected ROLLBACK comes after the pipelined select.
    out = h.upstream(complete("INSERT 0 2"), ready(b"T"))
    assert out == error("transaction_rows")
    assert h.client() == ROLLBACK
    out = h.upstream(complete("SELECT 1"), ready(b"T"), complete("ROLLBACK"), ready(b"I"))
    assert out == complete("SELECT 1") + ready(b"T") + ready(b"I")


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
    assert h.client(p, b, e, s, Q("select 1")) == BEGIN + p + b + e + s
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
    assert h.client(b, e, b, e, s) == BEGIN + b + e + b + e + s
    hidden_begin(h)
    out = h.upstream(msg(b"2"), complete("UPDATE 6"), msg(b"2"), complete("UPDATE 5"))
    assert out == msg(b"2") + complete("UPDATE 6") + msg(b"2") + error("transaction_rows")
    assert h.upstream(ready(b"T")) == b""
    assert h.client() == ROLLBACK
    assert h.upstream(complete("ROLLBACK"), ready(b"I")) == ready(b"I")


def test_reads_through_the_extended_protocol_are_not_wrapped():
    h = Harness()
    p, b, s = parse(b"", b"select $1"), bind(b""), msg(b"S")
    assert h.client(p, b, s) == p + b + s


_client_messages = st.one_of(
    st.builds(
        Q,
        st.sampled_from(
            ["BEGIN", "COMMIT", "select 1", "insert into t values (1)", "delete from t; select 1"]
        ),
    ),
    st.builds(parse, st.sampled_from([b"", b"s1"]), st.sampled_from([b"select 1", b"delete"])),
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
