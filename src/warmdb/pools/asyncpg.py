"""warmdb's pool over asyncpg's: ``warmdb.asyncpg.create_pool()``.

asyncpg's :class:`asyncpg.pool.Pool` as it is, with warmdb's connects, a maximum lifetime and
a checkout check (asyncpg's pool has neither). asyncpg's private details used here, each
guarded by a test in tests/unit/test_pools.py: ``PoolConnectionProxy._con`` (the connection a
proxy wraps) and the pool's min-size refill after a connection is terminated (asyncpg 0.30
to 0.32).
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref

import asyncpg
import asyncpg.pool

from warmdb._arguments import check_count, check_seconds
from warmdb._connect import ConnectPlan, open_connection_async
from warmdb.errors import ConfigurationError, PoolClosed, PoolTimeout
from warmdb.policy import random_fraction
from warmdb.pools import AsyncTransactions
from warmdb.warm import KeptConnection, judge_async, report_recycle

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Generator
    from typing import Any

    from asyncpg.pool import PoolConnectionProxy

    from warmdb.drivers import AsyncAdapter
    from warmdb.policy import Policy

__all__ = ["AsyncpgPoolTimeout", "WarmPool", "make_pool"]


class AsyncpgPoolTimeout(PoolTimeout, asyncio.TimeoutError):
    """No usable connection within the acquire timeout: warmdb's
    :class:`~warmdb.PoolTimeout`, and the ``asyncio.TimeoutError`` asyncpg's pool raises."""

    __module__ = "warmdb.pools.asyncpg"


def make_pool(
    dsn: str | None,
    kwargs: dict[str, object],
    *,
    adapter: AsyncAdapter,
    custom_credentials_provider: object | None,
    policy: Policy | None,
    setup: Callable[[PoolConnectionProxy], Awaitable[None]] | None,
    min_size: int,
    max_size: int,
    max_queries: int,
    max_inactive_connection_lifetime: float | None,
    retry: Any = None,
    **options: Any,
) -> WarmPool:
    """What ``warmdb.asyncpg.create_pool()`` does: check, resolve, build the pool."""
    for key in kwargs:
        if key in _POOL_OWNED:
            raise ConfigurationError(f"{key}= is set by warmdb's pool: {_POOL_OWNED[key]}")
    check_count("min_size", min_size, minimum=0)
    check_count("max_size", max_size, minimum=max(1, min_size))
    check_count("max_queries", max_queries, minimum=1)
    plan = ConnectPlan(
        dsn,
        {
            **kwargs,
            "connection_class": options["connection_class"],
            "record_class": options["record_class"],
        },
        adapter=adapter,
        custom_credentials_provider=custom_credentials_provider,
        policy=policy,
    )
    if max_inactive_connection_lifetime is None:
        idle = plan.policy.max_idle
        max_inactive_connection_lifetime = _ASYNCPG_MAX_INACTIVE if idle is None else idle
    inactive = check_seconds("max_inactive_connection_lifetime", max_inactive_connection_lifetime)
    pool = WarmPool(
        plan,
        setup=setup,
        min_size=min_size,
        max_size=max_size,
        max_queries=max_queries,
        max_inactive_connection_lifetime=inactive,
        **options,
    )
    pool.retry = retry
    return pool


# Arguments warmdb sets itself, and what to do instead.
_POOL_OWNED = {
    "connect": "warmdb opens every connection of the pool",
    "max_lifetime": "set the policy's: policy=DSQL.replace(max_lifetime=...)",
    "max_idle": "set the policy's: policy=DSQL.replace(max_idle=...)",
}
#: asyncpg's default for max_inactive_connection_lifetime.
_ASYNCPG_MAX_INACTIVE = 300.0


