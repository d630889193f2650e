"""warmdb.transactions without a server: conflict detection, the retry budget, batch cutting."""

from __future__ import annotations

import itertools
from decimal import Decimal

import asyncpg.exceptions
import psycopg.errors
import pytest
import sqlalchemy.exc
from dsql_core import occ_retry as official

from warmdb import events
from warmdb.drivers import ErrorVerdict
from warmdb.errors import ConfigurationError, ConflictError
from warmdb.retry import Backoff
from warmdb.transactions import (
    DEFAULT_RETRY,
    OCCRetryConfig,
    conflict_code,
    merge_retry,
    retry_schedule,
    row_bytes,
    run_transaction,
    split_batches,
)
from warmdb.transactions._batches import _multi_row
from warmdb.transactions._retry import Attempts

DSQL_CONFLICT = "OC000 mutation conflicts with another transaction, retry as needed"
SCHEMA_CONFLICT = "OC001 schema has been updated by another transaction, retry as needed"


# Conflict detection ------------------------------------------------------------------------


def wrapped(orig: BaseException) -> sqlalchemy.exc.OperationalError:
    """The exception SQLAlchemy raises around a driver's."""
    return sqlalchemy.exc.OperationalError("COMMIT", None, orig)


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (psycopg.errors.SerializationFailure(DSQL_CONFLICT), "OC000"),
        (psycopg.errors.SerializationFailure(SCHEMA_CONFLICT), "OC001"),
        (psycopg.errors.SerializationFailure("could not serialize access"), "40001"),
        (psycopg.errors.DeadlockDetected("deadlock detected"), "40P01"),
        (asyncpg.exceptions.SerializationError(DSQL_CONFLICT), "OC000"),
        (wrapped(psycopg.errors.SerializationFailure(DSQL_CONFLICT)), "OC000"),
        (wrapped(asyncpg.exceptions.SerializationError("x")), "40001"),
        (psycopg.errors.UniqueViolation("duplicate key"), None),
        (wrapped(psycopg.errors.UniqueViolation("duplicate key")), None),
        (ValueError("nothing to do with the database"), None),
        (ConnectionResetError(1213, "reset"), None),  # an OSError's errno is not MySQL's
    ],
)
def test_conflict_code_by_sqlstate_and_marker(exc, code):
    assert conflict_code(exc) == code


class PgcodeError(Exception):
    """psycopg2's errors carry the SQLSTATE as ``pgcode``."""

    def __init__(self, message: str, pgcode: str | None) -> None:
        super().__init__(message)
        self.pgcode = pgcode


class MySQLError(Exception):
    def __init__(self, errno: int) -> None:
        super().__init__(errno, "Deadlock found when trying to get lock")
        self.errno = errno


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (PgcodeError(DSQL_CONFLICT, "40001"), "OC000"),
        (PgcodeError("x", "OC001"), "OC001"),
        (PgcodeError("duplicate", "23505"), None),
        # A driver that lost the code still carries DSQL's marker in the text.
        (PgcodeError("ERROR: " + DSQL_CONFLICT, None), "OC000"),
        (MySQLError(1213), "1213"),
        (MySQLError(1205), "1205"),
        (MySQLError(1062), None),
    ],
)
def test_conflict_code_without_driver_classes(exc, code):
    assert conflict_code(exc) == code


def raised(make) -> BaseException:
    """The exception *make* raises, with the chain Python builds while raising it."""
    with pytest.raises(BaseException) as info:  # noqa: PT011 - any exception is the point
        make()
    return info.value


def test_conflict_found_through_cause_and_context():
    def orm() -> None:
        try:
            raise psycopg.errors.SerializationFailure(DSQL_CONFLICT)
        except psycopg.errors.Error as inner:
            raise RuntimeError("the ORM gave up") from inner

    def handler() -> None:
        try:
            raise asyncpg.exceptions.SerializationError(DSQL_CONFLICT)
        except asyncpg.exceptions.PostgresError:
            raise KeyError("raised while handling it") from None

    assert conflict_code(raised(orm)) == "OC000"
    # "from None" hides the context from tracebacks, not from the chain warmdb reads.
    assert conflict_code(raised(handler)) == "OC000"


