"""warmdb for psycopg 3: ``connect()`` / ``connect_async()`` with IAM tokens.

::

    import warmdb.psycopg as db

    conn = db.connect(host="abc123.dsql.us-east-1.on.aws", user="admin")
    aconn = await db.connect_async(host="abc123.dsql.us-east-1.on.aws")

    keeper = db.warm(host="abc123.dsql.us-east-1.on.aws")   # or warm_async() for asyncio
    with keeper.connection() as conn:                        # reused across invocations
        ...

    with db.pool(host="abc123.dsql.us-east-1.on.aws", open=True) as pool:   # or pool_async()
        with pool.connection() as conn:                      # psycopg_pool, checked by warmdb
            ...

Both return psycopg's own connection objects. The arguments are those of
aurora-dsql-python-connector's ``aurora_dsql_psycopg.connect`` (``conninfo``, ``host``,
``user``, ``dbname``/``database``, ``port``, ``region``, ``profile``, ``token_duration_secs``,
``custom_credentials_provider``) plus ``auth``, ``policy`` and every argument of
:meth:`psycopg.Connection.connect`, passed through unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time

import psycopg

from warmdb._arguments import check_count, check_seconds
from warmdb._connect import (
    ConnectPlan,
    libpq_params,
    open_with_retry,
    open_with_retry_async,
    raise_connect_error,
)
from warmdb.errors import ConfigurationError
from warmdb.policy import random_fraction
from warmdb.warm import (
    AsyncKeeper,
    Keeper,
    KeptConnection,
    judge,
    judge_async,
    report_recycle,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping
    from typing import Any

    from psycopg_pool import AsyncConnectionPool, ConnectionPool

    from warmdb.policy import Policy

__all__ = ["connect", "connect_async", "pool", "pool_async", "warm", "warm_async"]

DRIVER = "psycopg"
#: psycopg_pool's own default for its max_idle (the period of its pool shrinking).
_PSYCOPG_POOL_MAX_IDLE = 10 * 60.0
# libpq's CONNECTION_BAD as a plain int: comparing pgconn.status to the IntEnum member costs
# 50 ns more, at every pool checkout and return.
_CONNECTION_BAD = int(psycopg.pq.ConnStatus.BAD)


def connect(
    conninfo: str = "",
    *,
    connection_class: type[psycopg.Connection] = psycopg.Connection,
    custom_credentials_provider: object | None = None,
    policy: Policy | None = None,
    **kwargs: object,
) -> psycopg.Connection:
    """Open a psycopg connection, signing an IAM token when the endpoint needs one.

    :param conninfo: a ``postgresql://`` URL, a libpq ``key=value`` string, a host name or a
        DSQL cluster id. Keyword arguments win over its fields.
    :param connection_class: the class whose ``connect`` is called (a subclass of
        :class:`psycopg.Connection`).
    :param custom_credentials_provider: a botocore ``CredentialProvider`` tried before
        botocore's chain.
    :param policy: connect timeout and retry budget (:class:`warmdb.policy.Policy`); the
        preset for the endpoint by default.
    :param kwargs: warmdb's arguments (see :func:`warmdb.psycopg2.connect`) and any argument of
        :meth:`psycopg.Connection.connect` (``autocommit``, ``row_factory``...).
    :returns: psycopg's own connection object.
    :raises ConfigurationError: bad or contradictory arguments.
    :raises CredentialsError: no AWS credentials to sign with.
    :raises ConnectError: the connection failed, after the policy's retries; the driver's
        exception is the cause.
    """
    plan = ConnectPlan(
        conninfo, kwargs, custom_credentials_provider=custom_credentials_provider, policy=policy
    )
    return connect_plan(plan, connection_class=connection_class)


async def connect_async(
    conninfo: str = "",
    *,
    connection_class: type[psycopg.AsyncConnection] = psycopg.AsyncConnection,
    custom_credentials_provider: object | None = None,
    policy: Policy | None = None,
    **kwargs: object,
) -> psycopg.AsyncConnection:
    """Open a psycopg async connection; the arguments are those of :func:`connect`.

    A ``password`` callable may return an awaitable.
    """
    plan = ConnectPlan(
        conninfo, kwargs, custom_credentials_provider=custom_credentials_provider, policy=policy
    )
    return await connect_plan_async(plan, connection_class=connection_class)


def connect_plan(
    plan: ConnectPlan, *, connection_class: type[psycopg.Connection] = psycopg.Connection
) -> psycopg.Connection:
    """Open one connection for an already resolved *plan*, retrying as its policy says.

    Used by :func:`connect`, keepers and pools.
    """

    def attempt() -> psycopg.Connection:
        password = plan.password()
        params = libpq_params(plan, password, psycopg.pq.version())
        try:
            return connection_class.connect(**params)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            raise_connect_error(
                exc, driver=DRIVER, endpoint=plan.endpoint, secrets=plan.secrets_of(password)
            )

    return open_with_retry(plan, attempt, driver=DRIVER)


async def connect_plan_async(
    plan: ConnectPlan,
    *,
    connection_class: type[psycopg.AsyncConnection] = psycopg.AsyncConnection,
) -> psycopg.AsyncConnection:
    """Open one async connection for an already resolved *plan*, retrying as its policy says."""

    async def attempt() -> psycopg.AsyncConnection:
        password = await plan.password_async()
        params = libpq_params(plan, password, psycopg.pq.version())
        try:
            return await connection_class.connect(**params)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            raise_connect_error(
                exc, driver=DRIVER, endpoint=plan.endpoint, secrets=plan.secrets_of(password)
            )

    return await open_with_retry_async(plan, attempt, driver=DRIVER)


def warm(
    conninfo: str = "",
    *,
    connection_class: type[psycopg.Connection] = psycopg.Connection,
    custom_credentials_provider: object | None = None,
    policy: Policy | None = None,
    **kwargs: object,
) -> Keeper[psycopg.Connection]:
    """Return a :class:`~warmdb.warm.Keeper`: one connection kept across warm starts.

    Nothing connects until the first ``keeper.connection()``. The arguments are those of
    :func:`connect`; the endpoint is resolved now, so a bad argument fails at import time.
    """
    plan = ConnectPlan(
        conninfo, kwargs, custom_credentials_provider=custom_credentials_provider, policy=policy
    )
    return Keeper(plan, _Ops(plan, connection_class), driver=DRIVER)


def warm_async(
    conninfo: str = "",
    *,
    connection_class: type[psycopg.AsyncConnection] = psycopg.AsyncConnection,
    custom_credentials_provider: object | None = None,
    policy: Policy | None = None,
    **kwargs: object,
) -> AsyncKeeper[psycopg.AsyncConnection]:
    """Return an :class:`~warmdb.warm.AsyncKeeper` for psycopg's async connections.

    The arguments are those of :func:`connect_async`. The kept connection survives a change
    of event loop (``asyncio.run()`` per invocation): psycopg binds nothing to the loop.
    """
    plan = ConnectPlan(
        conninfo, kwargs, custom_credentials_provider=custom_credentials_provider, policy=policy
    )
    return AsyncKeeper(plan, _AsyncOps(plan, connection_class), driver=DRIVER)


def pool(
    conninfo: str = "",
    *,
    policy: Policy | None = None,
    min_size: int = 4,
    max_size: int | None = None,
    open: bool | None = None,
    name: str | None = None,
    timeout: float = 30.0,
    max_waiting: int = 0,
    reconnect_timeout: float = 5 * 60.0,
    reconnect_failed: Callable[[ConnectionPool], None] | None = None,
    num_workers: int = 3,
    configure: Callable[[psycopg.Connection], None] | None = None,
    reset: Callable[[psycopg.Connection], None] | None = None,
    connection_class: type[psycopg.Connection] = psycopg.Connection,
    custom_credentials_provider: object | None = None,
    **kwargs: object,
) -> ConnectionPool:
    """Return a :class:`psycopg_pool.ConnectionPool` whose connections warmdb opens and checks.

    Use it as psycopg_pool's own pool::

        with db.pool(host=ENDPOINT, min_size=2, open=True) as pool:
            with pool.connection() as conn:
                conn.execute("SELECT 1")

    What warmdb adds: every new connection goes through :func:`connect_plan` (a fresh token,
    the rate governor, retries, events); connections live ``policy.max_lifetime`` minus the
    policy's jitter; at checkout a connection is pinged only when idle longer than
    ``policy.ping_after_idle``, and replaced without a round trip when it is closed, expired,
    idle longer than ``policy.max_idle`` or its socket became readable (the server closed it).
    See ``docs/pools.md``.

    :param conninfo: the endpoint, as for :func:`connect`.
    :param policy: how connections live and connects are retried; the endpoint's preset by
        default.
    :param min_size: connections opened at once and kept (default 4).
    :param max_size: the most connections (default: ``min_size``).
    :param open: open the pool now (psycopg_pool's default, ``None``, opens it and warns at
        the first checkout); ``False`` leaves it to ``open()`` or a ``with`` block.
    :param name: the pool's name in psycopg_pool's logs (default ``pool-N``).
    :param timeout: seconds a checkout may wait for a connection (default 30).
    :param max_waiting: checkouts allowed to wait before new ones fail (default 0, no limit).
    :param reconnect_timeout: seconds psycopg_pool keeps trying to replace a connection it
        could not open (default 300); each attempt is already retried within
        ``policy.retry_timeout``.
    :param reconnect_failed: called with the pool when ``reconnect_timeout`` ran out.
    :param num_workers: psycopg_pool's background threads (default 3).
    :param configure: called with each new connection, as in psycopg_pool.
    :param reset: called with each connection given back, as in psycopg_pool.
    :param connection_class: the class of the connections (a subclass of
        :class:`psycopg.Connection`).
    :param custom_credentials_provider: a botocore ``CredentialProvider`` tried first.
    :param kwargs: warmdb's endpoint arguments and psycopg's connect arguments, as for
        :func:`connect`.
    :raises ConfigurationError: a bad argument, named in the message.
    """
    return _make_pool(
        sync=True,
        conninfo=conninfo,
        kwargs=kwargs,
        policy=policy,
        custom_credentials_provider=custom_credentials_provider,
        connection_class=connection_class,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        max_waiting=max_waiting,
        reconnect_timeout=reconnect_timeout,
        num_workers=num_workers,
        open=open,
        name=name,
        reconnect_failed=reconnect_failed,
        configure=configure,
        reset=reset,
    )


def pool_async(
    conninfo: str = "",
    *,
    policy: Policy | None = None,
    min_size: int = 4,
    max_size: int | None = None,
    open: bool | None = None,
    name: str | None = None,
    timeout: float = 30.0,
    max_waiting: int = 0,
    reconnect_timeout: float = 5 * 60.0,
    reconnect_failed: Callable[[AsyncConnectionPool], object] | None = None,
    num_workers: int = 3,
    configure: Callable[[psycopg.AsyncConnection], Awaitable[None]] | None = None,
    reset: Callable[[psycopg.AsyncConnection], Awaitable[None]] | None = None,
    connection_class: type[psycopg.AsyncConnection] = psycopg.AsyncConnection,
    custom_credentials_provider: object | None = None,
    **kwargs: object,
) -> AsyncConnectionPool:
    """Return a :class:`psycopg_pool.AsyncConnectionPool`; the arguments are those of
    :func:`pool`, with async callbacks and connection class.

    As with psycopg_pool, open it in a coroutine: ``async with db.pool_async(...) as pool:``,
    or ``open=False`` and ``await pool.open()``. A ``password`` callable may return an
    awaitable.
    """
    return _make_pool(
        sync=False,
        conninfo=conninfo,
        kwargs=kwargs,
        policy=policy,
        custom_credentials_provider=custom_credentials_provider,
        connection_class=connection_class,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        max_waiting=max_waiting,
        reconnect_timeout=reconnect_timeout,
        num_workers=num_workers,
        open=open,
        name=name,
        reconnect_failed=reconnect_failed,
        configure=configure,
        reset=reset,
    )


def _make_pool(
    *,
    sync: bool,
    conninfo: str,
    kwargs: dict[str, object],
    policy: Policy | None,
    custom_credentials_provider: object | None,
    connection_class: type,
    min_size: int,
    max_size: int | None,
    timeout: float,
    max_waiting: int,
    reconnect_timeout: float,
    num_workers: int,
    **callbacks: object,
) -> Any:
    """What :func:`pool` and :func:`pool_async` do: check, resolve, build the pool."""
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
        conninfo, kwargs, custom_credentials_provider=custom_credentials_provider, policy=policy
    )
    return _pool_class(sync=sync)(plan, connection_class, **callbacks, **options)


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


def _is_broken_by(conn: psycopg.Connection | psycopg.AsyncConnection, exc: BaseException) -> bool:
    # An OperationalError without a SQLSTATE did not come from the server: the socket failed.
    return conn.broken or (isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None)


def _is_closed(conn: psycopg.Connection | psycopg.AsyncConnection) -> bool:
    # What conn.closed answers (a broken connection is closed too), a property call cheaper.
    return conn.pgconn.status == _CONNECTION_BAD


def _is_idle(conn: psycopg.Connection | psycopg.AsyncConnection) -> bool:
    return conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


class _Ops:
    """How keepers and pools open, check, ping, reset and close psycopg connections."""

    __slots__ = ("_connection_class", "_plan")

    def __init__(self, plan: ConnectPlan, connection_class: type[psycopg.Connection]) -> None:
        self._plan = plan
        self._connection_class = connection_class

    def open(self) -> psycopg.Connection:
        return connect_plan(self._plan, connection_class=self._connection_class)

    is_closed = staticmethod(_is_closed)

    @staticmethod
    def fileno(conn: psycopg.Connection) -> int:
        return conn.fileno()

    @staticmethod
    def ping(conn: psycopg.Connection) -> None:
        # As psycopg_pool's check: an empty query in autocommit is one round trip, no BEGIN.
        autocommit = conn.autocommit
        conn.autocommit = True
        try:
            conn.execute("")
        finally:
            if not conn.closed:
                conn.autocommit = autocommit

    @staticmethod
    def reset(conn: psycopg.Connection) -> None:
        if not _is_idle(conn):
            conn.rollback()

    is_broken_by = staticmethod(_is_broken_by)

    @staticmethod
    def close(conn: psycopg.Connection) -> None:
        with contextlib.suppress(psycopg.Error):
            conn.close()


class _AsyncOps:
    """How keepers and pools open, check, ping, reset and close psycopg async connections."""

    __slots__ = ("_connection_class", "_plan")

    def __init__(self, plan: ConnectPlan, connection_class: type[psycopg.AsyncConnection]) -> None:
        self._plan = plan
        self._connection_class = connection_class

    async def open(self) -> psycopg.AsyncConnection:
        return await connect_plan_async(self._plan, connection_class=self._connection_class)

    is_closed = staticmethod(_is_closed)

    @staticmethod
    def fileno(conn: psycopg.AsyncConnection) -> int:
        return conn.fileno()

    @staticmethod
    async def ping(conn: psycopg.AsyncConnection) -> None:
        autocommit = conn.autocommit
        await conn.set_autocommit(True)
        try:
            await conn.execute("")
        finally:
            if not conn.closed:
                await conn.set_autocommit(autocommit)

    @staticmethod
    async def reset(conn: psycopg.AsyncConnection) -> None:
        if not _is_idle(conn):
            await conn.rollback()

    is_broken_by = staticmethod(_is_broken_by)

    @staticmethod
    async def close(conn: psycopg.AsyncConnection) -> None:
        with contextlib.suppress(psycopg.Error):
            await conn.close()


class _Recycled(Exception):
    """Raised by warmdb's check to make psycopg_pool discard a connection (already closed)."""


