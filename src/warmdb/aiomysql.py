"""warmdb for aiomysql: ``await connect()`` with RDS IAM tokens, returning aiomysql's connection.

::

    import warmdb.aiomysql as db

    conn = await db.connect(host="mydb.abc123.us-east-1.rds.amazonaws.com", user="iam_user")

    keeper = db.warm(host=ENDPOINT, user="iam_user")   # module level: connects lazily
    async with keeper.connection() as conn:             # reused across invocations
        ...

    async with db.pool(host=ENDPOINT, user="iam_user", max_size=5) as pool:
        async with pool.connection() as conn:
            ...

:func:`pool` is warmdb's asyncio pool (:mod:`warmdb.pools.async_queue`): aiomysql's own pool
connects with fixed arguments, which cannot carry a fresh token per connect.

aiomysql follows PyMySQL: it sends ``mysql_clear_password`` on a plaintext connection too, and
it goes on in plaintext when the server does not offer TLS even though it was given a TLS
context. warmdb's connections refuse that: with ``ssl_mode`` ``require`` or stricter (the
default with a token) a server without TLS is refused before the password is sent. The
connection is then :class:`TLSRequiredConnection`, a subclass of :class:`aiomysql.Connection`
that adds this one check.

The arguments are those of :func:`warmdb.pymysql.connect` (``database`` / ``dbname`` become
aiomysql's ``db``), with any argument of :func:`aiomysql.connect` instead of PyMySQL's; its
``ssl=`` (a context) is passed through and wins.

aiomysql connections belong to the event loop that opened them: keep one loop for the process
to reuse the kept connection.
"""

from __future__ import annotations

import asyncio

import aiomysql
import pymysql.err
from pymysql.constants import CLIENT, CR, SERVER_STATUS

from warmdb._connect import ConnectPlan, open_connection_async
from warmdb._mysql import PYMYSQL_CONNECT_KEYS, base_params, check_tls, classify_mysql, tls_mode
from warmdb._tls import ssl_context
from warmdb.drivers import AsyncAdapter
from warmdb.pools import async_queue_pool
from warmdb.warm import AsyncKeeper

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from warmdb.drivers import ErrorVerdict
    from warmdb.policy import Policy
    from warmdb.pools.async_queue import AsyncConnectionPool

__all__ = ["AiomysqlAdapter", "TLSRequiredConnection", "connect", "pool", "warm"]

#: aiomysql.Connection's arguments warmdb passes through (aiomysql 0.2 and 0.3; guarded by
#: tests/unit/test_mysql.py): PyMySQL's that it shares, and its own.
_CONNECT_KEYS = PYMYSQL_CONNECT_KEYS | {"auth_plugin", "echo", "loop"}


class TLSRequiredConnection(aiomysql.Connection):
    """An :class:`aiomysql.Connection` that refuses a server without TLS when given a TLS
    context, instead of sending the password in clear (CR_SSL_CONNECTION_ERROR, 2026).

    Built on aiomysql's login steps (``_request_authentication``, ``server_capabilities``,
    ``_ssl_context``; guarded by tests/unit/test_mysql_drivers.py).
    """

    async def _request_authentication(self) -> None:
        if self._ssl_context is not None and not self.server_capabilities & CLIENT.SSL:
            raise pymysql.err.OperationalError(
                CR.CR_SSL_CONNECTION_ERROR, "TLS is required but the server does not offer it"
            )
        await super()._request_authentication()


