"""write_batches and write_batches_async: many rows, in transactions DSQL accepts.

DSQL refuses a transaction that modifies more than 3,000 rows, sends more than 10 MiB or
lives more than 300 s (SQLSTATE 54000). The rows are read from the caller's iterable one
batch at a time (memory holds one batch, whatever the total), and each batch is one
transaction run by :func:`~warmdb.transactions.run_transaction`, so a conflict runs the batch
again. A batch is cut at *batch_rows* rows or an estimated *batch_bytes*, whichever comes
first, and the rows of a batch are all collected before its transaction begins, so a slow
source never ages a transaction. When a batch takes more than half of *batch_time*, the next
ones get fewer rows.

Each driver's fastest ingest path for one statement and many rows (:func:`_ingest`):
psycopg's ``executemany`` (pipelined), asyncpg's ``executemany``, psycopg2's multi-row
``VALUES`` (``psycopg2.extras.execute_values``), SQLAlchemy's ``exec_driver_sql`` with a list
of rows (the dialect's executemany), the DB-API ``executemany`` for the rest. A statement
that starts with ``COPY ... FROM STDIN`` is run as COPY where the driver has it (psycopg,
asyncpg): Aurora DSQL accepts ``COPY FROM STDIN`` (its data-loading guide loads with psql's
``\\copy``), within the same per-transaction limits.
"""

from __future__ import annotations

import itertools
import re
import time
from functools import partial

from warmdb._arguments import check_count, check_seconds, keyword_arguments_of
from warmdb._steps import run, run_async
from warmdb.errors import BatchWriteError, ConfigurationError
from warmdb.transactions._conflict import adapter_for_connection
from warmdb.transactions._run import run_transaction, run_transaction_async

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
    from typing import Any

    from warmdb.events import ConflictRetryEvent
    from warmdb.transactions._retry import Retry

__all__ = [
    "DEFAULT_BATCH_BYTES",
    "DEFAULT_BATCH_ROWS",
    "DEFAULT_BATCH_TIME",
    "BatchResult",
    "row_bytes",
    "split_batches",
    "write_batches",
    "write_batches_async",
]

#: Rows per transaction: a margin below DSQL's 3,000, for statements that also touch an
#: index or a second row per row (each counts).
DEFAULT_BATCH_ROWS = 2_500
#: Estimated bytes per transaction: 2 MiB below DSQL's 10 MiB, for the estimate's error.
DEFAULT_BATCH_BYTES = 8 * 1024 * 1024
#: Seconds a batch may take before the next ones shrink: well under DSQL's 300 s.
DEFAULT_BATCH_TIME = 60.0

# What a row costs beyond its values (a Bind message, or the parentheses and commas of a
# VALUES list), and a value of fixed size (numbers, booleans, NULL: at most about 30 bytes
# as text, with its length word).
_ROW_OVERHEAD = 16
_VALUE_OVERHEAD = 4
_FIXED_BYTES = 36


def row_bytes(row: Sequence[Any] | dict[str, Any]) -> int:
    """An upper estimate of the bytes *row* adds to a transaction's size.

    Text counts its UTF-8 length, binary data twice its length (psycopg2 sends it as hex
    text), numbers, booleans and NULL :data:`_FIXED_BYTES`, anything else its ``str()``.
    The common kinds are tested first by exact type: this runs once per row written.
    """
    total = _ROW_OVERHEAD
    for value in row.values() if type(row) is dict else row:
        kind = type(value)
        if kind is str:
            total += _VALUE_OVERHEAD + (len(value) if value.isascii() else len(value.encode()))
        elif kind is int or kind is float or value is None or kind is bool:
            total += _FIXED_BYTES
        else:
            total += _other_bytes(value)
    return total


