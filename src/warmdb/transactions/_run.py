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
"""

from __future__ import annotations

import time

from warmdb._log import get_logger
from warmdb.errors import ConfigurationError, TransactionError, UsageError
from warmdb.transactions._conflict import adapter_for_connection
from warmdb.transactions._retry import Attempts, retry_schedule

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from typing import Any, TypeVar

    from warmdb.drivers import Adapter, AsyncAdapter, SyncAdapter
    from warmdb.events import ConflictRetryEvent
    from warmdb.transactions._retry import Retry

    T = TypeVar("T")

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
    front = "run_transaction_async" if is_async else "run_transaction"
    if module.startswith("sqlalchemy."):
        target_is_async = module.startswith("sqlalchemy.ext.asyncio")
        if target_is_async != is_async:
            other = "run_transaction" if is_async else "run_transaction_async"
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


def _rollback_quietly(adapter: SyncAdapter, conn: Any) -> None:
    # The attempt's own exception is what the caller must see; a rollback that fails (the
    # connection died) only means there is nothing left to roll back.
    try:
        if not adapter.is_closed(conn):
            adapter.rollback(conn)
    except Exception as exc:
        logger.debug("rollback after a failed attempt failed: %r", exc)


async def _rollback_quietly_async(adapter: AsyncAdapter, conn: Any) -> None:
    try:
        if not adapter.is_closed(conn):
            await adapter.rollback(conn)
    except Exception as exc:
        logger.debug("rollback after a failed attempt failed: %r", exc)


def _attempt(
    adapter: SyncAdapter,
    conn: Any,
    fn: Callable[[Any, int], T],
    attempts: Attempts,
    max_age: float | None,
    age_warning: float | None,
) -> T:
    started = time.monotonic()
    committing = False
    try:
        adapter.begin(conn)
        result = fn(conn, attempts.attempt)
        _age_check(started, max_age, age_warning)
        committing = True
        adapter.commit(conn)
    except BaseException as exc:
        # Lost before COMMIT was sent: nothing of this attempt can have been committed.
        # After it, the outcome is unknown, and running fn again could apply it twice.
        if not committing and isinstance(exc, Exception):
            attempts.broken_before_commit = adapter.is_broken_by(conn, exc)
        _rollback_quietly(adapter, conn)
        raise
    return result


async def _attempt_async(
    adapter: AsyncAdapter,
    conn: Any,
    fn: Callable[[Any, int], Awaitable[T]],
    attempts: Attempts,
    max_age: float | None,
    age_warning: float | None,
) -> T:
    started = time.monotonic()
    committing = False
    try:
        await adapter.begin(conn)
        result = await fn(conn, attempts.attempt)
        _age_check(started, max_age, age_warning)
        committing = True
        await adapter.commit(conn)
    except BaseException as exc:
        if not committing and isinstance(exc, Exception):
            attempts.broken_before_commit = adapter.is_broken_by(conn, exc)
        await _rollback_quietly_async(adapter, conn)
        raise
    return result


def _sqlalchemy_call(call: Callable[[Any, int], T], conn: Any, attempts: Attempts) -> T:
    """``call`` inside SQLAlchemy's ``begin()`` block, noting a connection SQLAlchemy
    invalidated before the block's COMMIT."""
    try:
        return call(conn, attempts.attempt)
    except Exception as exc:
        attempts.broken_before_commit = bool(getattr(exc, "connection_invalidated", False))
        raise


async def _sqlalchemy_call_async(
    call: Callable[[Any, int], Awaitable[T]], conn: Any, attempts: Attempts
) -> T:
    try:
        return await call(conn, attempts.attempt)
    except Exception as exc:
        attempts.broken_before_commit = bool(getattr(exc, "connection_invalidated", False))
        raise