def test_conflict_chain_with_a_cycle_ends():
    first, second = ValueError("a"), ValueError("b")
    first.__context__, second.__context__ = second, first
    assert conflict_code(first) is None


class ScriptedAdapter:
    """An adapter whose verdict is fixed, to show classify is asked first."""

    def __init__(self, conflict: str | None, fails: bool = False) -> None:
        self.conflict = conflict
        self.fails = fails
        self.asked: list[BaseException] = []

    def classify(self, exc: BaseException) -> ErrorVerdict:
        self.asked.append(exc)
        if self.fails:
            raise TypeError("not one of mine")
        return ErrorVerdict(conflict=self.conflict)


def test_adapter_verdict_is_asked_first_and_a_failing_one_is_ignored():
    exc = MySQLError(9999)
    adapter = ScriptedAdapter("1213")
    assert conflict_code(exc, adapter) == "1213"  # type: ignore[arg-type]
    assert adapter.asked == [exc]
    assert conflict_code(PgcodeError(DSQL_CONFLICT, "40001"), ScriptedAdapter(None, True)) == (
        "OC000"
    )


# OCCRetryConfig: drop-in for the official connector's ---------------------------------------


def test_occ_retry_config_defaults_match_the_connector():
    ours, theirs = OCCRetryConfig(), official.OCCRetryConfig()
    for name in ("max_retries", "base_delay_ms", "max_delay_ms", "jitter_factor"):
        assert getattr(ours, name) == getattr(theirs, name)
    positional = OCCRetryConfig(5, 2, 50, 0.5)
    assert (positional.max_retries, positional.base_delay_ms) == (5, 2)
    assert (positional.max_delay_ms, positional.jitter_factor) == (50, 0.5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_retries": 1.5},
        {"max_retries": -1},
        {"max_retries": 101},
        {"base_delay_ms": 0},
        {"base_delay_ms": 10, "max_delay_ms": 5},
        {"jitter_factor": -0.1},
        {"jitter_factor": 1.1},
    ],
)
def test_occ_retry_config_refuses_what_the_connector_refuses(kwargs):
    with pytest.raises(ValueError) as theirs:  # noqa: PT011 - the message is compared below
        official.OCCRetryConfig(**kwargs)
    with pytest.raises(ConfigurationError) as ours:
        OCCRetryConfig(**kwargs)
    assert str(ours.value) == str(theirs.value)


def test_occ_retry_config_is_immutable_and_comparable():
    config = OCCRetryConfig(max_retries=7)
    with pytest.raises(AttributeError):
        config.max_retries = 8  # type: ignore[misc]
    assert config == OCCRetryConfig(max_retries=7)
    assert config.replace(max_retries=8) == OCCRetryConfig(max_retries=8)
    assert hash(config) == hash(OCCRetryConfig(max_retries=7))
    with pytest.raises(ConfigurationError, match="timeout"):
        OCCRetryConfig(timeout=0)


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.999])
def test_occ_retry_config_waits_as_the_connector(monkeypatch, fraction):
    """Same bound per retry and same jitter range: the connector's delay with the same draw
    ``r`` is ``d * (1 + j * r)``; warmdb's is ``d * (1 + j * (1 - r))``."""
    config = OCCRetryConfig(max_retries=10, base_delay_ms=4, max_delay_ms=50, jitter_factor=0.5)
    monkeypatch.setattr(official.random, "random", lambda: 1.0 - fraction)
    schedule = config.backoff()
    schedule = Backoff(
        initial=schedule.initial,
        maximum=schedule.maximum,
        max_retries=schedule.max_retries,
        jitter=schedule.jitter,
        random_fraction=lambda: fraction,
    ).start(0.0)
    for attempt in range(1, 8):
        schedule = schedule.increment(0.0)
        assert schedule is not None
        assert schedule.delay * 1000 == pytest.approx(official._calculate_backoff(config, attempt))


