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

import asyncpg

from warmdb._connect import ConnectPlan, open_connection_async
from warmdb._postgres import classify_postgres
from warmdb._tls import ssl_context
from warmdb.drivers import AsyncAdapter
from warmdb.warm import AsyncKeeper

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from collections.abc import Awaitable, Callable
    from typing import Any

    from asyncpg.pool import PoolConnectionProxy

    from warmdb.drivers import ErrorVerdict
    from warmdb.policy import Policy
    from warmdb.pools.asyncpg import WarmPool

__all__ = ["AsyncpgAdapter", "WarmPool", "connect", "create_pool", "socket_of", "warm"]

#: asyncpg.connect's arguments (asyncpg 0.30 to 0.32; guarded by tests/unit/test_drivers.py),
#: and the libpq names a DSN may carry that warmdb translates (application_name,
#: connect_timeout).
_CONNECT_KEYS = frozenset(
    {
        "passfile",
        "service",
        "servicefile",
        "loop",
        "timeout",
        "statement_cache_size",
        "max_cached_statement_lifetime",
        "max_cacheable_statement_size",
        "command_timeout",
        "ssl",
        "direct_tls",
        "connection_class",
        "record_class",
        "server_settings",
        "target_session_attrs",
        "krbsrvname",
        "gsslib",
        "application_name",
        "connect_timeout",
    }
)


class AsyncpgAdapter(AsyncAdapter):
    """What warmdb knows about asyncpg (see :mod:`warmdb.drivers`).

    asyncpg connections belong to the event loop that opened them (:attr:`loop_bound`).
    """

    name = "asyncpg"
    family = "postgresql"
    driver_keys = _CONNECT_KEYS
    dialect_keys = frozenset({"prepared_statement_cache_size", "prepared_statement_name_func"})
    loop_bound = True
    connect_errors = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError)

    def connect_params(self, plan: ConnectPlan, password: str | None) -> dict[str, Any]:
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
        params.update(host=endpoint.host, port=endpoint.port, password=password)
        if endpoint.user is not None:
            params["user"] = endpoint.user
        if endpoint.dbname is not None:
            params["database"] = endpoint.dbname
        if "ssl" not in params and endpoint.sslmode is not None:
            params["ssl"] = _ssl_argument(endpoint.sslmode, endpoint.sslrootcert)
        return params

    def transaction_pooling_defaults(self) -> dict[str, Any]:
        # asyncpg prepares every statement and caches it per connection.
        return {"statement_cache_size": 0}

    async def connect_raw(self, params: dict[str, Any]) -> asyncpg.Connection:
        return await asyncpg.connect(**params)

    def classify(self, exc: BaseException) -> ErrorVerdict:
        code = getattr(exc, "sqlstate", None)
        broken = isinstance(
            exc, (asyncpg.ConnectionDoesNotExistError, asyncpg.PostgresConnectionError, OSError)
        )
        return classify_postgres(exc, code if isinstance(code, str) else None, broken=broken)

    def is_closed(self, conn: asyncpg.Connection) -> bool:
        return bool(conn.is_closed())

    def fileno(self, conn: asyncpg.Connection) -> int:
        return socket_of(conn).fileno()

    def in_transaction(self, conn: asyncpg.Connection) -> bool:
        return bool(conn.is_in_transaction())

    async def ping(self, conn: asyncpg.Connection) -> None:
        await conn.execute("SELECT 1")

    async def close(self, conn: asyncpg.Connection) -> None:
        try:
            await asyncio.wait_for(conn.close(), timeout=5)
        except Exception:
            conn.terminate()

    def abandon(self, conn: asyncpg.Connection) -> None:
        # terminate() closes the socket without a round trip: the connection's loop may be gone.
        with contextlib.suppress(Exception):
            conn.terminate()

    async def execute(
        self, conn: asyncpg.Connection, sql: str, params: Any = None
    ) -> list[tuple[Any, ...]]:
        records = await conn.fetch(sql, *(params or ()))
        return [tuple(record) for record in records]

    async def begin(self, conn: asyncpg.Connection) -> None:
        await conn.execute("BEGIN")

    async def commit(self, conn: asyncpg.Connection) -> None:
        await conn.execute("COMMIT")

    async def rollback(self, conn: asyncpg.Connection) -> None:
        if conn.is_in_transaction():
            await conn.execute("ROLLBACK")


