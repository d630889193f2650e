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

import psycopg

from warmdb._arguments import keyword_arguments_of
from warmdb._connect import ConnectPlan, open_connection, open_connection_async
from warmdb._postgres import LIBPQ_KEYS, classify_postgres, dsql_engine_defaults, libpq_params
from warmdb.drivers import AsyncAdapter, SyncAdapter
from warmdb.warm import AsyncKeeper, Keeper

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, ClassVar

    from psycopg_pool import AsyncConnectionPool, ConnectionPool

    from warmdb.drivers import ErrorVerdict
    from warmdb.policy import Policy

__all__ = [
    "AsyncPsycopgAdapter",
    "PsycopgAdapter",
    "connect",
    "connect_async",
    "pool",
    "pool_async",
    "warm",
    "warm_async",
]

# libpq's CONNECTION_BAD as a plain int: comparing pgconn.status to the IntEnum member costs
# 50 ns more, at every pool checkout and return.
_CONNECTION_BAD = int(psycopg.pq.ConnStatus.BAD)
# Likewise TRANSACTION_IDLE: conn.info builds a new object at each access.
_IDLE = int(psycopg.pq.TransactionStatus.IDLE)
# psycopg.Connection.connect's own arguments, beside libpq's keywords.
_CONNECT_KEYS = frozenset({"autocommit", "prepare_threshold", "row_factory", "cursor_factory"})
_CONTEXT_KEYS = frozenset({"context"})


class _PsycopgKnowledge:
    """What the sync and async psycopg adapters share: all but I/O."""

    name = "psycopg"
    family = "postgresql"
    driver_keys = LIBPQ_KEYS | _CONNECT_KEYS | _CONTEXT_KEYS
    open_keys = frozenset({"connection_class"})
    connect_errors: ClassVar[tuple[type[BaseException], ...]] = (psycopg.Error,)
    options: Any

    def engine_defaults(self, plan: ConnectPlan) -> dict[str, Any]:
        return dsql_engine_defaults(plan)

    def transaction_pooling_defaults(self) -> dict[str, Any]:
        # psycopg prepares a statement run often enough (prepare_threshold, default 5).
        return {"prepare_threshold": None}

    def connect_params(self, plan: ConnectPlan, password: str | None) -> dict[str, Any]:
        return libpq_params(plan, password, psycopg.pq.version())

    def classify(self, exc: BaseException) -> ErrorVerdict:
        code = getattr(exc, "sqlstate", None)
        # An OperationalError without a SQLSTATE did not come from the server: the socket
        # failed.
        broken = isinstance(exc, psycopg.OperationalError) and code is None
        return classify_postgres(exc, code, broken=broken)

    def is_closed(self, conn: Any) -> bool:
        # What conn.closed answers (a broken connection is closed too), a property call cheaper.
        return bool(conn.pgconn.status == _CONNECTION_BAD)

    def is_broken_by(self, conn: Any, exc: BaseException) -> bool:
        return bool(conn.broken) or (
            isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None
        )

    def fileno(self, conn: Any) -> int:
        return int(conn.fileno())

    def in_transaction(self, conn: Any) -> bool:
        return bool(conn.pgconn.transaction_status != _IDLE)


