"""warmdb for psycopg 3: ``connect()`` / ``connect_async()`` with IAM tokens.

::

    import warmdb.psycopg as db

    conn = db.connect(host="abc123.dsql.us-east-1.on.aws", user="admin")
    aconn = await db.connect_async(host="abc123.dsql.us-east-1.on.aws")

    keeper = db.warm(host="abc123.dsql.us-east-1.on.aws")   # or warm_async() for asyncio
    with keeper.connection() as conn:                        # reused across invocations
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

from warmdb._connect import (
    ConnectPlan,
    libpq_params,
    open_with_retry,
    open_with_retry_async,
    raise_connect_error,
)
from warmdb.warm import AsyncKeeper, Keeper

TYPE_CHECKING = False
if TYPE_CHECKING:
    from warmdb.policy import Policy

__all__ = ["connect", "connect_async", "warm", "warm_async"]

DRIVER = "psycopg"


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
    return Keeper(plan, _KeeperOps(plan, connection_class), driver=DRIVER)


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
    return AsyncKeeper(plan, _AsyncKeeperOps(plan, connection_class), driver=DRIVER)


def _is_broken_by(conn: psycopg.Connection | psycopg.AsyncConnection, exc: BaseException) -> bool:
    # An OperationalError without a SQLSTATE did not come from the server: the socket failed.
    return conn.broken or (isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None)


def _is_idle(conn: psycopg.Connection | psycopg.AsyncConnection) -> bool:
    return conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


class _KeeperOps:
    """How a keeper opens, checks and resets psycopg connections."""

    __slots__ = ("_connection_class", "_plan")

    def __init__(self, plan: ConnectPlan, connection_class: type[psycopg.Connection]) -> None:
        self._plan = plan
        self._connection_class = connection_class

    def open(self) -> psycopg.Connection:
        return connect_plan(self._plan, connection_class=self._connection_class)

    @staticmethod
    def is_closed(conn: psycopg.Connection) -> bool:
        return conn.closed

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


class _AsyncKeeperOps:
    """How a keeper opens, checks and resets psycopg async connections."""

    __slots__ = ("_connection_class", "_plan")

    def __init__(self, plan: ConnectPlan, connection_class: type[psycopg.AsyncConnection]) -> None:
        self._plan = plan
        self._connection_class = connection_class

    async def open(self) -> psycopg.AsyncConnection:
        return await connect_plan_async(self._plan, connection_class=self._connection_class)

    @staticmethod
    def is_closed(conn: psycopg.AsyncConnection) -> bool:
        return conn.closed

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
