"""warmdb's pools: each built on a well-kept pool, with warmdb's connects and checkout checks.

- :mod:`warmdb.pools.psycopg`: psycopg_pool's ``ConnectionPool`` / ``AsyncConnectionPool``
  (``warmdb.psycopg.pool()`` / ``pool_async()``);
- :mod:`warmdb.pools.asyncpg`: asyncpg's ``Pool`` (``warmdb.asyncpg.create_pool()``);
- :mod:`warmdb.pools.queue`: one sync pool over SQLAlchemy's ``QueuePool``, parametrised by
  the driver's adapter (``warmdb.psycopg2.pool()`` and the MySQL drivers' ``pool()``), and
  the checks that SQLAlchemy engines share with it;
- :mod:`warmdb.pools.async_queue`: a small asyncio pool parametrised by an async adapter,
  for async drivers without a pool to build on (``warmdb.aiomysql.pool()``).

What every pool means the same way:

- ``min_size``: connections opened when the pool opens and kept open (never closed for
  being idle; renewed when their lifetime ends);
- ``max_size``: connections open at once, at most;
- a checkout that finds none free within ``timeout`` raises :class:`~warmdb.PoolTimeout`
  (also ``TimeoutError``); a closed pool raises :class:`~warmdb.PoolClosed`;
- every connection is opened through the driver's adapter (a fresh token, the rate
  governor, retries, events), lives ``policy.max_lifetime`` minus jitter, and is judged at
  checkout by :func:`warmdb.warm.decide`; every replacement is reported as a
  :class:`~warmdb.events.RecycleEvent`.

Nothing here is imported by ``import warmdb``: each module imports its base pool's library.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from typing import Any

    from warmdb._connect import ConnectPlan
    from warmdb.pools.async_queue import AsyncConnectionPool
    from warmdb.pools.queue import ConnectionPool

__all__ = ["AsyncTransactions", "Transactions", "async_queue_pool", "queue_pool"]


class Transactions:
    """``pool.run_transaction(callback, retry=...)`` for warmdb's sync pools, as
    aurora-dsql-python-connector's pools have it (see :mod:`warmdb.transactions`).

    :ivar retry: the pool's OCC retry budget (``retry=`` of the pool constructor): an
        ``OCCRetryConfig``, a :class:`~warmdb.retry.Backoff`, ``True``/``False`` or ``None``
        (warmdb's default budget).
    """

    __slots__ = ()
    retry: Any = None

    def run_transaction(self, callback: Callable[[Any], Any], *, retry: Any = None) -> Any:
        """Run ``callback(conn)`` in a transaction on a connection of this pool, retrying it
        on OCC conflicts within *retry* (the pool's budget when ``None``).

        :raises ConflictError: conflicts went on past the retry budget.
        """
        from warmdb.transactions import merge_retry, run_transaction

        merged = merge_retry(self.retry, retry)
        return run_transaction(self, callback, retry=merged, with_attempt=False)


class AsyncTransactions:
    """:class:`Transactions` for warmdb's async pools: ``await pool.run_transaction(...)``."""

    __slots__ = ()
    retry: Any = None

    async def run_transaction(
        self, callback: Callable[[Any], Awaitable[Any]], *, retry: Any = None
    ) -> Any:
        """As :meth:`Transactions.run_transaction`, awaiting *callback*."""
        from warmdb.transactions import merge_retry, run_transaction_async

        merged = merge_retry(self.retry, retry)
        return await run_transaction_async(self, callback, retry=merged, with_attempt=False)


def queue_pool(
    plan: ConnectPlan,
    *,
    min_size: int,
    max_size: int,
    timeout: float,
    open: bool,
    retry: Any = None,
) -> ConnectionPool:
    """A :class:`warmdb.pools.queue.ConnectionPool` for a sync driver's *plan*, checked
    arguments included; what the sync drivers' ``pool()`` returns.

    :raises ConfigurationError: a bad size or timeout, or SQLAlchemy is not installed.
    """
    from warmdb.errors import ConfigurationError

    _check_sizes(min_size, max_size, timeout)
    try:
        # Imported here: a driver module alone must not pay for SQLAlchemy.
        from warmdb.pools.queue import ConnectionPool
    except ModuleNotFoundError as exc:
        name = plan.adapter.name
        raise ConfigurationError(
            f"warmdb.{name}.pool() is built on SQLAlchemy's pool: "
            f"pip install 'warmdb[{name},sqlalchemy]'"
        ) from exc
    return ConnectionPool(
        plan, min_size=min_size, max_size=max_size, timeout=timeout, open=open, retry=retry
    )


def async_queue_pool(
    plan: ConnectPlan, *, min_size: int, max_size: int, timeout: float, retry: Any = None
) -> AsyncConnectionPool:
    """A :class:`warmdb.pools.async_queue.AsyncConnectionPool` for an async driver's *plan*,
    checked arguments included, not opened yet; what ``warmdb.aiomysql.pool()`` returns.

    :raises ConfigurationError: a bad size or timeout.
    """
    _check_sizes(min_size, max_size, timeout)
    from warmdb.pools.async_queue import AsyncConnectionPool  # asyncio: async users only

    return AsyncConnectionPool(
        plan, min_size=min_size, max_size=max_size, timeout=timeout, retry=retry
    )


def _check_sizes(min_size: int, max_size: int, timeout: float) -> None:
    from warmdb._arguments import check_count, check_seconds

    check_count("min_size", min_size, minimum=0)
    check_count("max_size", max_size, minimum=max(1, min_size))
    check_seconds("timeout", timeout, positive=True)
