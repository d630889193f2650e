"""run_transaction and run_transaction_async: begin, call, commit; on a conflict, again.

A *target* is whatever hands out a connection for one attempt. What to do with each kind is
found once per type (:func:`_kind`) and cached:

========================  ===================================================================
target                    one attempt
========================  ===================================================================
a driver connection       the adapter's ``begin``, ``fn(conn, attempt)``, ``commit`` on it
keeper, warmdb pool       ``with target.connection() as conn:`` the same, on a connection the
                          keeper or pool checks out, checks and replaces when broken
asyncpg pool              ``async with pool.acquire() as conn:`` the same
SQLAlchemy (Async)Engine  ``with engine.begin() as conn: fn(conn, attempt)``
SQLAlchemy Connection     ``with conn.begin(): fn(conn, attempt)`` (cannot be replaced)
(async_)sessionmaker      ``with factory.begin() as session: fn(session, attempt)``
========================  ===================================================================

An attempt that loses its connection before COMMIT is sent committed nothing: on a target
that can hand out another connection it runs again, on a new one (retry code ``"broken"``).
A plain connection cannot be replaced: when an attempt leaves it closed, the error
propagates, conflict or not. A connection lost while COMMIT is in flight leaves the outcome
unknown: that error always propagates.

Both fronts perform one procedure (:class:`_Transaction`), written as steps
(:mod:`warmdb._steps`): the sync front calls each step, the async front awaits it.
"""

from __future__ import annotations

import time
from functools import partial

from warmdb._arguments import keyword_arguments_of
from warmdb._log import get_logger
from warmdb._steps import run, run_async
from warmdb.errors import ConfigurationError, TransactionError, UsageError
from warmdb.transactions._conflict import adapter_for_connection
from warmdb.transactions._retry import Attempts, retry_schedule

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Generator
    from typing import Any, TypeVar

    from warmdb.drivers import Adapter, AsyncAdapter, SyncAdapter
    from warmdb.events import ConflictRetryEvent
    from warmdb.transactions._retry import Retry

    T = TypeVar("T")
    #: a procedure as steps (:mod:`warmdb._steps`)
    Steps = Generator[Callable[[], Any], Any, T]

__all__ = ["run_transaction", "run_transaction_async"]

logger = get_logger("warmdb.transactions")

#: DSQL refuses a transaction older than this (SQLSTATE 54000).
DSQL_TRANSACTION_AGE = 300.0
#: run_transaction's default age_warning: a minute before DSQL's limit.
_AGE_WARNING = 240.0

CONNECTION = "connection"
CHECKOUT = "checkout"
ACQUIRE = "acquire"
ENGINE = "engine"
SA_CONNECTION = "sqlalchemy-connection"
SESSIONS = "sessions"

_KINDS: dict[tuple[type, bool], str] = {}


def _fronts(is_async: bool) -> tuple[str, str]:
    """The name of the front in use and of its twin, for messages."""
    if is_async:
        return "run_transaction_async", "run_transaction"
    return "run_transaction", "run_transaction_async"


def _kind(target: object, *, is_async: bool) -> str:
    """How to run an attempt on *target* (one of the constants above); cached per type."""
    key = (type(target), is_async)
    kind = _KINDS.get(key)
    if kind is None:
        kind = _KINDS[key] = _find_kind(target, is_async=is_async)
    return kind


def _find_kind(target: object, *, is_async: bool) -> str:
    cls = type(target)
    module = cls.__module__
    front, other = _fronts(is_async)
    if module.startswith("sqlalchemy."):
        target_is_async = module.startswith("sqlalchemy.ext.asyncio")
        if target_is_async != is_async:
            raise UsageError(f"{front} cannot use a {cls.__name__}: use {other}")
        if hasattr(target, "dialect"):
            return ENGINE if hasattr(target, "connect") else SA_CONNECTION
        if callable(target) and hasattr(target, "begin"):
            return SESSIONS
        raise ConfigurationError(
            f"{front}: a SQLAlchemy {cls.__name__} is not a target; pass an Engine, a "
            "Connection, a sessionmaker or their async twins"
        )
    if callable(getattr(target, "connection", None)):
        return CHECKOUT
    if is_async and callable(getattr(target, "acquire", None)):
        return ACQUIRE
    adapter_for_connection(target, is_async=is_async)  # raises for anything else
    return CONNECTION


def _dialect_adapter(target: Any, *, is_async: bool) -> Adapter | None:
    """The adapter behind a SQLAlchemy engine or session factory, or ``None`` if unknown."""
    from warmdb.drivers import adapter_class, entry_for_dialect

    engine = target if hasattr(target, "dialect") else getattr(target, "kw", {}).get("bind")
    dialect = getattr(engine, "dialect", None)
    if dialect is None:
        return None
    try:
        entry = entry_for_dialect(f"{dialect.name}+{dialect.driver}")
        return adapter_class(entry.name, is_async=is_async)()
    except ConfigurationError:
        return None