class PsycopgAdapter(_PsycopgKnowledge, SyncAdapter):
    """What warmdb knows about psycopg's sync connections (see :mod:`warmdb.drivers`).

    :param connection_class: the class whose ``connect`` is called (a subclass of
        :class:`psycopg.Connection`).
    """

    def connect_raw(self, params: dict[str, Any]) -> psycopg.Connection[Any]:
        cls = self.options.get("connection_class", psycopg.Connection)
        return cls.connect(**params)

    def ping(self, conn: psycopg.Connection[Any]) -> None:
        # As psycopg_pool's check: an empty query in autocommit is one round trip, no BEGIN.
        autocommit = conn.autocommit
        conn.autocommit = True
        try:
            conn.execute("")
        finally:
            if not conn.closed:
                conn.autocommit = autocommit

    def close(self, conn: psycopg.Connection[Any]) -> None:
        with contextlib.suppress(psycopg.Error):
            conn.close()

    def execute(
        self, conn: psycopg.Connection[Any], sql: str, params: Any = None
    ) -> list[tuple[Any, ...]]:
        cursor = conn.execute(sql, params)
        return list(cursor.fetchall()) if cursor.description is not None else []

    def begin(self, conn: psycopg.Connection[Any]) -> None:
        # Outside autocommit psycopg opens the transaction at the first statement itself.
        if conn.autocommit:
            conn.execute("BEGIN")

    def commit(self, conn: psycopg.Connection[Any]) -> None:
        if conn.autocommit:
            conn.execute("COMMIT")
        else:
            conn.commit()

    def rollback(self, conn: psycopg.Connection[Any]) -> None:
        if conn.autocommit:
            if self.in_transaction(conn):
                conn.execute("ROLLBACK")
        else:
            conn.rollback()


