"""warmdb for asyncpg: ``await connect()`` with IAM tokens, returning asyncpg's own connection.

::

    import warmdb.asyncpg as db

    conn = await db.connect(host="abc123.dsql.us-east-1.on.aws", user="admin")

    keeper = db.warm(host="abc123.dsql.us-east-1.on.aws")   # module level: connects lazily
    async with keeper.connection() as conn:                  # reused across invocations
        ...

    async with db.create_pool(host="abc123.dsql.us-east-1.on.aws") as pool:   # asyncpg's pool
        async with pool.acquire() as conn:                   # renewed and checked by warmdb
            ...

asyncpg connections belong to the event loop that opened them: keep one loop for the process
(``loop.run_until_complete`` per invocation) to reuse the kept connection; with
``asyncio.run()`` per invocation the keeper must reconnect each time.

The arguments are those of aurora-dsql-python-connector's ``aurora_dsql_asyncpg.connect``
(``dsn``, ``host``, ``user``, ``database``/``dbname``, ``port``, ``region``, ``profile``,
``token_duration_secs``, ``custom_credentials_provider``) plus ``auth``, ``policy`` and every
argument of :func:`asyncpg.connect`, passed through unchanged.

TLS: asyncpg has no ``sslmode``; warmdb turns ``sslmode`` / ``sslrootcert`` into the
:class:`ssl.SSLContext` libpq would use (``require`` encrypts without checking the
certificate, ``verify-ca`` checks it against the CA, ``verify-full`` also checks the host
name). An ``ssl=`` argument, asyncpg's own, is passed through and wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import socket
import ssl
import time
import weakref

import asyncpg
import asyncpg.pool

from warmdb._arguments import check_count, check_seconds
from warmdb._connect import ConnectPlan, open_with_retry_async, raise_connect_error
from warmdb.errors import ConfigurationError
from warmdb.policy import random_fraction
from warmdb.warm import (
    AsyncKeeper,
    KeptConnection,
    judge_async,
    report_recycle,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Generator
    from typing import Any

    from asyncpg.pool import PoolConnectionProxy

    from warmdb.policy import Policy

__all__ = ["WarmPool", "connect", "create_pool", "socket_of", "warm"]

DRIVER = "asyncpg"


async def connect(
    dsn: str | None = None,
    *,
    custom_credentials_provider: object | None = None,
    policy: Policy | None = None,
    **kwargs: object,
) -> asyncpg.Connection:
    """Open an asyncpg connection, signing an IAM token when the endpoint needs one.

    :param dsn: a ``postgresql://`` URL, a libpq ``key=value`` string, a host name or a DSQL
        cluster id. Keyword arguments win over its fields.
    :param custom_credentials_provider: a botocore ``CredentialProvider`` tried before
        botocore's chain.
    :param policy: connect timeout and retry budget (:class:`warmdb.policy.Policy`); the
        preset for the endpoint by default.
    :param kwargs: warmdb's arguments (see :func:`warmdb.psycopg2.connect`; ``database`` and
        ``dbname`` both work) and any argument of :func:`asyncpg.connect`. A ``password``
        callable may return an awaitable. From a DSN, ``application_name`` goes into
        ``server_settings`` and ``connect_timeout`` becomes ``timeout``.
    :returns: asyncpg's own connection object.
    :raises ConfigurationError: bad or contradictory arguments.
    :raises CredentialsError: no AWS credentials to sign with.
    :raises ConnectError: the connection failed, after the policy's retries; the driver's
        exception is the cause.
    """
    plan = ConnectPlan(
        dsn, kwargs, custom_credentials_provider=custom_credentials_provider, policy=policy
    )
    return await connect_plan(plan)


async def connect_plan(plan: ConnectPlan) -> asyncpg.Connection:
    """Open one connection for an already resolved *plan*, retrying as its policy says.

    Used by :func:`connect`, keepers and pools.
    """
    params = connect_params(plan)

    async def attempt() -> asyncpg.Connection:
        password = await plan.password_async()
        try:
            return await asyncpg.connect(**params, password=password)
        except (
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            OSError,
            asyncio.TimeoutError,
        ) as exc:
            raise_connect_error(
                exc, driver=DRIVER, endpoint=plan.endpoint, secrets=plan.secrets_of(password)
            )

    return await open_with_retry_async(plan, attempt, driver=DRIVER)


def connect_params(plan: ConnectPlan) -> dict[str, object]:
    """:func:`asyncpg.connect`'s arguments for *plan*, all but the password."""
    endpoint = plan.endpoint
    params = dict(plan.driver_kwargs)
    # libpq names that may arrive from a DSN, in asyncpg's terms.
    application_name = params.pop("application_name", None)
    if application_name is not None:
        settings = dict(params.get("server_settings") or {})  # type: ignore[call-overload]
        settings.setdefault("application_name", application_name)
        params["server_settings"] = settings
    connect_timeout = params.pop("connect_timeout", None)
    if connect_timeout is not None:
        params.setdefault("timeout", float(connect_timeout))  # type: ignore[arg-type]
    if plan.policy.connect_timeout is not None:
        params.setdefault("timeout", plan.policy.connect_timeout)
    params.update(host=endpoint.host, port=endpoint.port)
    if endpoint.user is not None:
        params["user"] = endpoint.user
    if endpoint.dbname is not None:
        params["database"] = endpoint.dbname
    if "ssl" not in params and endpoint.sslmode is not None:
        params["ssl"] = ssl_context(endpoint.sslmode, endpoint.sslrootcert)
    return params