def _age_check(started: float, max_age: float | None, age_warning: float | None) -> None:
    """Refuse (*max_age*) or warn about (*age_warning*) a transaction that ran long."""
    age = time.monotonic() - started
    if max_age is not None and age > max_age:
        raise TransactionError(
            f"the transaction ran {age:.1f} s, over max_age={max_age} s: rolled back "
            f"(DSQL refuses transactions older than {DSQL_TRANSACTION_AGE:.0f} s)"
        )
    if age_warning is not None and age > age_warning:
        logger.warning(
            "a transaction ran %.1f s before its commit; DSQL refuses transactions older "
            "than %.0f s: split the work (warmdb.transactions.write_batches)",
            age,
            DSQL_TRANSACTION_AGE,
        )


def _within(cm: Any, is_async: bool, body: Callable[[Any], Steps[T]]) -> Steps[T | None]:
    """``with cm as value: return (yield from body(value))`` as steps, or ``async with``
    when *is_async*: the context manager's methods are looked up on its type and its exit
    may suppress the exception, as in the statement (PEP 343)."""
    cls = type(cm)
    enter, leave = (cls.__aenter__, cls.__aexit__) if is_async else (cls.__enter__, cls.__exit__)
    value = yield partial(enter, cm)
    try:
        result = yield from body(value)
    except BaseException as exc:
        if not (yield partial(leave, cm, type(exc), exc, exc.__traceback__)):
            raise
        return None
    yield partial(leave, cm, None, None, None)
    return result


class _Transaction:
    """One run_transaction call: its target, its attempts, and the procedure that runs them.
    Takes run_transaction's arguments, in its order.

    :ivar adapter: the adapter of the connection the running attempt uses, once known; what
        :meth:`_after_failure` gives :func:`~warmdb.transactions.conflict_code`.
    """

    __slots__ = (
        "adapter",
        "age_warning",
        "attempts",
        "call",
        "is_async",
        "kind",
        "max_age",
        "target",
    )

    def __init__(
        self,
        target: Any,
        fn: Callable[..., Any],
        retry: Retry,
        with_attempt: bool,
        on_conflict: Callable[[ConflictRetryEvent], object] | None,
        max_age: float | None,
        age_warning: float | None,
        /,
        *,
        is_async: bool,
    ) -> None:
        if max_age is not None or age_warning != _AGE_WARNING:
            from warmdb._arguments import check_seconds

            check_seconds("max_age", max_age, optional=True, positive=True)
            check_seconds("age_warning", age_warning, optional=True, positive=True)
        self.call = fn if with_attempt else (lambda conn, _attempt: fn(conn))
        self.attempts = Attempts(retry_schedule(retry), on_conflict)
        self.kind = _kind(target, is_async=is_async)
        self.target = target
        self.max_age = max_age
        self.age_warning = age_warning
        self.is_async = is_async
        self.adapter: Adapter | None = None

    def steps(self, sleep: Callable[[float], Any]) -> Steps[Any]:
        """Attempts until one commits, a failure is not retried, or the budget is spent;
        *sleep* waits between them."""
        while True:
            self.adapter = None
            try:
                return (yield from self._attempt())
            except Exception as exc:
                delay = self._after_failure(exc)
                if delay is None:
                    raise
            yield partial(sleep, delay)

    def _attempt(self) -> Steps[Any]:
        """One attempt's steps (returned, not delegated to: one generator less per run)."""
        kind, target = self.kind, self.target
        if kind == CONNECTION:
            return self._on_connection(target)
        if kind in (CHECKOUT, ACQUIRE):
            checkout = target.connection() if kind == CHECKOUT else target.acquire()
            if not hasattr(checkout, "__aenter__" if self.is_async else "__enter__"):
                front, other = _fronts(self.is_async)
                raise UsageError(
                    f"{front} cannot use {type(target).__name__}: it is "
                    f"{'sync' if self.is_async else 'async'}, use {other}"
                )
            return _within(checkout, self.is_async, self._on_connection)
        if kind == SA_CONNECTION:
            return _within(target.begin(), self.is_async, lambda _: self._sa(target))
        return _within(target.begin(), self.is_async, self._sa)

    def _on_connection(self, conn: Any) -> Steps[Any]:
        """Begin, ``fn``, commit on a driver connection."""
        # The sync or the async adapter, as is_async asks: both have begin, commit, rollback.
        adapter: SyncAdapter | AsyncAdapter
        adapter = adapter_for_connection(conn, is_async=self.is_async)  # type: ignore[assignment]
        self.adapter = adapter
        attempts = self.attempts
        started = time.monotonic()
        committing = False
        try:
            yield partial(adapter.begin, conn)
            result = yield partial(self.call, conn, attempts.attempt)
            _age_check(started, self.max_age, self.age_warning)
            committing = True
            yield partial(adapter.commit, conn)
        except BaseException as exc:
            # Lost before COMMIT was sent: nothing of this attempt can have been committed.
            # After it, the outcome is unknown, and running fn again could apply it twice.
            if not committing and isinstance(exc, Exception):
                attempts.broken_before_commit = adapter.is_broken_by(conn, exc)
            # The attempt's own exception is what the caller must see; a rollback that fails
            # (the connection died) only means there is nothing left to roll back.
            try:
                if not adapter.is_closed(conn):
                    yield partial(adapter.rollback, conn)
            except Exception as rollback_exc:
                logger.debug("rollback after a failed attempt failed: %r", rollback_exc)
            raise
        return result

    def _sa(self, conn: Any) -> Steps[Any]:
        """``fn`` inside SQLAlchemy's ``begin()`` block, noting a connection SQLAlchemy
        invalidated before the block's COMMIT."""
        try:
            return (yield partial(self.call, conn, self.attempts.attempt))
        except Exception as exc:
            self.attempts.broken_before_commit = bool(getattr(exc, "connection_invalidated", False))
            raise

    def _after_failure(self, exc: Exception) -> float | None:
        """:meth:`Attempts.after_failure`, told the adapter and whether the target can give
        the next attempt a working connection."""
        kind, target = self.kind, self.target
        adapter = self.adapter
        replaceable = True
        if kind in (ENGINE, SESSIONS, SA_CONNECTION):
            adapter = _dialect_adapter(target, is_async=self.is_async)
            if kind == SA_CONNECTION:
                replaceable = not (target.closed or target.invalidated)
        elif kind == CONNECTION:
            adapter = adapter_for_connection(target, is_async=self.is_async)
            replaceable = not adapter.is_closed(target)
        return self.attempts.after_failure(exc, adapter, replaceable=replaceable)