def test_retry_argument_forms():
    assert retry_schedule(None) is DEFAULT_RETRY
    assert retry_schedule(True) is DEFAULT_RETRY
    assert retry_schedule(False) is None
    backoff = Backoff(initial=0.1, maximum=1.0)
    assert retry_schedule(backoff) is backoff
    assert retry_schedule(OCCRetryConfig(max_retries=2)).max_retries == 2  # type: ignore[union-attr]
    with pytest.raises(ConfigurationError, match="retry must be"):
        retry_schedule(3)  # type: ignore[arg-type]
    pool = OCCRetryConfig(max_retries=9)
    assert merge_retry(pool, None) is pool
    assert merge_retry(pool, True) is pool
    assert merge_retry(pool, False) is False
    assert merge_retry(None, True) is True
    call = OCCRetryConfig(max_retries=1)
    assert merge_retry(pool, call) is call


# Attempts: the retry decision ----------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def conflict() -> Exception:
    return psycopg.errors.SerializationFailure(DSQL_CONFLICT)


def test_attempts_retry_conflicts_until_the_count_is_spent():
    seen = []
    schedule = Backoff(initial=0.01, maximum=0.05, max_retries=3, jitter=0.0)
    attempts = Attempts(schedule, seen.append, clock=FakeClock())
    delays = [attempts.after_failure(conflict(), None) for _ in range(3)]
    assert delays == [0.01, 0.02, 0.04]
    assert attempts.attempt == 4
    assert [(e.attempt, e.code) for e in seen] == [(1, "OC000"), (2, "OC000"), (3, "OC000")]
    last = conflict()
    with pytest.raises(ConflictError) as raised:
        attempts.after_failure(last, None)
    assert raised.value.attempts == 4
    assert raised.value.code == "OC000"
    assert raised.value.__cause__ is last
    assert "max_retries=3" in str(raised.value)


def test_attempts_stop_at_the_deadline():
    clock = FakeClock()
    attempts = Attempts(Backoff(initial=1.0, maximum=1.0, timeout=2.5, jitter=0.0), clock=clock)
    assert attempts.after_failure(conflict(), None) == 1.0
    clock.now += 2.0
    assert attempts.after_failure(conflict(), None) == pytest.approx(0.5)  # cut at the deadline
    clock.now += 0.5
    with pytest.raises(ConflictError):
        attempts.after_failure(conflict(), None)


def test_attempts_let_other_errors_and_unreplaceable_connections_through():
    attempts = Attempts(DEFAULT_RETRY, clock=FakeClock())
    assert attempts.after_failure(psycopg.errors.UniqueViolation("dup"), None) is None
    assert attempts.after_failure(conflict(), None, replaceable=False) is None
    assert attempts.after_failure(KeyboardInterrupt(), None) is None  # type: ignore[arg-type]
    assert Attempts(None).after_failure(conflict(), None) is None
    assert attempts.attempt == 1


def test_conflict_retries_are_events_and_counted():
    received = []

    class Listener(events.Listener):
        def on_conflict_retry(self, event):
            received.append(event)

    listener = Listener()
    events.add_listener(listener)
    events.reset_counts()
    try:
        attempts = Attempts(Backoff(initial=0.01, maximum=0.01, jitter=0.0), clock=FakeClock())
        attempts.after_failure(conflict(), None)
        attempts.after_failure(PgcodeError("x", "40P01"), None)
    finally:
        events.remove_listener(listener)
    assert [(e.attempt, e.code, e.delay) for e in received] == [
        (1, "OC000", 0.01),
        (2, "40P01", 0.01),
    ]
    counts = events.counts()
    assert counts["conflict_retries"] == 2
    assert counts["conflict_retries.OC000"] == 1
    assert "OC000" in repr(received[0])