def _other_bytes(value: object) -> int:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _VALUE_OVERHEAD + 2 * len(value)
    if isinstance(value, str):
        return _VALUE_OVERHEAD + len(value.encode())
    if isinstance(value, (list, tuple)):  # arrays
        return row_bytes(value)
    # Dates, decimals, UUIDs, JSON documents: their text, which is what most drivers send.
    return _VALUE_OVERHEAD + max(_FIXED_BYTES, len(str(value)))


def split_batches(
    rows: Iterator[Any], *, max_rows: Callable[[], int], max_bytes: int | None
) -> Iterator[list[Any]]:
    """Cut *rows* into lists of at most ``max_rows()`` rows and *max_bytes* estimated bytes
    (:func:`row_bytes`); a single row over *max_bytes* is a batch of its own.

    ``max_rows`` is asked before each batch, so the caller can shrink batches as it goes.
    """
    pending: Any = None
    while True:
        limit = max_rows()
        if max_bytes is None:
            batch = list(itertools.islice(rows, limit))
            if not batch:
                return
            yield batch
            continue
        batch = []
        size = 0
        if pending is not None:
            batch.append(pending[0])
            size = pending[1]
            pending = None
        for row in rows:
            cost = row_bytes(row)
            if batch and size + cost > max_bytes:
                pending = (row, cost)
                break
            batch.append(row)
            size += cost
            if len(batch) >= limit:
                break
        if not batch:
            return
        yield batch


class BatchResult:
    """What :func:`write_batches` wrote.

    :ivar batches: transactions committed.
    :ivar rows: rows committed.
    :ivar retries: conflicts that made a batch run again.
    :ivar elapsed: seconds from the start to the last commit.
    :ivar resume_from: the position of the first row not written (rows skipped by
        ``resume_from=`` included): the total when everything was written.
    """

    __slots__ = ("batches", "elapsed", "resume_from", "retries", "rows")

    def __init__(self, resume_from: int) -> None:
        self.batches = 0
        self.rows = 0
        self.retries = 0
        self.elapsed = 0.0
        self.resume_from = resume_from

    def __repr__(self) -> str:
        return (
            f"BatchResult(batches={self.batches}, rows={self.rows}, retries={self.retries}, "
            f"elapsed={self.elapsed:.3f}, resume_from={self.resume_from})"
        )


class _Plan:
    """The options of one write_batches call, checked, and its progress: shared by the sync
    and async fronts."""

    def __init__(
        self,
        rows: Iterable[Any],
        batch_rows: int,
        batch_bytes: int | None,
        batch_time: float,
        resume_from: int,
        progress: Callable[[BatchResult], object] | None,
    ) -> None:
        check_count("batch_rows", batch_rows, minimum=1)
        if batch_bytes is not None:
            check_count("batch_bytes", batch_bytes, minimum=1)
        check_seconds("batch_time", batch_time, positive=True)
        check_count("resume_from", resume_from, minimum=0)
        self.batch_time = batch_time
        self.progress = progress
        self.result = BatchResult(resume_from)
        self.started = time.monotonic()
        self._rows_now = batch_rows
        source = iter(rows)
        if resume_from:
            # Consumed, not kept: resuming costs no memory either.
            for _ in itertools.islice(source, resume_from):
                pass
        self.batches = split_batches(source, max_rows=lambda: self._rows_now, max_bytes=batch_bytes)

    def on_conflict(self, event: ConflictRetryEvent) -> None:
        self.result.retries += 1

    def committed(self, rows: int, seconds: float) -> None:
        result = self.result
        result.batches += 1
        result.rows += rows
        result.resume_from += rows
        result.elapsed = time.monotonic() - self.started
        if seconds > self.batch_time / 2 and self._rows_now > 1:
            # Keep the next batches at a quarter of the budget, from this one's pace.
            self._rows_now = max(1, min(self._rows_now, int(rows * self.batch_time / 4 / seconds)))
        if self.progress is not None:
            self.progress(result)

    def steps(
        self,
        transact: Callable[..., Any],
        target: Any,
        ingest: Callable[[Any, str, list[Any]], Any],
        statement: str,
        retry: Retry,
    ) -> Generator[Callable[[], Any], Any, BatchResult]:
        """Each batch as one transaction, as steps (:mod:`warmdb._steps`): *transact* is
        :func:`run_transaction` or its async twin, *ingest* :func:`_ingest` or its."""
        for batch in self.batches:

            def write(conn: Any, attempt: int, batch: list[Any] = batch) -> Any:
                return ingest(conn, statement, batch)

            started = time.monotonic()
            try:
                yield partial(transact, target, write, retry=retry, on_conflict=self.on_conflict)
            except Exception as exc:
                raise self.failed(exc) from exc
            self.committed(len(batch), time.monotonic() - started)
        return self.result

    def failed(self, exc: BaseException) -> BatchWriteError:
        result = self.result
        return BatchWriteError(
            f"write_batches stopped after committing {result.rows} row(s) in "
            f"{result.batches} batch(es): {type(exc).__name__}; call again with "
            f"resume_from={result.resume_from} to continue",
            committed=result.rows,
            resume_from=result.resume_from,
        )


