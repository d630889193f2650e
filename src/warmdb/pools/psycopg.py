"""warmdb's pools over psycopg_pool: ``warmdb.psycopg.pool()`` and ``pool_async()``.

psycopg_pool's ``ConnectionPool`` / ``AsyncConnectionPool`` as they are, with:

- connections opened through warmdb (:func:`~warmdb._connect.open_connection`): a fresh
  token, the rate governor, retries, events;
- one lifetime per connection, drawn with the policy's jitter, serving both psycopg_pool's
  check on return and warmdb's at checkout;
- warmdb's checkout check (:func:`warmdb.warm.judge`) as psycopg_pool's ``check=``;
- every connection psycopg_pool closes itself (expired, shrunk for being idle, failed reset)
  reported as a :class:`~warmdb.events.RecycleEvent`;
- warmdb's :class:`~warmdb.PoolTimeout` and :class:`~warmdb.PoolClosed`, which are also
  psycopg_pool's own ``PoolTimeout`` / ``PoolClosed``.

psycopg_pool's private details used here, each guarded by a test in tests/unit/test_pools.py:
``_set_connection_expiry_date`` (the per-connection expiry hook), ``_close_connection`` (where
it closes every connection it discards), ``_expire_at`` / ``_created_at`` on connections, and
``check_connection`` (what ``check()`` calls per idle connection).
"""

from __future__ import annotations

import functools
import math
import time

import psycopg
import psycopg_pool

from warmdb._arguments import check_count, check_seconds
from warmdb._connect import ConnectPlan, open_connection, open_connection_async
from warmdb.errors import ConfigurationError, PoolClosed, PoolTimeout
from warmdb.policy import random_fraction
from warmdb.pools import AsyncTransactions, Transactions
from warmdb.warm import REUSE, KeptConnection, decide, judge, judge_async, report_recycle

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from warmdb.policy import Policy

__all__ = ["PsycopgPoolClosed", "PsycopgPoolTimeout", "make_pool"]

#: psycopg_pool's own default for its max_idle (the period of its pool shrinking).
_PSYCOPG_POOL_MAX_IDLE = 10 * 60.0
# libpq's CONNECTION_BAD as a plain int (see warmdb.psycopg).
_CONNECTION_BAD = int(psycopg.pq.ConnStatus.BAD)


class PsycopgPoolTimeout(PoolTimeout, psycopg_pool.PoolTimeout):
    """No connection came free in time: warmdb's :class:`~warmdb.PoolTimeout` and
    psycopg_pool's own, so code written for either catches it."""

    __module__ = "warmdb.pools.psycopg"


class PsycopgPoolClosed(PoolClosed, psycopg_pool.PoolClosed):
    """The pool is closed: warmdb's :class:`~warmdb.PoolClosed` and psycopg_pool's own."""

    __module__ = "warmdb.pools.psycopg"


def make_pool(
    *,
    sync: bool,
    conninfo: str,
    kwargs: dict[str, object],
    policy: Policy | None,
    custom_credentials_provider: object | None,
    adapter: Any,
    min_size: int,
    max_size: int | None,
    timeout: float,
    max_waiting: int,
    reconnect_timeout: float,
    num_workers: int,
    retry: Any = None,
    **callbacks: object,
) -> Any:
    """What ``warmdb.psycopg.pool()`` and ``pool_async()`` do: check, resolve, build."""
    options = _pool_options(
        kwargs,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        max_waiting=max_waiting,
        reconnect_timeout=reconnect_timeout,
        num_workers=num_workers,
    )
    plan = ConnectPlan(
        conninfo,
        kwargs,
        adapter=adapter,
        custom_credentials_provider=custom_credentials_provider,
        policy=policy,
    )
    base = adapter.options.get(
        "connection_class", psycopg.Connection if sync else psycopg.AsyncConnection
    )
    pool = _pool_class(sync=sync)(plan, base, **callbacks, **options)
    pool.retry = retry
    return pool