def test_run_transaction_refuses_what_it_cannot_run_on():
    with pytest.raises(ConfigurationError, match="not a connection of a driver"):
        run_transaction(object(), lambda conn, attempt: None)
    with pytest.raises(ConfigurationError, match="max_age"):
        run_transaction(object(), lambda conn, attempt: None, max_age=0)


# run_transaction's procedure, on fake targets, through both fronts -------------------------


class FakeConnection:
    """A driver connection; its adapter logs what run_transaction asks of it."""

    def __init__(self, log: list[str]) -> None:
        self.log = log


class FakeAdapter:
    name = "fake"

    def begin(self, conn: FakeConnection) -> None:
        conn.log.append("begin")

    def commit(self, conn: FakeConnection) -> None:
        conn.log.append("commit")

    def rollback(self, conn: FakeConnection) -> None:
        conn.log.append("rollback")

    def is_closed(self, conn: FakeConnection) -> bool:
        return False

    def is_broken_by(self, conn: FakeConnection, exc: BaseException) -> bool:
        return False

    def classify(self, exc: BaseException) -> ErrorVerdict:
        return ErrorVerdict()


class FakeAsyncAdapter(FakeAdapter):
    async def begin(self, conn: FakeConnection) -> None:
        conn.log.append("begin")

    async def commit(self, conn: FakeConnection) -> None:
        conn.log.append("commit")

    async def rollback(self, conn: FakeConnection) -> None:
        conn.log.append("rollback")


class FakeCheckout:
    def __init__(self, conn: FakeConnection) -> None:
        self.conn = conn

    def __enter__(self) -> FakeConnection:
        self.conn.log.append("checkout")
        return self.conn

    def __exit__(self, kind, exc, tb) -> None:
        self.conn.log.append(f"checkin {kind.__name__ if kind else 'ok'}")

    async def __aenter__(self) -> FakeConnection:
        return self.__enter__()

    async def __aexit__(self, kind, exc, tb) -> None:
        self.__exit__(kind, exc, tb)


class FakeKeeper:
    """A keeper or pool: ``connection()`` checks the connection out."""

    def __init__(self, conn: FakeConnection) -> None:
        self.conn = conn

    def connection(self) -> FakeCheckout:
        return FakeCheckout(self.conn)


@pytest.fixture
def fake_adapters(monkeypatch):
    from warmdb.transactions import _conflict

    monkeypatch.setitem(_conflict._ADAPTERS, (FakeConnection, False), FakeAdapter())
    monkeypatch.setitem(_conflict._ADAPTERS, (FakeConnection, True), FakeAsyncAdapter())


def transact(is_async: bool, target, outcomes: list, **options):
    """run_transaction (or its async twin) on *target* with an ``fn`` that raises or returns
    the next of *outcomes*; returns its result."""
    import asyncio

    from warmdb.transactions import run_transaction_async

    def fn(conn, attempt):
        conn.log.append(f"fn {attempt}")
        outcome = outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def fn_async(conn, attempt):
        await asyncio.sleep(0)
        return fn(conn, attempt)

    quick = Backoff(initial=0.001, maximum=0.001, jitter=0.0)
    if is_async:
        return asyncio.run(run_transaction_async(target, fn_async, retry=quick, **options))
    return run_transaction(target, fn, retry=quick, **options)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.usefixtures("fake_adapters")