_VALUES = re.compile(r"\bvalues\s*(\((?:[^()']|'[^']*'|\([^()]*\))*\))", re.IGNORECASE)
_COPY = re.compile(
    r"\s*copy\s+(?:(?P<schema>\w+)\.)?(?P<table>\w+)\s*(?:\((?P<columns>[^)]*)\))?\s+from\s+stdin",
    re.IGNORECASE,
)
_MULTI_ROW: dict[str, tuple[str, str] | None] = {}
#: Rows per statement on psycopg2's multi-row VALUES path.
PSYCOPG2_PAGE_ROWS = 1_000


def _multi_row(statement: str) -> tuple[str, str] | None:
    """psycopg2's ``execute_values`` form of a one-row INSERT: the statement with ``VALUES
    %s`` and the row template; ``None`` if the statement has no VALUES list."""
    if statement not in _MULTI_ROW:
        matches = list(_VALUES.finditer(statement))
        found = matches[-1] if matches else None
        _MULTI_ROW[statement] = (
            None
            if found is None
            else (
                statement[: found.start(1)] + "%s" + statement[found.end(1) :],
                found.group(1),
            )
        )
    return _MULTI_ROW[statement]


def _ingest(conn: Any, statement: str, batch: list[Any]) -> None:
    """Run *statement* once per row of *batch* on *conn*, the fastest way its driver has."""
    if hasattr(conn, "exec_driver_sql"):  # SQLAlchemy Connection
        conn.exec_driver_sql(statement, batch)
        return
    if hasattr(conn, "get_bind"):  # SQLAlchemy Session
        conn.connection().exec_driver_sql(statement, batch)
        return
    adapter = adapter_for_connection(conn, is_async=False)
    copy = _COPY.match(statement)
    if adapter.name == "psycopg" and copy:
        with conn.cursor() as cur, cur.copy(statement) as writer:
            for row in batch:
                writer.write_row(row)
        return
    if copy:
        raise ConfigurationError(f"write_batches: COPY is not available with {adapter.name}")
    if adapter.name == "psycopg2":
        multi = _multi_row(statement)
        if multi is not None:
            from psycopg2.extensions import encodings
            from psycopg2.extras import execute_values

            # As bytes: a str template is encoded again for every row (a third slower).
            template = multi[1].encode(encodings[conn.encoding])
            with conn.cursor() as cur:
                execute_values(
                    cur, multi[0], batch, template=template, page_size=PSYCOPG2_PAGE_ROWS
                )
            return
    with conn.cursor() as cur:
        cur.executemany(statement, batch)