class AsyncPsycopgAdapter(_PsycopgKnowledge, AsyncAdapter):
    """What warmdb knows about psycopg's async connections. Their connections work in any
    event loop (``asyncio.run()`` per invocation keeps them).

    :param connection_class: a subclass of :class:`psycopg.AsyncConnection`.
    """

    async def connect_raw(self, params: dict[str, Any]) -> psycopg.AsyncConnection[Any]:
        cls = self.options.get("connection_class", psycopg.AsyncConnection)
        return await cls.connect(**params)

    async def ping(self, conn: psycopg.AsyncConnection[Any]) -> None:
        autocommit = conn.autocommit
        await conn.set_autocommit(True)
        try:
            await conn.execute("")
        finally:
            if not conn.closed:
                await conn.set_autocommit(autocommit)

    async def close(self, conn: psycopg.AsyncConnection[Any]) -> None:
        with contextlib.suppress(psycopg.Error):
            await conn.close()

    def abandon(self, conn: psycopg.AsyncConnection[Any]) -> None:
        with contextlib.suppress(Exception):
            conn.pgconn.finish()

    async def execute(
        self, conn: psycopg.AsyncConnection[Any], sql: str, params: Any = None
    ) -> list[tuple[Any, ...]]:
        cursor = await conn.execute(sql, params)
        return list(await cursor.fetchall()) if cursor.description is not None else []

    async def begin(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if conn.autocommit:
            await conn.execute("BEGIN")

    async def commit(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if conn.autocommit:
            await conn.execute("COMMIT")
        else:
            await conn.commit()

    async def rollback(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if conn.autocommit:
            if self.in_transaction(conn):
                await conn.execute("ROLLBACK")
        else:
            await conn.rollback()


def _sync(connection_class: type[psycopg.Connection[Any]]) -> PsycopgAdapter:
    if connection_class is psycopg.Connection:
        return PsycopgAdapter()
    return PsycopgAdapter(connection_class=connection_class)


def _async(connection_class: type[psycopg.AsyncConnection[Any]]) -> AsyncPsycopgAdapter:
    if connection_class is psycopg.AsyncConnection:
        return AsyncPsycopgAdapter()
    return AsyncPsycopgAdapter(connection_class=connection_class)


def connect(
    conninfo: str = "",
    *,
    connection_class: type[psycopg.Connection[Any]] = psycopg.Connection,
    custom_credentials_provider: object | None = None,
    policy: Policy | None = None,
    **kwargs: object,
) -> psycopg.Connection[Any]:
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
    :raises ConfigurationError: bad, unknown or contradictory arguments.
    :raises CredentialsError: no AWS credentials to sign with, or the password callable failed.
    :raises ConnectError: the connection failed, after the policy's retries; the driver's
        exception is the cause.
    """
    plan = _sync(connection_class).plan(
        conninfo, kwargs, custom_credentials_provider, policy, reuse=True
    )
    conn: psycopg.Connection[Any] = open_connection(plan)
    return conn


async def connect_async(
    conninfo: str = "",
    *,
    connection_class: type[psycopg.AsyncConnection[Any]] = psycopg.AsyncConnection,
    custom_credentials_provider: object | None = None,
    policy: Policy | None = None,
    **kwargs: object,
) -> psycopg.AsyncConnection[Any]:
    """Open a psycopg async connection; the arguments are those of :func:`connect`.

    A ``password`` callable may return an awaitable.
    """
    plan = _async(connection_class).plan(
        conninfo, kwargs, custom_credentials_provider, policy, reuse=True
    )
    conn: psycopg.AsyncConnection[Any] = await open_connection_async(plan)
    return conn


def warm(
    conninfo: str = "",
    *,
    connection_class: type[psycopg.Connection[Any]] = psycopg.Connection,
    custom_credentials_provider: object | None = None,
    policy: Policy | None = None,
    **kwargs: object,
) -> Keeper[psycopg.Connection[Any]]:
    """Return a :class:`~warmdb.warm.Keeper`: one connection kept across warm starts.

    Nothing connects until the first ``keeper.connection()``. The arguments are those of
    :func:`connect`; the endpoint is resolved now, so a bad argument fails at import time.
    """
    return Keeper(
        _sync(connection_class).plan(conninfo, kwargs, custom_credentials_provider, policy)
    )


def warm_async(
    conninfo: str = "",
    *,
    connection_class: type[psycopg.AsyncConnection[Any]] = psycopg.AsyncConnection,
    custom_credentials_provider: object | None = None,
    policy: Policy | None = None,
    **kwargs: object,
) -> AsyncKeeper[psycopg.AsyncConnection[Any]]:
    """Return an :class:`~warmdb.warm.AsyncKeeper` for psycopg's async connections.

    The arguments are those of :func:`connect_async`. The kept connection survives a change
    of event loop (``asyncio.run()`` per invocation): psycopg binds nothing to the loop.
    """
    return AsyncKeeper(
        _async(connection_class).plan(conninfo, kwargs, custom_credentials_provider, policy)
    )


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
    retry: Any = None,
    **kwargs: object,
) -> ConnectionPool:
    """Return a :class:`psycopg_pool.ConnectionPool` whose connections warmdb opens and checks.

    Use it as psycopg_pool's own pool::

        with db.pool(host=ENDPOINT, min_size=2, open=True) as pool:
            with pool.connection() as conn:
                conn.execute("SELECT 1")

    What warmdb adds: every new connection is opened by warmdb (a fresh token,
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
    :param retry: the OCC retry budget of ``pool.run_transaction()``
        (:class:`warmdb.OCCRetryConfig`...; warmdb's default when ``None``).
    :param custom_credentials_provider: a botocore ``CredentialProvider`` tried first.
    :param kwargs: warmdb's endpoint arguments and psycopg's connect arguments, as for
        :func:`connect`.
    :raises ConfigurationError: a bad argument, named in the message.
    """
    # The parameters, by name, as _pool takes them (pool_async shares the body).
    return _pool(sync=True, **locals())


def pool_async(conninfo: str = "", **kwargs: Any) -> AsyncConnectionPool:
    """Return a :class:`psycopg_pool.AsyncConnectionPool`; the arguments are those of
    :func:`pool`, with async callbacks (``configure``, ``reset``) and a subclass of
    :class:`psycopg.AsyncConnection` as ``connection_class``.

    As with psycopg_pool, open it in a coroutine: ``async with db.pool_async(...) as pool:``,
    or ``open=False`` and ``await pool.open()``. A ``password`` callable may return an
    awaitable.
    """
    kwargs.setdefault("connection_class", psycopg.AsyncConnection)
    return _pool(sync=False, conninfo=conninfo, **keyword_arguments_of(pool, kwargs))


def _pool(*, sync: bool, connection_class: type, **arguments: Any) -> Any:
    """What :func:`pool` and :func:`pool_async` do, with their arguments by name."""
    from warmdb.pools.psycopg import make_pool

    adapter = _sync(connection_class) if sync else _async(connection_class)
    return make_pool(sync=sync, adapter=adapter, **arguments)
