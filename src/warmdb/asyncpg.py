"""warmdb for asyncpg: ``await connect()`` with IAM tokens, returning asyncpg's own connection.

::

    import warmdb.asyncpg as db

    conn = await db.connect(host="abc123.dsql.us-east-1.on.aws", user="admin")

    keeper = db.warm(host="abc123.dsql.us-east-1.on.aws")   # module level: connects lazily
    async with keeper.connection() as conn:                  # reused across invocations
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
import os
import socket
import ssl

import asyncpg

from warmdb._connect import ConnectPlan, open_with_retry_async, raise_connect_error
from warmdb.warm import AsyncKeeper

TYPE_CHECKING = False
if TYPE_CHECKING:
    from warmdb.policy import Policy

__all__ = ["connect", "warm"]

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
    return AsyncKeeper(plan, _KeeperOps(plan), driver=DRIVER, abandon=_abandon)


def _abandon(conn: asyncpg.Connection) -> None:
    # terminate() closes the socket without a round trip: the connection's loop may be gone.
    with contextlib.suppress(Exception):
        conn.terminate()


class _KeeperOps:
    """How a keeper opens, checks and resets asyncpg connections."""

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