def run_transaction(
    target: Any,
    fn: Callable[..., T],
    *,
    retry: Retry = None,
    with_attempt: bool = True,
    on_conflict: Callable[[ConflictRetryEvent], object] | None = None,
    max_age: float | None = None,
    age_warning: float | None = 240.0,
) -> T:
    """Run ``fn`` in a transaction on *target*; run it again when it loses a conflict.

    warmdb begins, calls ``fn(conn, attempt)`` (``attempt`` counts from 1), commits, and
    returns what ``fn`` returned. When the attempt fails with a concurrency conflict
    (SQLSTATE 40001 with DSQL's OC000 / OC001, 40P01, MySQL 1213 / 1205; found anywhere in
    the exception chain), it rolls back, waits (exponential backoff with jitter) and calls
    ``fn`` again, within the retry budget. So it does when the connection broke before
    COMMIT was sent and *target* can give a new one (a keeper, pool or engine). Any other
    exception propagates untouched, at once.
    ``fn`` must therefore be safe to run again: keep side effects outside the database
    (HTTP calls, messages) out of it, or make them idempotent.

    :param target: a driver connection (psycopg, psycopg2, asyncpg...), a ``warm()`` keeper,
        a warmdb pool, a SQLAlchemy ``Engine`` or a ``sessionmaker``. A plain connection
        that an attempt closes cannot be replaced: the error then propagates.
    :param fn: ``fn(conn, attempt)``; receives a SQLAlchemy ``Connection`` (or ``Session``)
        for SQLAlchemy targets.
    :param retry: the budget: ``None`` or ``True`` for :data:`DEFAULT_RETRY`, an
        :class:`OCCRetryConfig` or :class:`~warmdb.retry.Backoff`, ``False`` for one attempt.
    :param with_attempt: ``False`` calls ``fn(conn)`` alone, as aurora-dsql-python-connector
        calls its callbacks.
    :param on_conflict: called with a :class:`ConflictRetryEvent` before each retry (also
        delivered to :mod:`warmdb.events` listeners as ``on_conflict_retry``).
    :param max_age: seconds; an attempt whose ``fn`` ran longer is rolled back and
        :class:`~warmdb.errors.TransactionError` raised, instead of sending a COMMIT that
        DSQL would refuse after 300 s. ``None`` (default): no limit.
    :param age_warning: seconds; an attempt that ran longer logs a warning. Default 240.
    :raises ConflictError: conflicts outlasted the budget (the last one is the ``__cause__``).
    """
    transaction = _Transaction(
        target, fn, retry, with_attempt, on_conflict, max_age, age_warning, is_async=False
    )
    return run(transaction.steps(time.sleep))


async def run_transaction_async(target: Any, fn: Callable[..., Awaitable[T]], **options: Any) -> T:
    """:func:`run_transaction` for asyncio: ``fn(conn, attempt)`` is a coroutine function.

    :param target: an async driver connection (psycopg ``AsyncConnection``, asyncpg), a
        ``warm_async()`` keeper, a warmdb async pool, an asyncpg pool, a SQLAlchemy
        ``AsyncEngine`` or an ``async_sessionmaker``.

    The other parameters are :func:`run_transaction`'s, by keyword.
    """
    import asyncio

    named = keyword_arguments_of(run_transaction, options)
    transaction = _Transaction(target, fn, *named.values(), is_async=True)
    return await run_async(transaction.steps(asyncio.sleep))