# psycopg_pool arguments that warmdb sets itself, and what to do instead.
_POOL_OWNED = {
    "kwargs": "pass psycopg's connect arguments as keyword arguments of pool() itself",
    "check": "warmdb checks every connection at checkout; policy.ping_after_idle=0 pings "
    "at every checkout",
    "max_lifetime": "set the policy's: policy=DSQL.replace(max_lifetime=...)",
    "max_idle": "set the policy's: policy=DSQL.replace(max_idle=...)",
    "close_returns": "not supported: give connections back with putconn() or the "
    "connection() context manager",
}


def _pool_options(
    kwargs: Mapping[str, object],
    *,
    min_size: object,
    max_size: object,
    timeout: object,
    max_waiting: object,
    reconnect_timeout: object,
    num_workers: object,
) -> dict[str, object]:
    """Validate psycopg_pool's sizes and durations here, so a mistake is a
    :class:`~warmdb.ConfigurationError` naming the parameter, not a late driver error."""
    for key in kwargs:
        if key in _POOL_OWNED:
            raise ConfigurationError(f"{key}= is set by warmdb's pool: {_POOL_OWNED[key]}")
    check_count("min_size", min_size, minimum=0)
    check_count("num_workers", num_workers, minimum=1)
    check_count("max_waiting", max_waiting, minimum=0)
    if max_size is not None:
        check_count("max_size", max_size, minimum=max(1, min_size))  # type: ignore[call-overload]
    elif min_size == 0:
        raise ConfigurationError("max_size must be given (>= 1) when min_size is 0")
    seconds = check_seconds("timeout", timeout)
    if not seconds:
        raise ConfigurationError("timeout must be a number of seconds > 0, not 0")
    return {
        "min_size": min_size,
        "max_size": max_size,
        "timeout": seconds,
        "max_waiting": max_waiting,
        "reconnect_timeout": check_seconds("reconnect_timeout", reconnect_timeout),
        "num_workers": num_workers,
    }


class _Recycled(Exception):
    """Raised by warmdb's check to make psycopg_pool discard a connection (already closed)."""


def _connector_class(plan: ConnectPlan, base: type) -> type:
    """A subclass of *base* whose ``connect`` opens connections through warmdb.

    psycopg_pool opens connections with ``connection_class.connect(conninfo, **kwargs)``;
    this class ignores the pool's (empty) conninfo and opens a connection for *plan* (of the
    caller's class, the adapter's ``connection_class``), so each pooled connection gets a
    fresh token, the governor, retries and events.
    """
    if issubclass(base, psycopg.AsyncConnection):

        async def connect_async(cls: type, conninfo: str = "", **kwargs: object) -> object:
            return await open_connection_async(plan)

        connect: object = classmethod(connect_async)
    else:

        def connect_sync(cls: type, conninfo: str = "", **kwargs: object) -> object:
            return open_connection(plan)

        connect = classmethod(connect_sync)
    return type(f"Warmdb{base.__name__}", (base,), {"connect": connect, "__module__": __name__})


@functools.cache
def _pool_class(*, sync: bool) -> type:
    """warmdb's pool class over psycopg_pool's (built once, on first use)."""
    if sync:
        return type(
            "WarmConnectionPool", (_SyncPool, psycopg_pool.ConnectionPool), {"__module__": __name__}
        )
    return type(
        "WarmAsyncConnectionPool",
        (_AsyncPool, psycopg_pool.AsyncConnectionPool),
        {"__module__": __name__},
    )