class AiomysqlAdapter(AsyncAdapter):
    """What warmdb knows about aiomysql (see :mod:`warmdb.drivers`).

    aiomysql connections belong to the event loop that opened them (:attr:`loop_bound`).
    """

    name = "aiomysql"
    family = "mysql"
    driver_keys = _CONNECT_KEYS
    loop_bound = True
    # aiomysql raises PyMySQL's exceptions; a connect timeout arrives as TimeoutError.
    connect_errors = (pymysql.err.MySQLError, OSError, asyncio.TimeoutError)

    def check_plan(self, plan: ConnectPlan) -> None:
        check_tls(plan, empty_keys=("ssl",))

    def connect_params(self, plan: ConnectPlan, password: str | None) -> dict[str, Any]:
        params = base_params(plan, password, database_key="db")
        if plan.policy.connect_timeout is not None:
            params.setdefault("connect_timeout", plan.policy.connect_timeout)
        mode = tls_mode(plan.endpoint)
        if "ssl" not in params and mode is not None and mode not in ("allow", "prefer"):
            params["ssl"] = ssl_context(mode, plan.endpoint.sslrootcert)
        return params

    async def connect_raw(self, params: dict[str, Any]) -> TLSRequiredConnection:
        # aiomysql.connect() builds an aiomysql.Connection and runs its _connect(); the same
        # with the subclass that refuses a server without TLS.
        conn = TLSRequiredConnection(**params)
        await conn._connect()
        return conn

    def classify(self, exc: BaseException) -> ErrorVerdict:
        return classify_mysql(exc, broken=isinstance(exc, pymysql.err.InterfaceError))

    def is_closed(self, conn: aiomysql.Connection) -> bool:
        return bool(conn.closed)

    def fileno(self, conn: aiomysql.Connection) -> int:
        writer = conn._writer
        sock = None if writer is None else writer.transport.get_extra_info("socket")
        return -1 if sock is None else int(sock.fileno())

    def in_transaction(self, conn: aiomysql.Connection) -> bool:
        status = conn.server_status or 0
        return bool(status & SERVER_STATUS.SERVER_STATUS_IN_TRANS)

    async def ping(self, conn: aiomysql.Connection) -> None:
        # Never reconnect behind warmdb's back: a reconnect would reuse the old password.
        await conn.ping(reconnect=False)

    async def close(self, conn: aiomysql.Connection) -> None:
        try:
            await asyncio.wait_for(conn.ensure_closed(), timeout=5)
        except Exception:
            conn.close()

    def abandon(self, conn: aiomysql.Connection) -> None:
        # close() drops the transport without a round trip: the connection's loop may be gone.
        try:  # noqa: SIM105
            conn.close()
        except Exception:  # noqa: S110 (the transport may be gone with its loop)
            pass

    async def execute(
        self, conn: aiomysql.Connection, sql: str, params: Any = None
    ) -> list[tuple[Any, ...]]:
        async with conn.cursor() as cursor:
            await cursor.execute(sql, params)
            if cursor.description is None:
                return []
            return [tuple(row) for row in await cursor.fetchall()]

    async def begin(self, conn: aiomysql.Connection) -> None:
        await conn.begin()

    async def commit(self, conn: aiomysql.Connection) -> None:
        await conn.commit()

    async def rollback(self, conn: aiomysql.Connection) -> None:
        await conn.rollback()


async def connect(
    dsn: str | None = None,
    *,
    custom_credentials_provider: object | None = None,
    policy: Policy | None = None,
    **kwargs: object,
) -> aiomysql.Connection:
    """Open an aiomysql connection, signing an RDS IAM token when the endpoint needs one.

    The arguments are those of :func:`warmdb.pymysql.connect`, with any argument of
    :func:`aiomysql.connect` instead of PyMySQL's. A ``password`` callable may return an
    awaitable.

    :returns: aiomysql's connection (a :class:`TLSRequiredConnection`).
    :raises ConfigurationError: bad, unknown or contradictory arguments, or TLS switched off
        while a token is sent.
    :raises CredentialsError: no AWS credentials to sign with, or the password callable failed.
    :raises ConnectError: the connection failed, after the policy's retries
        (:class:`AuthenticationError` for error 1045); the driver's exception is the cause.
    """
    conn: aiomysql.Connection = await open_connection_async(
        AiomysqlAdapter().plan(dsn, kwargs, custom_credentials_provider, policy, reuse=True)
    )
    return conn


def warm(
    dsn: str | None = None,
    *,
    custom_credentials_provider: object | None = None,
    policy: Policy | None = None,
    **kwargs: object,
) -> AsyncKeeper[aiomysql.Connection]:
    """Return an :class:`~warmdb.warm.AsyncKeeper`: one connection kept across warm starts.

    Nothing connects until the first ``keeper.connection()``. The arguments are those of
    :func:`connect`; the endpoint is resolved now, so a bad argument fails at import time.
    """
    return AsyncKeeper(AiomysqlAdapter().plan(dsn, kwargs, custom_credentials_provider, policy))


def pool(dsn: str | None = None, **kwargs: Any) -> AsyncConnectionPool:
    """Return an asyncio pool of aiomysql connections
    (:class:`warmdb.pools.async_queue.AsyncConnectionPool`), with the checks of ``warm()`` at
    every checkout and a fresh token for every connection it opens.

    Open it with ``pool = await warmdb.aiomysql.pool(...)`` or ``async with
    warmdb.aiomysql.pool(...) as pool:``, then ``async with pool.connection() as conn:``.
    The arguments are those of :func:`warmdb.pymysql.pool` but ``open``; connections beyond
    ``min_size`` are closed when they come back and nobody waits.

    :raises ConfigurationError: bad arguments.
    """
    return async_queue_pool(AiomysqlAdapter(), dsn, kwargs)