def _ssl_argument(sslmode: str, sslrootcert: str | None) -> object:
    """asyncpg's ``ssl`` argument for a libpq *sslmode*: asyncpg's own ``"allow"`` /
    ``"prefer"`` (TLS when the server offers it, as libpq), else the context libpq would use
    (``False`` for ``disable``)."""
    if sslmode in ("allow", "prefer"):
        return sslmode
    return ssl_context(sslmode, sslrootcert) or False


def socket_of(conn: asyncpg.Connection) -> socket.socket:
    """The connection's socket, for a readability check that takes no round trip.

    asyncpg has no public accessor; its transport is asyncio's, whose ``socket`` extra is
    (``Connection._transport``, guarded by tests/unit/test_drivers.py).
    """
    return conn._transport.get_extra_info("socket")


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
    :raises ConfigurationError: bad, unknown or contradictory arguments.
    :raises CredentialsError: no AWS credentials to sign with, or the password callable failed.
    :raises ConnectError: the connection failed, after the policy's retries; the driver's
        exception is the cause.
    """
    conn: asyncpg.Connection = await open_connection_async(
        AsyncpgAdapter().plan(dsn, kwargs, custom_credentials_provider, policy, reuse=True)
    )
    return conn


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
    return AsyncKeeper(AsyncpgAdapter().plan(dsn, kwargs, custom_credentials_provider, policy))


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
    retry: Any = None,
    **kwargs: object,
) -> WarmPool:
    """Return an asyncpg pool whose connections warmdb opens, renews and checks.

    Use it as :func:`asyncpg.create_pool`'s::

        async with db.create_pool(host=ENDPOINT, min_size=2, max_size=4) as pool:
            async with pool.acquire() as conn:
                await conn.fetchval("SELECT 1")

    What warmdb adds to asyncpg's pool: every new connection is opened by warmdb (a fresh token,
    the rate governor, retries, events); at acquire, a connection older than
    ``policy.max_lifetime`` (minus the policy's jitter), idle longer than ``policy.max_idle``,
    closed, or whose socket became readable (the server closed it) is replaced without a round
    trip, and one idle longer than ``policy.ping_after_idle`` is pinged first. The caller never
    gets a connection found unusable. See ``docs/pools.md``.

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
    :param retry: the OCC retry budget of ``pool.run_transaction()``
        (:class:`warmdb.OCCRetryConfig`...; warmdb's default when ``None``).
    :param custom_credentials_provider: a botocore ``CredentialProvider`` tried first.
    :param kwargs: warmdb's endpoint arguments and :func:`asyncpg.connect`'s (``timeout``,
        ``command_timeout``, ``statement_cache_size``...), as for :func:`connect`.
    :returns: a pool to ``await`` or use with ``async with``, as asyncpg's.
    :raises ConfigurationError: a bad argument, named in the message.
    """
    from warmdb.pools.asyncpg import make_pool

    return make_pool(
        dsn,
        kwargs,
        adapter=AsyncpgAdapter(),
        custom_credentials_provider=custom_credentials_provider,
        policy=policy,
        setup=setup,
        min_size=min_size,
        max_size=max_size,
        max_queries=max_queries,
        max_inactive_connection_lifetime=max_inactive_connection_lifetime,
        init=init,
        reset=reset,
        connection_class=connection_class,
        record_class=record_class,
        retry=retry,
    )


def __getattr__(name: str) -> object:
    # WarmPool, the class create_pool() returns, lives with warmdb's other pools.
    if name == "WarmPool":
        from warmdb.pools.asyncpg import WarmPool

        return WarmPool
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