class _PoolRecords:
    """What warmdb adds to psycopg_pool's pools that needs no I/O, for both of them.

    Mixed in before the psycopg_pool class. Each connection carries a
    :class:`~warmdb.warm.KeptConnection` record (opened, expires, last given back) in the
    attribute ``_warmdb_kept``, as psycopg_pool keeps its own ``_expire_at`` on it (an
    attribute is read in 30 ns, a weak-keyed dictionary in 100), and
    :func:`~warmdb.warm.judge` decides from it at checkout.
    """

    def __init__(self, plan: ConnectPlan, connection_class: type, **options: object) -> None:
        self._plan = plan
        self._adapter = plan.adapter
        self._policy = policy = plan.policy
        super().__init__(  # type: ignore[call-arg]
            "",
            connection_class=_connector_class(plan, connection_class),
            check=self._check_out,  # type: ignore[attr-defined]
            max_lifetime=math.inf if policy.max_lifetime is None else policy.max_lifetime,
            # psycopg_pool's max_idle is how often it closes one unused connection above
            # min_size; the policy's, when set, is the natural period for that too.
            max_idle=_PSYCOPG_POOL_MAX_IDLE if policy.max_idle is None else policy.max_idle,
            **options,
        )

    def _set_connection_expiry_date(self, conn: Any) -> None:
        # psycopg_pool's private hook, called once per new connection (guarded by
        # tests/unit/test_pools.py). It draws the expiry with its own jitter (0 to 5% off
        # max_lifetime); one draw with the policy's jitter instead serves both psycopg_pool's
        # check on return and warmdb's at checkout, so they never disagree.
        super()._set_connection_expiry_date(conn)  # type: ignore[misc]
        # Not a secret: the share of jitter.
        kept = KeptConnection(conn._created_at, self._policy, random_fraction())
        conn._warmdb_kept = kept
        conn._expire_at = kept.expires_at

    def _recycle(self, conn: Any, reason: str) -> None:
        """Report that *conn* is being replaced, once."""
        kept: KeptConnection | None = getattr(conn, "_warmdb_kept", None)
        if kept is None or getattr(conn, "_warmdb_reported", False):
            return
        conn._warmdb_reported = True
        report_recycle(self._plan, kept, reason, time.monotonic())

    def _closing(self, conn: Any) -> None:
        """psycopg_pool is closing *conn* itself (psycopg_pool's ``_close_connection``):
        expired, shrunk for being idle, or its reset failed. Report it, unless the pool is
        closing or warmdb has reported it already."""
        if self._closed:  # type: ignore[attr-defined]
            return
        kept: KeptConnection | None = getattr(conn, "_warmdb_kept", None)
        if kept is None:
            return
        if conn.pgconn.status == _CONNECTION_BAD:
            reason = "broken"
        elif time.monotonic() >= kept.expires_at:
            reason = "lifetime"
        else:
            reason = "idle"
        self._recycle(conn, reason)

    def _given_back(self, conn: Any) -> None:
        """Record a connection's return; report a broken one (psycopg_pool drops it)."""
        kept: KeptConnection | None = getattr(conn, "_warmdb_kept", None)
        if kept is None:
            return  # not ours: psycopg_pool's putconn() refuses it
        # The adapter's is_closed(), inline: this runs at every return.
        reason = kept.given_back(time.monotonic(), closed=conn.pgconn.status == _CONNECTION_BAD)
        if reason == "broken":
            self._recycle(conn, reason)
        # An expired one is closed by psycopg_pool's _close_connection, reported there.