class WarmPool(asyncpg.pool.Pool, AsyncTransactions):
    """asyncpg's pool with warmdb's connects, a maximum lifetime and a checkout check.

    Made by ``warmdb.asyncpg.create_pool()``. Each connection has a
    :class:`~warmdb.warm.KeptConnection` record (opened, expires, last released). At acquire,
    :func:`~warmdb.warm.decide` says whether to hand it out, ping it first, or replace it; at
    release, an expired connection is closed instead of going back; and a connection still
    idle in the pool when its lifetime ends is closed then, by a timer of the event loop, so
    the server never cuts one at its own limit. The timer is a convenience, never relied on:
    where the loop does not run (a frozen Lambda environment), the check at acquire catches
    what it missed. Closing or terminating the pool cancels the timers.
    """

    __slots__ = (
        "__weakref__",
        "_adapter",
        "_in_use",
        "_plan",
        "_records",
        "_timers",
        "_warm_setup",
        "retry",
    )

    def __init__(
        self,
        plan: ConnectPlan,
        *,
        setup: Callable[[PoolConnectionProxy], Awaitable[None]] | None,
        **options: Any,
    ) -> None:
        self._plan = plan
        self._adapter = plan.adapter
        # Lifetime timers not fired yet, cancelled when the pool closes: a pending timer
        # would keep a closed pool alive until the last lifetime ends.
        self._timers: set[asyncio.TimerHandle] = set()
        # Weak keys: a closed connection takes its record with it.
        self._records: weakref.WeakKeyDictionary[asyncpg.Connection, KeptConnection] = (
            weakref.WeakKeyDictionary()
        )
        self._in_use: weakref.WeakSet[asyncpg.Connection] = weakref.WeakSet()
        # Run by warmdb after its check, not by asyncpg before it: a setup that meets a dead
        # connection would fail the caller's acquire instead of letting warmdb replace it.
        self._warm_setup = setup
        try:
            super().__init__(connect=self._open_connection, setup=None, loop=None, **options)
        except ValueError as exc:  # asyncpg's own checks name the parameter
            raise ConfigurationError(str(exc)) from exc

    async def _open_connection(self, *args: object, **kwargs: object) -> asyncpg.Connection:
        # asyncpg's connect= callback. Its arguments (the loop, connection and record classes)
        # are already in the plan.
        conn: asyncpg.Connection = await open_connection_async(self._plan)
        # Not a secret: the share of jitter.
        kept = KeptConnection(time.monotonic(), self._plan.policy, random_fraction())
        self._records[conn] = kept
        if kept.expires_at != math.inf:
            self._start_timer(conn, kept.expires_at - time.monotonic())
        return conn

    def _start_timer(self, conn: asyncpg.Connection, delay: float) -> None:
        # The callback holds weak references only: a pool dropped without close() is freed.
        pool_ref, conn_ref = weakref.ref(self), weakref.ref(conn)
        timers = self._timers

        def fire() -> None:
            timers.discard(handle)
            pool = pool_ref()
            if pool is not None:
                pool._retire_if_idle(conn_ref)

        handle = asyncio.get_running_loop().call_later(delay, fire)
        timers.add(handle)

    def _cancel_timers(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()

    async def close(self) -> None:
        """Close the pool, as :meth:`asyncpg.pool.Pool.close`, cancelling warmdb's timers."""
        self._cancel_timers()
        await super().close()

    def terminate(self) -> None:
        """Terminate the pool, as :meth:`asyncpg.pool.Pool.terminate`, cancelling warmdb's
        timers."""
        self._cancel_timers()
        super().terminate()

    def _retire_if_idle(self, ref: weakref.ref[asyncpg.Connection]) -> None:
        conn = ref()
        if conn is None or conn.is_closed() or conn in self._in_use:
            return  # gone already, or checked out: judged at release or the next acquire
        report_recycle(self._plan, self._records[conn], "lifetime", time.monotonic())
        # No round trip from a timer: terminate() closes the socket at once, and asyncpg
        # frees the slot (and reopens it in the background while below min_size).
        conn.terminate()

    def acquire(self, *, timeout: float | None = None) -> _AcquireContext:
        """Acquire a connection, as :meth:`asyncpg.pool.Pool.acquire`, checked by warmdb.

        :param timeout: seconds to wait for a usable connection, replacements included;
            ``None`` waits as long as it takes.
        :raises AsyncpgPoolTimeout: no usable connection within *timeout* (a
            :class:`~warmdb.PoolTimeout` and an ``asyncio.TimeoutError``).
        :raises PoolClosed: the pool is closed or closing.
        """
        return _AcquireContext(self, timeout)

    async def release(
        self, connection: PoolConnectionProxy, *, timeout: float | None = None
    ) -> None:
        """Release a connection, as :meth:`asyncpg.pool.Pool.release`; an expired one is
        closed instead."""
        conn = getattr(connection, "_con", None)
        kept = None if conn is None else self._records.get(conn)
        if conn is None or kept is None:  # not from this pool, or released: asyncpg's answer
            await super().release(connection, timeout=timeout)
            return
        now = time.monotonic()
        reason = kept.given_back(now, closed=conn.is_closed())
        if reason is not None:
            report_recycle(self._plan, kept, reason, now)
            if reason == "lifetime":
                # Closing frees the slot, which makes asyncpg's release a no-op. (A closed
                # connection's slot asyncpg frees itself.)
                await self._adapter.close(conn)
        try:
            await super().release(connection, timeout=timeout)
        finally:
            # In use until asyncpg's reset is over, so the timer leaves it alone meanwhile.
            self._in_use.discard(conn)
        if self._is_expired(kept):
            # Its timer fired during the reset and skipped it.
            self._retire_if_idle(weakref.ref(conn))

    @staticmethod
    def _is_expired(kept: KeptConnection) -> bool:
        return time.monotonic() >= kept.expires_at

    async def _acquire_usable(self, timeout: float | None) -> PoolConnectionProxy:
        """Acquire a usable connection, with warmdb's exceptions for a timeout or a closed
        pool."""
        if self.is_closing():
            raise PoolClosed("the pool is closed")
        try:
            return await self._acquire_checked(timeout)
        except asyncio.TimeoutError as exc:
            raise AsyncpgPoolTimeout(
                f"no usable connection within timeout={timeout} s: "
                f"all max_size={self.get_max_size()} are in use"
            ) from exc
        except asyncpg.InterfaceError as exc:
            if self.is_closing():
                raise PoolClosed("the pool was closed while acquiring") from exc
            raise

    async def _acquire_checked(self, timeout: float | None) -> PoolConnectionProxy:
        """Acquire connections until one passes warmdb's check (and the caller's setup)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            proxy = await super().acquire(timeout=_remaining(loop, deadline))
            # asyncpg has no public accessor for the connection a proxy wraps.
            conn = proxy._con
            # In use from now: the lifetime timer must not close it under a ping or setup.
            self._in_use.add(conn)
            try:
                usable = await self._check_out(conn, loop, deadline)
                if usable and self._warm_setup is not None:
                    await _within(self._warm_setup(proxy), loop, deadline)
            except BaseException:
                # A ping or setup that failed or was cancelled leaves the protocol state
                # unknown: close the socket; asyncpg puts the slot back.
                self._in_use.discard(conn)
                conn.terminate()
                raise
            if usable:
                return proxy
            self._in_use.discard(conn)

    async def _check_out(
        self, conn: asyncpg.Connection, loop: asyncio.AbstractEventLoop, deadline: float | None
    ) -> bool:
        """Whether *conn* may be handed out; if not, it is closed and asyncpg reconnects its
        slot (in the background up to ``min_size``, else at the next acquire)."""
        kept = self._records[conn]
        adapter = self._adapter
        reason = await judge_async(
            kept,
            time.monotonic(),
            self._plan.policy,
            adapter,
            conn,
            lambda conn: _within(adapter.ping(conn), loop, deadline),
        )
        if reason is None:
            return True
        report_recycle(self._plan, kept, reason, time.monotonic())
        if reason in ("lifetime", "idle"):
            await adapter.close(conn)  # a healthy connection: say goodbye to the server
        else:
            conn.terminate()  # the server is gone or going: no round trip
        return False


class _AcquireContext:
    """What :meth:`WarmPool.acquire` returns: ``async with`` it or ``await`` it, as asyncpg's."""

    __slots__ = ("_connection", "_pool", "_timeout")

    def __init__(self, pool: WarmPool, timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._connection: PoolConnectionProxy | None = None

    async def __aenter__(self) -> PoolConnectionProxy:
        if self._connection is not None:
            raise asyncpg.InterfaceError("a connection is already acquired")
        self._connection = await self._pool._acquire_usable(self._timeout)
        return self._connection

    async def __aexit__(self, *exc_info: object) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await self._pool.release(connection)

    def __await__(self) -> Generator[Any, None, PoolConnectionProxy]:
        return self._pool._acquire_usable(self._timeout).__await__()


def _remaining(loop: asyncio.AbstractEventLoop, deadline: float | None) -> float | None:
    if deadline is None:
        return None
    left = deadline - loop.time()
    if left <= 0:
        raise asyncio.TimeoutError
    return left


async def _within(
    awaitable: Awaitable[None], loop: asyncio.AbstractEventLoop, deadline: float | None
) -> None:
    if deadline is None:
        await awaitable
    else:
        await asyncio.wait_for(awaitable, _remaining(loop, deadline))