def _connector_class(plan: ConnectPlan, base: type) -> type:
    """A subclass of *base* whose ``connect`` opens connections through warmdb.

    psycopg_pool opens connections with ``connection_class.connect(conninfo, **kwargs)``;
    this class ignores the pool's (empty) conninfo and opens a *base* instance for *plan*, so
    each pooled connection gets a fresh token, the governor, retries and events, and is of the
    caller's class.
    """
    if issubclass(base, psycopg.AsyncConnection):

        async def connect_async(cls: type, conninfo: str = "", **kwargs: object) -> object:
            return await connect_plan_async(plan, connection_class=base)

        connect: object = classmethod(connect_async)
    else:

        def connect_sync(cls: type, conninfo: str = "", **kwargs: object) -> object:
            return connect_plan(plan, connection_class=base)

        connect = classmethod(connect_sync)
    return type(f"Warmdb{base.__name__}", (base,), {"connect": connect, "__module__": __name__})


@functools.cache
def _pool_class(*, sync: bool) -> type:
    """warmdb's pool class over psycopg_pool's, built on first use: importing psycopg_pool
    costs about 4 ms of cold start, which only pool users should pay."""
    if sync:
        from psycopg_pool import ConnectionPool

        return type("WarmConnectionPool", (_SyncPool, ConnectionPool), {"__module__": __name__})
    from psycopg_pool import AsyncConnectionPool

    return type(
        "WarmAsyncConnectionPool", (_AsyncPool, AsyncConnectionPool), {"__module__": __name__}
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
        report_recycle(self._plan, DRIVER, conn._warmdb_kept, reason, time.monotonic())

    def _given_back(self, conn: Any) -> None:
        """Record a connection's return; report why psycopg_pool is about to discard it."""
        kept: KeptConnection | None = getattr(conn, "_warmdb_kept", None)
        if kept is None:
            return  # not ours: psycopg_pool's putconn() refuses it
        now = time.monotonic()
        # _is_closed(conn), inline: this runs at every return.
        reason = kept.given_back(now, closed=conn.pgconn.status == _CONNECTION_BAD)
        if reason is not None:
            report_recycle(self._plan, DRIVER, kept, reason, now)


class _SyncPool(_PoolRecords):
    """warmdb's checks for :class:`psycopg_pool.ConnectionPool`."""

    def _check_out(self, conn: psycopg.Connection, *, sweep: bool = True) -> None:
        # psycopg_pool's check= callback, run at every getconn(). Raising makes the pool
        # discard the connection and hand out another.
        reason = judge(
            conn._warmdb_kept,  # type: ignore[attr-defined]
            time.monotonic(),
            self._policy,
            conn,
            is_closed=_is_closed,
            fileno=_Ops.fileno,
            ping=_Ops.ping,
        )
        if reason is None:
            return
        self._recycle(conn, reason)
        _Ops.close(conn)
        if sweep:
            # Whatever made this one unusable (its lifetime, a server restart, a proxy's idle
            # timeout) has most likely hit the idle ones opened or used with it: sort them out
            # now, instead of one per retry of psycopg_pool's check loop, which backs off
            # 1 s, 2 s... between failed checks.
            self.check()  # type: ignore[attr-defined]
        raise _Recycled("connection replaced")

    def check_connection(self, conn: psycopg.Connection) -> None:  # type: ignore[override]
        """Check one idle connection as warmdb checks at checkout; used by ``pool.check()``.

        :raises Exception: the connection was unusable; it is closed and will be replaced.
        """
        self._check_out(conn, sweep=False)

    def putconn(self, conn: psycopg.Connection) -> None:
        """Give a connection back (see :meth:`psycopg_pool.ConnectionPool.putconn`)."""
        self._given_back(conn)
        super().putconn(conn)  # type: ignore[misc]


class _AsyncPool(_PoolRecords):
    """warmdb's checks for :class:`psycopg_pool.AsyncConnectionPool`."""

    async def _check_out(self, conn: psycopg.AsyncConnection, *, sweep: bool = True) -> None:
        # As _SyncPool._check_out.
        reason = await judge_async(
            conn._warmdb_kept,  # type: ignore[attr-defined]
            time.monotonic(),
            self._policy,
            conn,
            is_closed=_is_closed,
            fileno=_AsyncOps.fileno,
            ping=_AsyncOps.ping,
        )
        if reason is None:
            return
        self._recycle(conn, reason)
        await _AsyncOps.close(conn)
        if sweep:
            await self.check()  # type: ignore[attr-defined]
        raise _Recycled("connection replaced")

    async def check_connection(self, conn: psycopg.AsyncConnection) -> None:  # type: ignore[override]
        """Check one idle connection as warmdb checks at checkout; used by ``pool.check()``.

        :raises Exception: the connection was unusable; it is closed and will be replaced.
        """
        await self._check_out(conn, sweep=False)

    async def putconn(self, conn: psycopg.AsyncConnection) -> None:
        """Give a connection back (see :meth:`psycopg_pool.AsyncConnectionPool.putconn`)."""
        self._given_back(conn)
        await super().putconn(conn)  # type: ignore[misc]
