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
    from collections.abc import Awaitable, Callable, Mapping
    from typing import Any

    from warmdb._connect import ConnectPlan
    from warmdb.drivers import AsyncAdapter, SyncAdapter
    from warmdb.policy import Policy
    from warmdb.pools.async_queue import AsyncConnectionPool
    from warmdb.pools.queue import ConnectionPool

__all__ = [
    "POOL_OPTIONS",
    "AsyncTransactions",
    "SizedPool",
    "Transactions",
    "async_queue_pool",
    "pool_class_on_demand",
    "queue_pool",
]


class SizedPool:
    """What warmdb's own pools (:class:`~warmdb.pools.queue.ConnectionPool`,
    :class:`~warmdb.pools.async_queue.AsyncConnectionPool`) share: their plan and options,
    the policy they apply, and how they show.

    :ivar min_size: connections opened at open and kept.
    :ivar max_size: connections open at once, at most.
    :ivar timeout: seconds a checkout waits for a free connection.
    :ivar retry: the OCC retry budget of ``run_transaction()``.
    """

    __slots__ = ("_adapter", "_closed", "_plan", "max_size", "min_size", "retry", "timeout")

    def __init__(
        self, plan: ConnectPlan, *, min_size: int, max_size: int, timeout: float, retry: Any
    ) -> None:
        self._plan = plan
        self._adapter = plan.adapter
        self.min_size = min_size
        self.max_size = max_size
        self.timeout = timeout
        self.retry = retry
        self._closed = False

    @property
    def policy(self) -> Policy:
        """The :class:`~warmdb.policy.Policy` the checkout checks apply."""
        policy: Policy = self._plan.policy
        return policy

    @property
    def checked_out(self) -> int:
        """Connections currently handed out."""
        raise NotImplementedError

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.checked_out} checked out"
        return (
            f"<{type(self).__name__} {self._adapter.name} {self._plan.endpoint!r} "
            f"min_size={self.min_size} max_size={self.max_size} {state}>"
        )


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


def queue_pool(adapter: SyncAdapter, dsn: str | None, kwargs: Mapping[str, Any]) -> ConnectionPool:
    """A :class:`warmdb.pools.queue.ConnectionPool` of *adapter*'s connections: what the sync
    drivers' ``pool()`` returns.

    :param kwargs: the ``pool()`` call's keyword arguments: the pool's options
        (:data:`POOL_OPTIONS`, and ``open=True``), ``policy``, ``custom_credentials_provider``,
        the endpoint's and the driver's arguments.
    :raises ConfigurationError: a bad argument, or SQLAlchemy is not installed.
    """
    from warmdb.errors import ConfigurationError

    kwargs = dict(kwargs)
    options = _pool_options(kwargs, open=True)
    plan = adapter.plan(dsn, kwargs)
    try:
        # Imported here: a driver module alone must not pay for SQLAlchemy.
        from warmdb.pools.queue import ConnectionPool
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            f"warmdb.{adapter.name}.pool() is built on SQLAlchemy's pool: "
            f"pip install 'warmdb[{adapter.name},sqlalchemy]'"
        ) from exc
    return ConnectionPool(plan, **options)


def async_queue_pool(
    adapter: AsyncAdapter, dsn: str | None, kwargs: Mapping[str, Any]
) -> AsyncConnectionPool:
    """A :class:`warmdb.pools.async_queue.AsyncConnectionPool` of *adapter*'s connections, not
    opened yet: what ``warmdb.aiomysql.pool()`` returns.

    :param kwargs: as for :func:`queue_pool`, without ``open`` (``await`` the pool or use
        ``async with`` to open it).
    :raises ConfigurationError: a bad argument.
    """
    from warmdb.pools.async_queue import AsyncConnectionPool  # asyncio: async users only

    kwargs = dict(kwargs)
    options = _pool_options(kwargs)
    return AsyncConnectionPool(adapter.plan(dsn, kwargs), **options)


#: The options every warmdb-built pool takes, and their defaults.
POOL_OPTIONS: dict[str, Any] = {
    "min_size": 1,
    "max_size": 10,
    "timeout": 30.0,
    "retry": None,
}


def _pool_options(kwargs: dict[str, Any], **more: Any) -> dict[str, Any]:
    """Take the pool's options (:data:`POOL_OPTIONS` and *more*, with their defaults) out of
    a ``pool()`` call's *kwargs*, checked."""
    from warmdb._arguments import check_count, check_seconds

    defaults = {**POOL_OPTIONS, **more}
    options = {name: kwargs.pop(name, default) for name, default in defaults.items()}
    check_count("min_size", options["min_size"], minimum=0)
    check_count("max_size", options["max_size"], minimum=max(1, options["min_size"]))
    check_seconds("timeout", options["timeout"], positive=True)
    return options


def pool_class_on_demand(module: str) -> Callable[[str], object]:
    """A module ``__getattr__`` that gives ``ConnectionPool`` (the class a sync driver's
    ``pool()`` returns) on first use, so importing the driver module does not import
    SQLAlchemy."""

    def __getattr__(name: str) -> object:
        if name == "ConnectionPool":
            from warmdb.pools.queue import ConnectionPool

            return ConnectionPool
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