async def _ingest_async(conn: Any, statement: str, batch: list[Any]) -> None:
    """:func:`_ingest` for async connections."""
    if hasattr(conn, "exec_driver_sql"):  # SQLAlchemy AsyncConnection
        await conn.exec_driver_sql(statement, batch)
        return
    if hasattr(conn, "get_bind"):  # SQLAlchemy AsyncSession
        await (await conn.connection()).exec_driver_sql(statement, batch)
        return
    adapter = adapter_for_connection(conn, is_async=True)
    copy = _COPY.match(statement)
    if adapter.name == "asyncpg":
        if copy:
            columns = copy.group("columns")
            await conn.copy_records_to_table(
                copy.group("table"),
                records=batch,
                columns=[c.strip() for c in columns.split(",")] if columns else None,
                schema_name=copy.group("schema"),
            )
        else:
            await conn.executemany(statement, batch)
        return
    if adapter.name == "psycopg" and copy:
        async with conn.cursor() as cur, cur.copy(statement) as writer:
            for row in batch:
                await writer.write_row(row)
        return
    if copy:
        raise ConfigurationError(f"write_batches: COPY is not available with {adapter.name}")
    async with conn.cursor() as cur:
        await cur.executemany(statement, batch)


def write_batches(
    target: Any,
    statement: str,
    rows: Iterable[Any],
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    batch_bytes: int | None = DEFAULT_BATCH_BYTES,
    batch_time: float = DEFAULT_BATCH_TIME,
    resume_from: int = 0,
    retry: Retry = None,
    progress: Callable[[BatchResult], object] | None = None,
) -> BatchResult:
    """Run *statement* once per row of *rows*, in transactions within DSQL's limits.

    ::

        result = write_batches(pool, "INSERT INTO t (id, v) VALUES (%s, %s)", rows)

    :param target: what :func:`~warmdb.transactions.run_transaction` takes: a connection,
        keeper, pool, SQLAlchemy engine or session factory.
    :param statement: one row's statement in the driver's parameter style (``%s`` for
        psycopg / psycopg2 and SQLAlchemy over them, ``$1`` for asyncpg), or
        ``COPY table (columns) FROM STDIN`` (psycopg, asyncpg).
    :param rows: any iterable of parameter tuples (or mappings, where the statement names
        them); read once, one batch at a time.
    :param batch_rows: rows per transaction at most; default 2,500 (DSQL allows 3,000).
    :param batch_bytes: estimated bytes per transaction at most (:func:`row_bytes`);
        default 8 MiB (DSQL allows 10 MiB); ``None`` to count rows only.
    :param batch_time: seconds; a batch slower than half of this makes the next ones
        smaller. Default 60 (DSQL allows 300).
    :param resume_from: skip this many rows first: a :class:`~warmdb.errors.BatchWriteError`'s
        ``resume_from``, with the same rows in the same order.
    :param retry: the conflict budget of each batch, as :func:`run_transaction`'s.
    :param progress: called with the :class:`BatchResult` so far after each commit.
    :raises BatchWriteError: a batch failed for good (its ``__cause__``); ``committed`` rows
        are in the database exactly once and ``resume_from`` continues after them. A
        connection lost while a COMMIT was in flight leaves that one batch in doubt: use a
        statement that skips duplicates (``ON CONFLICT DO NOTHING``) when that matters.
    """
    plan = _Plan(rows, batch_rows, batch_bytes, batch_time, resume_from, progress)
    return run(plan.steps(run_transaction, target, _ingest, statement, retry))


async def write_batches_async(
    target: Any, statement: str, rows: Iterable[Any], **options: Any
) -> BatchResult:
    """:func:`write_batches` for asyncio targets (those of :func:`run_transaction_async`).

    *rows* is a plain iterable here too; the parameters are :func:`write_batches`'s, by
    keyword.
    """
    named = keyword_arguments_of(write_batches, options)
    retry = named.pop("retry")
    plan = _Plan(rows, **named)
    return await run_async(
        plan.steps(run_transaction_async, target, _ingest_async, statement, retry)
    )