def _check_options(max_age: float | None, age_warning: float | None) -> None:
    if max_age is None and age_warning == _AGE_WARNING:
        return
    from warmdb._arguments import check_seconds

    check_seconds("max_age", max_age, optional=True, positive=True)
    check_seconds("age_warning", age_warning, optional=True, positive=True)


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
    _check_options(max_age, age_warning)
    call = fn if with_attempt else (lambda conn, _attempt: fn(conn))
    attempts = Attempts(retry_schedule(retry), on_conflict)
    kind = _kind(target, is_async=False)
    while True:
        adapter: Any = None
        replaceable = True
        try:
            if kind == CONNECTION:
                adapter = adapter_for_connection(target, is_async=False)
                replaceable = False
                return _attempt(adapter, target, call, attempts, max_age, age_warning)
            if kind == CHECKOUT:
                checkout = target.connection()
                if not hasattr(checkout, "__enter__"):
                    raise UsageError(
                        f"run_transaction cannot use {type(target).__name__}: it is async, "
                        "use run_transaction_async"
                    )
                with checkout as conn:
                    adapter = adapter_for_connection(conn, is_async=False)
                    return _attempt(adapter, conn, call, attempts, max_age, age_warning)
            if kind == SA_CONNECTION:
                with target.begin():
                    return _sqlalchemy_call(call, target, attempts)
            with target.begin() as conn_or_session:
                return _sqlalchemy_call(call, conn_or_session, attempts)
        except Exception as exc:
            if kind in (ENGINE, SESSIONS, SA_CONNECTION):
                adapter = _dialect_adapter(target, is_async=False)
                if kind == SA_CONNECTION:
                    replaceable = not (target.closed or target.invalidated)
            elif kind == CONNECTION:
                replaceable = not adapter.is_closed(target)
            delay = attempts.after_failure(exc, adapter, replaceable=replaceable)
            if delay is None:
                raise
        time.sleep(delay)


async def run_transaction_async(
    target: Any,
    fn: Callable[..., Awaitable[T]],
    *,
    retry: Retry = None,
    with_attempt: bool = True,
    on_conflict: Callable[[ConflictRetryEvent], object] | None = None,
    max_age: float | None = None,
    age_warning: float | None = 240.0,
) -> T:
    """:func:`run_transaction` for asyncio: ``fn(conn, attempt)`` is a coroutine function.

    :param target: an async driver connection (psycopg ``AsyncConnection``, asyncpg), a
        ``warm_async()`` keeper, a warmdb async pool, an asyncpg pool, a SQLAlchemy
        ``AsyncEngine`` or an ``async_sessionmaker``.

    The other parameters are :func:`run_transaction`'s.
    """
    import asyncio

    _check_options(max_age, age_warning)
    call = fn if with_attempt else (lambda conn, _attempt: fn(conn))
    attempts = Attempts(retry_schedule(retry), on_conflict)
    kind = _kind(target, is_async=True)
    while True:
        adapter: Any = None
        replaceable = True
        try:
            if kind == CONNECTION:
                adapter = adapter_for_connection(target, is_async=True)
                replaceable = False
                return await _attempt_async(adapter, target, call, attempts, max_age, age_warning)
            if kind in (CHECKOUT, ACQUIRE):
                checkout = target.connection() if kind == CHECKOUT else target.acquire()
                if not hasattr(checkout, "__aenter__"):
                    raise UsageError(
                        f"run_transaction_async cannot use {type(target).__name__}: it is "
                        "sync, use run_transaction"
                    )
                async with checkout as conn:
                    adapter = adapter_for_connection(conn, is_async=True)
                    return await _attempt_async(adapter, conn, call, attempts, max_age, age_warning)
            if kind == SA_CONNECTION:
                async with target.begin():
                    return await _sqlalchemy_call_async(call, target, attempts)
            async with target.begin() as conn_or_session:
                return await _sqlalchemy_call_async(call, conn_or_session, attempts)
        except Exception as exc:
            if kind in (ENGINE, SESSIONS, SA_CONNECTION):
                adapter = _dialect_adapter(target, is_async=True)
                if kind == SA_CONNECTION:
                    replaceable = not (target.closed or target.invalidated)
            elif kind == CONNECTION:
                replaceable = not adapter.is_closed(target)
            delay = attempts.after_failure(exc, adapter, replaceable=replaceable)
            if delay is None:
                raise
        await asyncio.sleep(delay)