class _SyncPool(_PoolRecords, Transactions):
    """warmdb's checks for :class:`psycopg_pool.ConnectionPool`."""

    def _check_out(self, conn: psycopg.Connection[Any], *, sweep: bool = True) -> None:
        # psycopg_pool's check= callback, run at every getconn(). Raising makes the pool
        # discard the connection and hand out another.
        adapter = self._adapter
        kept = conn._warmdb_kept  # type: ignore[attr-defined]
        now = time.monotonic()
        # decide() alone on the hot path (reuse): judge() performs anything else.
        if decide(kept, now, self._policy, adapter, conn) == REUSE:
            return
        reason = judge(kept, now, self._policy, adapter, conn, adapter.ping)
        if reason is None:
            return
        self._recycle(conn, reason)
        adapter.close(conn)
        if sweep:
            # Whatever made this one unusable (its lifetime, a server restart, a proxy's idle
            # timeout) has most likely hit the idle ones opened or used with it: sort them out
            # now, instead of one per retry of psycopg_pool's check loop, which backs off
            # 1 s, 2 s... between failed checks.
            self.check()  # type: ignore[attr-defined]
        raise _Recycled("connection replaced")

    def check_connection(self, conn: psycopg.Connection[Any]) -> None:
        """Check one idle connection as warmdb checks at checkout; used by ``pool.check()``.

        :raises Exception: the connection was unusable; it is closed and will be replaced.
        """
        self._check_out(conn, sweep=False)

    def getconn(self, timeout: float | None = None) -> psycopg.Connection[Any]:
        """Check a connection out (see :meth:`psycopg_pool.ConnectionPool.getconn`).

        :raises PsycopgPoolTimeout: none came free within *timeout* (a
            :class:`~warmdb.PoolTimeout`).
        :raises PsycopgPoolClosed: the pool is closed (a :class:`~warmdb.PoolClosed`).
        """
        try:
            return super().getconn(timeout)  # type: ignore[misc]
        except psycopg_pool.PoolTimeout as exc:
            raise PsycopgPoolTimeout(str(exc)) from exc
        except psycopg_pool.PoolClosed as exc:
            raise PsycopgPoolClosed(str(exc)) from exc

    def putconn(self, conn: psycopg.Connection[Any]) -> None:
        """Give a connection back (see :meth:`psycopg_pool.ConnectionPool.putconn`)."""
        self._given_back(conn)
        super().putconn(conn)  # type: ignore[misc]

    def _close_connection(self, conn: psycopg.Connection[Any]) -> None:
        self._closing(conn)
        super()._close_connection(conn)  # type: ignore[misc]


class _AsyncPool(_PoolRecords, AsyncTransactions):
    """warmdb's checks for :class:`psycopg_pool.AsyncConnectionPool`."""

    async def _check_out(self, conn: psycopg.AsyncConnection[Any], *, sweep: bool = True) -> None:
        # As _SyncPool._check_out.
        adapter = self._adapter
        kept = conn._warmdb_kept  # type: ignore[attr-defined]
        now = time.monotonic()
        if decide(kept, now, self._policy, adapter, conn) == REUSE:
            return
        reason = await judge_async(kept, now, self._policy, adapter, conn, adapter.ping)
        if reason is None:
            return
        self._recycle(conn, reason)
        await adapter.close(conn)
        if sweep:
            await self.check()  # type: ignore[attr-defined]
        raise _Recycled("connection replaced")

    async def check_connection(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Check one idle connection as warmdb checks at checkout; used by ``pool.check()``.

        :raises Exception: the connection was unusable; it is closed and will be replaced.
        """
        await self._check_out(conn, sweep=False)

    async def getconn(self, timeout: float | None = None) -> psycopg.AsyncConnection[Any]:
        """Check a connection out (see :meth:`psycopg_pool.AsyncConnectionPool.getconn`).

        :raises PsycopgPoolTimeout: none came free within *timeout* (a
            :class:`~warmdb.PoolTimeout`).
        :raises PsycopgPoolClosed: the pool is closed (a :class:`~warmdb.PoolClosed`).
        """
        try:
            return await super().getconn(timeout)  # type: ignore[misc]
        except psycopg_pool.PoolTimeout as exc:
            raise PsycopgPoolTimeout(str(exc)) from exc
        except psycopg_pool.PoolClosed as exc:
            raise PsycopgPoolClosed(str(exc)) from exc

    async def putconn(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Give a connection back (see :meth:`psycopg_pool.AsyncConnectionPool.putconn`)."""
        self._given_back(conn)
        await super().putconn(conn)  # type: ignore[misc]

    async def _close_connection(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._closing(conn)
        await super()._close_connection(conn)  # type: ignore[misc]