def test_a_conflict_is_rolled_back_and_run_again(is_async):
    log: list[str] = []
    assert transact(is_async, FakeConnection(log), [conflict(), "done"]) == "done"
    assert log == ["begin", "fn 1", "rollback", "begin", "fn 2", "commit"]
    log.clear()
    assert transact(is_async, FakeKeeper(FakeConnection(log)), [conflict(), "done"]) == "done"
    assert log == [
        "checkout",
        "begin",
        "fn 1",
        "rollback",
        "checkin SerializationFailure",
        "checkout",
        "begin",
        "fn 2",
        "commit",
        "checkin ok",
    ]


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.usefixtures("fake_adapters")
def test_an_interrupt_rolls_back_and_checks_in_without_a_retry(is_async):
    log: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        transact(is_async, FakeKeeper(FakeConnection(log)), [KeyboardInterrupt()])
    assert log == ["checkout", "begin", "fn 1", "rollback", "checkin KeyboardInterrupt"]


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.usefixtures("fake_adapters")
def test_a_checkout_of_the_other_kind_is_a_usage_error(is_async):
    from warmdb.errors import UsageError

    class Wrong:
        def connection(self):
            return object()

    other = "run_transaction" if is_async else "run_transaction_async"
    with pytest.raises(UsageError, match=f"use {other}$"):
        transact(is_async, Wrong(), [])


# Batches ---------------------------------------------------------------------------------


def test_row_bytes_counts_text_binary_and_scalars():
    assert row_bytes(("abc",)) == 16 + 4 + 3
    assert row_bytes(("é",)) == 16 + 4 + 2
    assert row_bytes((b"\x00" * 10,)) == 16 + 4 + 20
    assert row_bytes((1, None, True)) == 16 + 3 * 36
    assert row_bytes(([1, 2],)) == 16 + 16 + 2 * 36
    assert row_bytes((Decimal("1." + "0" * 50),)) == 16 + 4 + 52
    assert row_bytes({"a": "xy"}) == 16 + 4 + 2


def test_split_batches_by_rows_and_streaming():
    consumed = []

    def source():
        for n in itertools.count():
            consumed.append(n)
            yield (n,)

    batches = split_batches(itertools.islice(source(), 25), max_rows=lambda: 10, max_bytes=1 << 20)
    first = next(batches)
    assert first == [(n,) for n in range(10)]
    assert len(consumed) == 10  # nothing read beyond the batch
    assert [len(b) for b in batches] == [10, 5]


def test_split_batches_by_size_keeps_the_row_that_did_not_fit():
    big = "x" * 1000
    rows = iter([(big,)] * 7)
    cost = row_bytes((big,))
    batches = list(split_batches(rows, max_rows=lambda: 100, max_bytes=3 * cost))
    assert [len(b) for b in batches] == [3, 3, 1]
    # A row larger than the budget goes alone rather than never.
    huge = list(split_batches(iter([("y" * 5000,), (1,)]), max_rows=lambda: 9, max_bytes=100))
    assert [len(b) for b in huge] == [1, 1]


def test_split_batches_asks_for_the_row_limit_before_each_batch():
    limits = iter([4, 2, 3, 9])
    batches = split_batches(iter(range(9)), max_rows=lambda: next(limits), max_bytes=None)
    assert [len(b) for b in batches] == [4, 2, 3]


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        (
            "INSERT INTO t (a, b) VALUES (%s, %s)",
            ("INSERT INTO t (a, b) VALUES %s", "(%s, %s)"),
        ),
        (
            "insert into t values (%s, lower(%s), ')') on conflict do nothing",
            ("insert into t values %s on conflict do nothing", "(%s, lower(%s), ')')"),
        ),
        ("UPDATE t SET v = %s WHERE id = %s", None),
    ],
)
def test_psycopg2_multi_row_form(statement, expected):
    assert _multi_row(statement) == expected


def test_a_connection_lost_before_commit_runs_again_only_where_it_can_be_replaced():
    lost = ConnectionResetError("the server closed the connection")
    attempts = Attempts(Backoff(initial=0.01, maximum=0.01, jitter=0.0), clock=FakeClock())
    attempts.broken_before_commit = True
    assert attempts.after_failure(lost, None) == 0.01
    assert attempts.broken_before_commit is False  # one attempt's news, used once
    assert attempts.after_failure(lost, None) is None  # not broken this time: not retried
    attempts.broken_before_commit = True
    assert attempts.after_failure(lost, None, replaceable=False) is None
