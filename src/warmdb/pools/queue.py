"""One thread-safe sync pool over SQLAlchemy's ``QueuePool``, for any sync driver adapter,
and the checkout checks it shares with warmdb's SQLAlchemy engines.

:class:`ConnectionPool` is ``warmdb.psycopg2.pool()`` and the MySQL drivers' ``pool()``:
psycopg2's own pool has no lifetime, no checks and no waiting, so warmdb builds on SQLAlchemy's
well-kept ``QueuePool`` (most-recent-first reuse, overflow, timeouts) and runs its checks at
every checkout itself, sparing SQLAlchemy's checkout and checkin event dispatch.

:func:`watch_pool` applies the same checks to any SQLAlchemy pool through its documented
events (``connect``, ``checkout``, ``checkin``, ``invalidate``): the engines of
:mod:`warmdb.sqlalchemy` use it. A connection that must be replaced at checkout raises
:class:`sqlalchemy.exc.DisconnectionError` there, SQLAlchemy's pessimistic-disconnect recipe.
"""

from __future__ import annotations

import threading
import time

import sqlalchemy.exc
from sqlalchemy import event
from sqlalchemy.pool import QueuePool

from warmdb._connect import open_connection
from warmdb.errors import PoolClosed, PoolTimeout, UsageError
from warmdb.policy import random_fraction as policy_random_fraction
from warmdb.pools import SizedPool, Transactions
from warmdb.warm import PING, REUSE, KeptConnection, decide, report_recycle

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager
    from typing import Any

    from sqlalchemy.pool import ConnectionPoolEntry, Pool, PoolProxiedConnection

    from warmdb._connect import ConnectPlan
    from warmdb.drivers import SyncAdapter

__all__ = ["ConnectionPool", "PoolCheck", "watch_pool"]

# Where the kept-connection record lives in a pool entry's info dict (SQLAlchemy clears the
# dict whenever the entry gets a new connection).
_INFO_KEY = "warmdb.kept"


def watch_pool(
    pool: Pool,
    plan: ConnectPlan,
    *,
    ping: Callable[[Any], object],
    unwrap: Callable[[Any], Any] | None = None,
    checkout_events: bool = True,
    clock: Callable[[], float] = time.monotonic,
    random_fraction: Callable[[], float] = policy_random_fraction,
) -> PoolCheck:
    """Apply warmdb's checkout checks to a SQLAlchemy *pool*, through its events.

    :param pool: the pool (an engine's ``engine.pool``, or a standalone one).
    :param plan: gives the adapter (``is_closed``, ``fileno``), the policy and the endpoint
        reported in events.
    :param ping: one round trip on a pool (DBAPI) connection; raises when it is dead.
    :param unwrap: the driver's connection inside a pool connection, for the adapter's
        checks (SQLAlchemy's async dialects wrap it: ``lambda c: c.driver_connection``);
        ``None`` when the pool holds the driver's connections themselves.
    :param checkout_events: run the checks from the pool's checkout and checkin events (the
        engines). ``False`` when the caller runs :meth:`PoolCheck.checked_out` after
        ``pool.connect()`` and sets the record's ``last_used`` when it gives the connection
        back (:class:`ConnectionPool`).
    :param clock: monotonic time, for ages.
    :param random_fraction: chooses each connection's share of the lifetime jitter.
    :returns: the checks, registered.
    """
    check = PoolCheck(plan, ping, unwrap, clock, random_fraction)
    event.listen(pool, "connect", check.on_connect)
    event.listen(pool, "invalidate", check.on_invalidate)
    if checkout_events:
        event.listen(pool, "checkout", check.on_checkout)
        event.listen(pool, "checkin", check.on_checkin)
    return check