def ssl_context(sslmode: str, sslrootcert: str | None) -> ssl.SSLContext | bool:
    """Return asyncpg's ``ssl`` argument for a libpq *sslmode* and CA file.

    Contexts are built once per (mode, CA file and its modification time) and shared: loading
    a CA bundle costs milliseconds, too much for every connect.
    """
    if sslmode == "disable":
        return False
    mtime = None
    if sslrootcert not in (None, "system"):
        mtime = os.stat(sslrootcert).st_mtime_ns  # type: ignore[arg-type]
    return _cached_context(sslmode, sslrootcert, mtime)


@functools.lru_cache(maxsize=32)
def _cached_context(sslmode: str, sslrootcert: str | None, _mtime: int | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # As libpq: "require" without a CA encrypts but does not authenticate the server;
    # with a CA file it checks the chain like verify-ca.
    verify = sslmode in ("verify-ca", "verify-full") or sslrootcert is not None
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    context.check_hostname = sslmode == "verify-full"
    context.verify_mode = ssl.CERT_REQUIRED
    if sslrootcert in (None, "system"):
        context.load_default_certs()
    else:
        context.load_verify_locations(cafile=sslrootcert)
    return context


def warm(
    dsn: str | None = None,
    *,
    custom_credentials_provider: object | None = None,
    policy: Policy | None = None,
    **kwargs: object,
) -> AsyncKeeper[asyncpg.Connection]:
    """Return an :class:`~warmdb.warm.AsyncKeeper`: one connection kept across warm starts.

    Nothing connects until the first ``keeper.connection()``. The arguments are those of
    :func:`connect`; the endpoint is resolved now, so a bad argument fails at import time.
    """
    plan = ConnectPlan(
        dsn, kwargs, custom_credentials_provider=custom_credentials_provider, policy=policy
    )
    return AsyncKeeper(plan, _Ops(plan), driver=DRIVER, abandon=_abandon)


def create_pool(
    dsn: str | None = None,
    *,
    policy: Policy | None = None,
    min_size: int = 10,
    max_size: int = 10,
    max_queries: int = 50_000,
    max_inactive_connection_lifetime: float | None = None,
    setup: Callable[[PoolConnectionProxy], Awaitable[None]] | None = None,
    init: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
    reset: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
    connection_class: type[asyncpg.Connection] = asyncpg.Connection,
    record_class: type[asyncpg.Record] = asyncpg.Record,
    custom_credentials_provider: object | None = None,
    **kwargs: object,
) -> WarmPool:
    """Return an asyncpg pool whose connections warmdb opens, renews and checks.

    Use it as :func:`asyncpg.create_pool`'s::

        async with db.create_pool(host=ENDPOINT, min_size=2, max_size=4) as pool:
            async with pool.acquire() as conn:
                await conn.fetchval("SELECT 1")

    What warmdb adds to asyncpg's pool: every new connection goes through
    :func:`connect_plan` (a fresh token, the rate governor, retries, events); at acquire, a
    connection older than ``policy.max_lifetime`` (minus the policy's jitter), idle longer
    than ``policy.max_idle``, closed, or whose socket became readable (the server closed it)
    is replaced without a round trip, and one idle longer than ``policy.ping_after_idle`` is
    pinged first. The caller never gets a connection found unusable. See ``docs/pools.md``.

    :param dsn: the endpoint, as for :func:`connect`.
    :param policy: how connections live and connects are retried; the endpoint's preset by
        default.
    :param min_size: connections opened when the pool starts and kept (default 10).
    :param max_size: the most connections (default 10).
    :param max_queries: queries after which asyncpg replaces a connection (default 50,000).
    :param max_inactive_connection_lifetime: seconds after which asyncpg closes an unused
        connection above ``min_size``; ``0`` never. Default: ``policy.max_idle`` if set,
        else asyncpg's 300.
    :param setup: ``async setup(conn)`` run on each acquired connection, after warmdb's
        check; if it fails, the connection is closed and the error raised, as in asyncpg.
    :param init: ``async init(conn)`` run on each new connection.
    :param reset: ``async reset(conn)`` run on each released connection (asyncpg >= 0.30).
    :param connection_class: the class of the connections (a subclass of
        :class:`asyncpg.Connection`).
    :param record_class: the class of the records queries return.
    :param custom_credentials_provider: a botocore ``CredentialProvider`` tried first.
    :param kwargs: warmdb's endpoint arguments and :func:`asyncpg.connect`'s (``timeout``,
        ``command_timeout``, ``statement_cache_size``...), as for :func:`connect`.
    :returns: a pool to ``await`` or use with ``async with``, as asyncpg's.
    :raises ConfigurationError: a bad argument, named in the message.
    """
    for key in kwargs:
        if key in _POOL_OWNED:
            raise ConfigurationError(f"{key}= is set by warmdb's pool: {_POOL_OWNED[key]}")
    check_count("min_size", min_size, minimum=0)
    check_count("max_size", max_size, minimum=max(1, min_size))
    check_count("max_queries", max_queries, minimum=1)
    plan = ConnectPlan(
        dsn,
        {**kwargs, "connection_class": connection_class, "record_class": record_class},
        custom_credentials_provider=custom_credentials_provider,
        policy=policy,
    )
    if max_inactive_connection_lifetime is None:
        idle = plan.policy.max_idle
        max_inactive_connection_lifetime = _ASYNCPG_MAX_INACTIVE if idle is None else idle
    inactive = check_seconds("max_inactive_connection_lifetime", max_inactive_connection_lifetime)
    return WarmPool(
        plan,
        setup=setup,
        min_size=min_size,
        max_size=max_size,
        max_queries=max_queries,
        max_inactive_connection_lifetime=inactive,
        init=init,
        reset=reset,
        connection_class=connection_class,
        record_class=record_class,
    )


# Arguments warmdb sets itself, and what to do instead.
_POOL_OWNED = {
    "connect": "warmdb opens every connection of the pool",
    "max_lifetime": "set the policy's: policy=DSQL.replace(max_lifetime=...)",
    "max_idle": "set the policy's: policy=DSQL.replace(max_idle=...)",
}
#: asyncpg's default for max_inactive_connection_lifetime.
_ASYNCPG_MAX_INACTIVE = 300.0


class WarmPool(asyncpg.pool.Pool):
    """asyncpg's pool with warmdb's connects, a maximum lifetime and a checkout check.

    Made by :func:`create_pool`. Each connection has a :class:`~warmdb.warm.KeptConnection`
    record (opened, expires, last released). At acquire, :func:`~warmdb.warm.checkout_verdict`
    decides whether to hand it out, ping it first, or replace it; at release, an expired
    connection is closed instead of going back; and a connection still idle in the pool when
    its lifetime ends is closed then, by a timer of the event loop, so the server never cuts
    one at its own limit. The timer is a convenience, never relied on: where the loop does
    not run (a frozen Lambda environment), the check at acquire catches what it missed.
    """

    __slots__ = ("_in_use", "_plan", "_records", "_warm_setup")

    def __init__(
        self,
        plan: ConnectPlan,
        *,
        setup: Callable[[PoolConnectionProxy], Awaitable[None]] | None,
        **options: Any,
    ) -> None:
        self._plan = plan
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
        conn = await connect_plan(self._plan)
        # Not a secret: the share of jitter.
        kept = KeptConnection(time.monotonic(), self._plan.policy, random_fraction())
        self._records[conn] = kept
        if kept.expires_at != math.inf:
            asyncio.get_running_loop().call_later(
                kept.expires_at - time.monotonic(), self._retire_if_idle, weakref.ref(conn)
            )
        return conn

    def _retire_if_idle(self, ref: weakref.ref[asyncpg.Connection]) -> None:
        conn = ref()
        if conn is None or conn.is_closed() or conn in self._in_use:
            return  # gone already, or checked out: judged at release or the next acquire
        report_recycle(self._plan, DRIVER, self._records[conn], "lifetime", time.monotonic())
        # No round trip from a timer: terminate() closes the socket at once, and asyncpg
        # frees the slot (and reopens it in the background while below min_size).
        conn.terminate()

    def acquire(self, *, timeout: float | None = None) -> _AcquireContext:
        """Acquire a connection, as :meth:`asyncpg.pool.Pool.acquire`, checked by warmdb.

        :param timeout: seconds to wait for a usable connection, replacements included;
            ``None`` waits as long as it takes.
        :raises asyncio.TimeoutError: no usable connection within *timeout*.
        """
        return _AcquireContext(self, timeout)

    async def release(
        self, connection: PoolConnectionProxy, *, timeout: float | None = None
    ) -> None:
        """Release a connection, as :meth:`asyncpg.pool.Pool.release`; an expired one is
        closed instead."""
        conn = getattr(connection, "_con", None)
        kept = None if conn is None else self._records.get(conn)
        if kept is None:  # not from this pool, or released already: asyncpg's answer
            await super().release(connection, timeout=timeout)
            return
        now = time.monotonic()
        reason = kept.given_back(now, closed=conn.is_closed())
        if reason is not None:
            report_recycle(self._plan, DRIVER, kept, reason, now)
            if reason == "lifetime":
                # Closing frees the slot, which makes asyncpg's release a no-op. (A closed
                # connection's slot asyncpg frees itself.)
                await _Ops.close(conn)
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
        reason = await judge_async(
            kept,
            time.monotonic(),
            self._plan.policy,
            conn,
            is_closed=_Ops.is_closed,
            fileno=_Ops.fileno,
            ping=lambda conn: _within(_Ops.ping(conn), loop, deadline),
        )
        if reason is None:
            return True
        report_recycle(self._plan, DRIVER, kept, reason, time.monotonic())
        if reason in ("lifetime", "idle"):
            await _Ops.close(conn)  # a healthy connection: say goodbye to the server
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


def _abandon(conn: asyncpg.Connection) -> None:
    # terminate() closes the socket without a round trip: the connection's loop may be gone.
    with contextlib.suppress(Exception):
        conn.terminate()


class _Ops:
    """How keepers and pools open, check, ping, reset and close asyncpg connections."""

    __slots__ = ("_plan",)

    def __init__(self, plan: ConnectPlan) -> None:
        self._plan = plan

    async def open(self) -> asyncpg.Connection:
        return await connect_plan(self._plan)

    @staticmethod
    def is_closed(conn: asyncpg.Connection) -> bool:
        return conn.is_closed()

    @staticmethod
    def fileno(conn: asyncpg.Connection) -> int:
        return socket_of(conn).fileno()

    @staticmethod
    async def ping(conn: asyncpg.Connection) -> None:
        await conn.execute("SELECT 1")

    @staticmethod
    async def reset(conn: asyncpg.Connection) -> None:
        if conn.is_in_transaction():
            await conn.execute("ROLLBACK")

    @staticmethod
    def is_broken_by(conn: asyncpg.Connection, exc: BaseException) -> bool:
        return isinstance(
            exc,
            (asyncpg.ConnectionDoesNotExistError, asyncpg.PostgresConnectionError, OSError),
        )

    @staticmethod
    async def close(conn: asyncpg.Connection) -> None:
        try:
            await asyncio.wait_for(conn.close(), timeout=5)
        except Exception:
            conn.terminate()


def socket_of(conn: asyncpg.Connection) -> socket.socket:
    """The connection's socket, for a readability check that takes no round trip.

    asyncpg has no public accessor; its transport is asyncio's, whose ``socket`` extra is.
    """
    return conn._transport.get_extra_info("socket")
