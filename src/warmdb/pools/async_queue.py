"""One asyncio pool for async drivers without a pool warmdb can build on (aiomysql).

aiomysql's own ``Pool`` opens its connections with fixed arguments (the password among them),
so it cannot sign a fresh token per connect without overriding its private fill loop; this
pool is small instead, and means what warmdb's other pools mean (:mod:`warmdb.pools`):

- connections are opened through the driver's adapter (a fresh token, the rate governors,
  retries, events) and judged at checkout by :func:`warmdb.warm.judge_async`;
- idle connections are reused most-recent first, so the least used ones age out;
- ``min_size`` are opened by :meth:`AsyncConnectionPool.open` and kept; connections beyond
  it are closed when they come back with nobody waiting;
- a checkout waits at most ``timeout`` for a free connection, in arrival order, then raises
  :class:`~warmdb.PoolTimeout`.

A pool belongs to the event loop it is first used in, as its connections do.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from warmdb._connect import open_connection_async
from warmdb.errors import PoolClosed, PoolTimeout, UsageError
from warmdb.policy import random_fraction
from warmdb.pools import AsyncTransactions, SizedPool
from warmdb.warm import KeptConnection, judge_async, report_recycle

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Generator
    from types import TracebackType
    from typing import Any

    from warmdb._connect import ConnectPlan
    from warmdb.drivers import AsyncAdapter

__all__ = ["AsyncConnectionPool"]


class AsyncConnectionPool(SizedPool, AsyncTransactions):
    """An asyncio pool of one async driver's connections, for one plan.

    Use ``async with pool.connection() as conn:``, or :meth:`getconn` / :meth:`putconn`.

    :param plan: the driver's adapter (an :class:`~warmdb.drivers.AsyncAdapter`), endpoint
        and policy.
    :param min_size: connections opened by :meth:`open` and kept.
    :param max_size: connections open at once, at most.
    :param timeout: seconds a checkout waits for a free connection.
    :param retry: the OCC retry budget of :meth:`run_transaction`.
    """

    __slots__ = ("_handed_out", "_idle", "_size", "_waiters")

    def __init__(self, plan: ConnectPlan, **options: Any) -> None:
        super().__init__(plan, **options)
        self._adapter: AsyncAdapter = plan.adapter
        # Idle connections, the most recently given back last.
        self._idle: list[tuple[Any, KeptConnection]] = []
        # Checkouts waiting for a connection, in arrival order.
        self._waiters: deque[asyncio.Future[tuple[Any, KeptConnection] | None]] = deque()
        # Every connection checked out, by identity, with its record.
        self._handed_out: dict[int, KeptConnection] = {}
        # Connections open or being opened: what max_size bounds.
        self._size = 0

    @property
    def checked_out(self) -> int:
        """Connections currently handed out."""
        return len(self._handed_out)

    async def open(self) -> AsyncConnectionPool:
        """Open connections until *min_size* are open; returns the pool.

        :raises ConnectError: a connection could not be opened within the policy's retries.
        :raises PoolClosed: the pool is closed.
        """
        while self._size < self.min_size:
            self._give(await self._open_one())
        return self

    def connection(self) -> _Checkout:
        """Check a connection out for the ``async with`` block.

        :raises ConnectError: no connection could be opened within the policy's retries.
        :raises PoolTimeout: no connection was free within *timeout*.
        :raises PoolClosed: the pool is closed.
        """
        return _Checkout(self)

    async def getconn(self) -> Any:
        """Check a connection out; give it back with :meth:`putconn`.

        :raises ConnectError: no connection could be opened within the policy's retries.
        :raises PoolTimeout: no connection was free within *timeout*.
        :raises PoolClosed: the pool is closed.
        """
        adapter = self._adapter
        while True:
            conn, kept = await self._take()
            try:
                reason = await judge_async(
                    kept, time.monotonic(), self.policy, adapter, conn, adapter.ping
                )
            except BaseException:
                self._drop(conn)  # cancelled during a ping
                raise
            if reason is None:
                self._handed_out[id(conn)] = kept
                return conn
            await self._retire(conn, kept, reason)

    async def putconn(self, conn: Any, *, close: bool = False) -> None:
        """Give back a connection from :meth:`getconn`; ``close=True`` discards it (a
        "broken" recycle).

        :raises UsageError: *conn* is not checked out from this pool.
        """
        kept = self._handed_out.pop(id(conn), None)
        if kept is None:
            raise UsageError("putconn: this connection is not checked out from this pool")
        adapter = self._adapter
        if close or adapter.is_closed(conn):
            await self._retire(conn, kept, "broken")
            return
        if not self._closed:
            try:
                await adapter.reset(conn)
            except Exception:
                await self._retire(conn, kept, "broken")
                return
            except BaseException:
                self._drop(conn)  # cancelled during the rollback
                raise
        reason = kept.given_back(time.monotonic(), closed=False)
        if self._closed or reason is not None:
            await self._retire(conn, kept, reason)
        elif self._wake((conn, kept)):
            pass  # handed straight to the first waiting checkout
        elif self._size > max(self.min_size, 1):
            # Nobody waits and the pool holds more than it keeps: close the extra one.
            await self._retire(conn, kept, None)
        else:
            self._idle.append((conn, kept))

    async def close(self) -> None:
        """Close the idle connections and refuse new checkouts; connections checked out are
        closed when they come back. Waiting checkouts get :class:`~warmdb.PoolClosed`."""
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            self._size -= 1
            await self._adapter.close(conn)

    def __await__(self) -> Generator[Any, None, AsyncConnectionPool]:
        # ``pool = await warmdb.aiomysql.pool(...)`` opens it, as aiomysql.create_pool does.
        return self.open().__await__()

    async def __aenter__(self) -> AsyncConnectionPool:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _take(self, deadline: float | None = None) -> tuple[Any, KeptConnection]:
        """An idle connection, a new one while under *max_size*, or the next one given
        back within *timeout* (by the loop's clock *deadline*, once a wait has begun)."""
        if self._closed:
            raise PoolClosed("the pool is closed")
        if self._idle:
            return self._idle.pop()
        if self._size < self.max_size:
            return await self._open_one()
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + self.timeout
        waiter: asyncio.Future[tuple[Any, KeptConnection] | None] = loop.create_future()
        self._waiters.append(waiter)
        try:
            given = await asyncio.wait_for(asyncio.shield(waiter), deadline - loop.time())
        except asyncio.TimeoutError:
            if waiter.done() and waiter.result() is not None:
                # Handed over as the wait ran out: take it rather than lose it.
                given = waiter.result()
            else:
                if not waiter.cancel():
                    self._wake(None)  # a slot freed as the wait ran out: pass it on
                raise PoolTimeout(
                    f"no connection free within timeout={self.timeout} s: "
                    f"all max_size={self.max_size} are checked out"
                ) from None
        except BaseException:
            # Cancelled while waiting: a connection handed over meanwhile goes to the next.
            waiter.cancel()
            handed = None if waiter.cancelled() else waiter.result()
            if handed is not None:
                self._give(handed)
            raise
        if given is None:
            # A slot was freed (a connection closed) or the pool closed: try again.
            return await self._take(deadline)
        return given

    async def _open_one(self) -> tuple[Any, KeptConnection]:
        if self._closed:
            raise PoolClosed("the pool is closed")
        self._size += 1
        try:
            conn = await open_connection_async(self._plan)
        except BaseException:
            self._size -= 1
            self._wake(None)
            raise
        return conn, KeptConnection(time.monotonic(), self.policy, random_fraction())

    def _give(self, item: tuple[Any, KeptConnection]) -> None:
        """Hand a usable connection to the first waiter, or keep it idle."""
        if not self._wake(item):
            self._idle.append(item)

    def _wake(self, item: tuple[Any, KeptConnection] | None) -> bool:
        """Resolve the first live waiter with *item* (``None``: a slot was freed)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(item)
                return True
        return False

    def _drop(self, conn: Any) -> None:
        """Drop *conn*, in an unknown state after a cancellation, without a round trip, and
        free its slot."""
        self._size -= 1
        self._adapter.abandon(conn)
        self._wake(None)

    async def _retire(self, conn: Any, kept: KeptConnection, reason: str | None) -> None:
        """Close *conn*, report why, and free its slot for a waiter."""
        self._size -= 1
        if reason is not None:
            report_recycle(self._plan, kept, reason, time.monotonic())
        await self._adapter.close(conn)
        self._wake(None)


class _Checkout:
    """``async with pool.connection() as conn``: one checkout, given back on exit (discarded
    when the block's exception broke the connection)."""

    __slots__ = ("_conn", "_pool")

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def __aenter__(self) -> Any:
        self._conn = await self._pool.getconn()
        return self._conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pool, conn = self._pool, self._conn
        broken = exc is not None and pool._adapter.is_broken_by(conn, exc)
        await pool.putconn(conn, close=broken)