class PoolCheck:
    """warmdb's checks for the connections of a SQLAlchemy pool (see :func:`watch_pool`).

    Each pool entry's ``info`` holds its :class:`~warmdb.warm.KeptConnection` record.
    """

    __slots__ = ("_adapter", "_clock", "_ping", "_plan", "_policy", "_random", "_unwrap")

    def __init__(
        self,
        plan: ConnectPlan,
        ping: Callable[[Any], object],
        unwrap: Callable[[Any], Any] | None,
        clock: Callable[[], float],
        random_fraction: Callable[[], float],
    ) -> None:
        self._plan = plan
        self._adapter = plan.adapter
        self._policy = plan.policy
        self._ping = ping
        self._unwrap = unwrap
        self._clock = clock
        self._random = random_fraction

    def checked_out(self, info: dict[Any, Any], dbapi_connection: Any) -> KeptConnection | None:
        """Judge a connection at checkout by its entry's *info*.

        :returns: its record when it may be handed out (the caller sets ``last_used`` when it
            comes back); ``None`` when it must be replaced (reported here, and not again when
            the pool invalidates it).
        """
        kept: KeptConnection = info[_INFO_KEY]
        conn = dbapi_connection if self._unwrap is None else self._unwrap(dbapi_connection)
        now = self._clock()
        # decide()'s action performed here rather than through judge(): the ping takes the
        # pool's (DBAPI) connection, which for async dialects wraps the driver's.
        action = decide(kept, now, self._policy, self._adapter, conn)
        if action == REUSE:
            return kept
        if action == PING:
            try:
                self._ping(dbapi_connection)
            except Exception:
                action = "ping-failed"
            else:
                kept.last_used = now
                return kept
        del info[_INFO_KEY]
        report_recycle(self._plan, kept, action, self._clock())
        return None

    def on_connect(self, dbapi_connection: object, record: ConnectionPoolEntry) -> None:
        record.info[_INFO_KEY] = KeptConnection(self._clock(), self._policy, self._random())

    def on_checkout(
        self, dbapi_connection: object, record: ConnectionPoolEntry, proxy: object
    ) -> None:
        if self.checked_out(record.info, dbapi_connection) is None:
            # SQLAlchemy's pessimistic-disconnect recipe: the pool invalidates (closes) this
            # connection, opens a new one and checks it again.
            raise sqlalchemy.exc.DisconnectionError("warmdb: replacing the connection")

    def on_checkin(self, dbapi_connection: object, record: ConnectionPoolEntry) -> None:
        kept: KeptConnection | None = record.info.get(_INFO_KEY)
        if kept is not None:  # None once invalidated
            kept.last_used = self._clock()

    def on_invalidate(
        self, dbapi_connection: object, record: ConnectionPoolEntry, exception: BaseException | None
    ) -> None:
        # SQLAlchemy found the connection broken while in use (or the caller invalidated it).
        kept: KeptConnection | None = record.info.pop(_INFO_KEY, None)
        if kept is not None:
            report_recycle(self._plan, kept, "broken", self._clock())


class ConnectionPool(SizedPool, Transactions):
    """A thread-safe pool of a sync driver's connections, made by the driver's ``pool()``.

    ::

        with pool.connection() as conn:        # the driver's own connection object
            ...

        conn = pool.getconn()                  # or by hand, as with psycopg2.pool
        try:
            ...
        finally:
            pool.putconn(conn)

    A connection that comes back with a transaction open is rolled back; one broken by the
    caller's work is discarded and replaced at a later checkout. Work that fails is never
    retried.

    :param plan: the driver's adapter, the endpoint, the policy.
    :param min_size: connections opened when the pool opens and kept (at least 0).
    :param max_size: connections open at once, at most; those beyond *min_size* are closed
        when returned.
    :param timeout: seconds a checkout waits for a free connection when *max_size* are in use.
    :param open: open the pool now (its *min_size* connections); ``False`` leaves it to
        :meth:`open` or the first checkout.
    :param retry: the OCC retry budget of :meth:`run_transaction`.

    :ivar min_size: connections opened at open and kept.
    :ivar max_size: connections open at once, at most.
    :ivar timeout: seconds a checkout waits for a free connection.
    """

    def __init__(self, plan: ConnectPlan, *, open: bool = True, **options: Any) -> None:
        super().__init__(plan, **options)
        min_size, max_size, timeout = self.min_size, self.max_size, self.timeout
        self._adapter: SyncAdapter = plan.adapter
        # QueuePool keeps pool_size connections when they come back; 0 would mean no limit.
        self._pool = QueuePool(
            lambda: open_connection(plan),
            pool_size=max(min_size, 1),
            max_overflow=max_size - max(min_size, 1),
            timeout=timeout,
            use_lifo=True,
            reset_on_return=None,  # warmdb resets through the adapter (_PoolCheckout.__exit__)
        )
        self._check = watch_pool(self._pool, plan, ping=self._adapter.ping, checkout_events=False)
        self._lock = threading.Lock()
        # getconn() hands out the bare connection; putconn() needs SQLAlchemy's handle back.
        self._handed_out: dict[int, _PoolCheckout] = {}
        self._opened = False
        if open:
            self.open()

    @property
    def checked_out(self) -> int:
        """Connections currently handed out."""
        return self._pool.checkedout()

    def open(self) -> None:
        """Open the pool's *min_size* connections, if not done yet.

        :raises ConnectError: a connection could not be opened within the policy's retries.
        :raises PoolClosed: the pool is closed.
        """
        if self._closed:
            raise PoolClosed("the pool is closed")
        with self._lock:
            if self._opened:
                return
            self._opened = True
        handles = []
        try:
            for _ in range(self.min_size):
                handles.append(self._pool.connect())
        finally:
            for handle in handles:
                handle.close()

    def connection(self) -> AbstractContextManager[Any]:
        """Check a connection out for the ``with`` block: ``with pool.connection() as conn:``.

        :raises ConnectError: no connection could be opened within the policy's retries.
        :raises PoolTimeout: no connection was free within *timeout*.
        :raises PoolClosed: the pool is closed.
        """
        return _PoolCheckout(self)

    def getconn(self) -> Any:
        """Check a connection out; give it back with :meth:`putconn`.

        :raises ConnectError: no connection could be opened within the policy's retries.
        :raises PoolTimeout: no connection was free within *timeout*.
        :raises PoolClosed: the pool is closed.
        """
        checkout = _PoolCheckout(self)
        conn = checkout.__enter__()
        with self._lock:
            self._handed_out[id(conn)] = checkout
        return conn

    def putconn(self, conn: Any, *, close: bool = False) -> None:
        """Give back a connection from :meth:`getconn`; ``close=True`` discards it.

        :raises UsageError: *conn* is not checked out from this pool.
        """
        with self._lock:
            checkout = self._handed_out.pop(id(conn), None)
        if checkout is None:
            raise UsageError("putconn: this connection is not checked out from this pool")
        if close:
            checkout.discard()
        else:
            checkout.__exit__(None, None, None)

    def close(self) -> None:
        """Close the idle connections; those checked out are closed when they come back."""
        self._closed = True
        self._pool.dispose()

    def __enter__(self) -> ConnectionPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _PoolCheckout:
    """One checkout of a :class:`ConnectionPool`: the context manager that
    :meth:`~ConnectionPool.connection` returns (lighter than a generator), also behind
    :meth:`~ConnectionPool.getconn` and :meth:`~ConnectionPool.putconn`."""

    __slots__ = ("_handle", "_kept", "_pool")

    _handle: PoolProxiedConnection  # SQLAlchemy's, once entered
    _kept: KeptConnection

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def __enter__(self) -> Any:
        pool = self._pool
        if pool._closed:
            raise PoolClosed("the pool is closed")
        check = pool._check
        while True:
            try:
                handle = pool._pool.connect()
            except sqlalchemy.exc.TimeoutError as exc:
                raise PoolTimeout(
                    f"no connection free within timeout={pool.timeout} s: "
                    f"all max_size={pool.max_size} are checked out"
                ) from exc
            conn = handle.dbapi_connection
            # The entry's info dict: handle.info is the same dict, but its memoizing property
            # costs 300 ns on each new handle, a third of warmdb's overhead per checkout
            # (guarded by tests/unit/test_pools.py).
            kept = check.checked_out(handle._connection_record.info, conn)
            if kept is not None:
                self._handle = handle
                self._kept = kept
                return conn
            # Closes it and gives its slot back; the next connect() opens a new connection in
            # it (LIFO: the same slot) or hands out the next idle one, checked in turn.
            handle.invalidate()

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        # Back to the pool, or discarded when closed or broken by the caller's exception.
        pool = self._pool
        adapter = pool._adapter
        handle = self._handle
        conn = handle.dbapi_connection
        if adapter.is_closed(conn) or (exc is not None and adapter.is_broken_by(conn, exc)):
            self.discard()
            return
        if pool._closed:
            handle.detach()
            adapter.close(conn)
            return
        try:
            adapter.reset(conn)
        except Exception:
            self.discard()
            return
        self._kept.last_used = time.monotonic()
        handle.close()

    def discard(self) -> None:
        """Close the connection instead of returning it (reported as a "broken" recycle)."""
        self._handle.invalidate()  # SQLAlchemy closes it and frees its slot
