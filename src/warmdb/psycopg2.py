"""warmdb for psycopg2: ``connect()`` with IAM tokens, returning psycopg2's own connection.

::

    import warmdb.psycopg2 as db

    conn = db.connect(host="abc123.dsql.us-east-1.on.aws", user="admin")

    keeper = db.warm(host="abc123.dsql.us-east-1.on.aws")   # module level: connects lazily
    with keeper.connection() as conn:                        # reused across invocations
        ...

    pool = db.pool(host="abc123.dsql.us-east-1.on.aws", max_size=4)   # thread-safe
    with pool.connection() as conn:                          # psycopg2's own connection
        ...

The arguments are those of aurora-dsql-python-connector's ``aurora_dsql_psycopg2.connect``
(``dsn``, ``host``, ``user``, ``dbname``/``database``, ``port``, ``region``, ``profile``,
``token_duration_secs``, ``custom_credentials_provider``) plus ``auth``, ``policy`` and every
argument of
:func:`psycopg2.connect`, passed through unchanged.
"""

from __future__ import annotations

import psycopg2
import psycopg2.extensions

from warmdb._connect import ConnectPlan, open_connection
from warmdb._postgres import LIBPQ_KEYS, classify_postgres, dsql_engine_defaults, libpq_params
from warmdb.drivers import SyncAdapter
from warmdb.pools import pool_class_on_demand, queue_pool
from warmdb.warm import Keeper

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from warmdb.drivers import ErrorVerdict
    from warmdb.policy import Policy
    from warmdb.pools.queue import ConnectionPool

__all__ = ["ConnectionPool", "Psycopg2Adapter", "connect", "pool", "warm"]


class Psycopg2Adapter(SyncAdapter):
    """What warmdb knows about psycopg2 (see :mod:`warmdb.drivers`).

    :param connection_factory: passed to :func:`psycopg2.connect`.
    :param cursor_factory: passed to :func:`psycopg2.connect`.
    """

    name = "psycopg2"
    family = "postgresql"
    driver_keys = LIBPQ_KEYS | {"async", "async_"}
    open_keys = frozenset({"connection_factory", "cursor_factory"})
    connect_errors = (psycopg2.Error,)

    def engine_defaults(self, plan: ConnectPlan) -> dict[str, Any]:
        return dsql_engine_defaults(plan)

    def connect_params(self, plan: ConnectPlan, password: str | None) -> dict[str, Any]:
        params = libpq_params(plan, password, psycopg2.extensions.libpq_version())
        params.update(self.options)
        return params

    def connect_raw(self, params: dict[str, Any]) -> psycopg2.extensions.connection:
        return psycopg2.connect(**params)

    def classify(self, exc: BaseException) -> ErrorVerdict:
        code = getattr(exc, "pgcode", None)
        # An OperationalError without a SQLSTATE did not come from the server: the socket
        # failed. (Server errors such as serialization failures carry one and leave the
        # connection usable.)
        broken = isinstance(exc, psycopg2.OperationalError) and code is None
        return classify_postgres(exc, code if isinstance(code, str) else None, broken=broken)

    def is_closed(self, conn: psycopg2.extensions.connection) -> bool:
        return conn.closed != 0

    def fileno(self, conn: psycopg2.extensions.connection) -> int:
        return conn.fileno()

    def in_transaction(self, conn: psycopg2.extensions.connection) -> bool:
        return conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE

    def ping(self, conn: psycopg2.extensions.connection) -> None:
        # In autocommit mode the ping is one round trip and opens no transaction.
        autocommit = conn.autocommit
        conn.autocommit = True
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
        finally:
            if not conn.closed:
                conn.autocommit = autocommit

    def reset(self, conn: psycopg2.extensions.connection) -> None:
        if conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            conn.rollback()

    def close(self, conn: psycopg2.extensions.connection) -> None:
        # try/except rather than contextlib.suppress: contextlib is not imported otherwise,
        # and its import costs a cold start about 0.6 ms.
        try:  # noqa: SIM105
            conn.close()
        except psycopg2.Error:
            pass

    def execute(
        self, conn: psycopg2.extensions.connection, sql: str, params: Any = None
    ) -> list[tuple[Any, ...]]:
        with conn.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description is not None else []

    def begin(self, conn: psycopg2.extensions.connection) -> None:
        # Outside autocommit psycopg2 opens the transaction at the first statement itself.
        if conn.autocommit:
            with conn.cursor() as cursor:
                cursor.execute("BEGIN")

    def commit(self, conn: psycopg2.extensions.connection) -> None:
        if conn.autocommit:
            with conn.cursor() as cursor:
                cursor.execute("COMMIT")
        else:
            conn.commit()

    def rollback(self, conn: psycopg2.extensions.connection) -> None:
        if conn.autocommit:
            if self.in_transaction(conn):
                with conn.cursor() as cursor:
                    cursor.execute("ROLLBACK")
        else:
            conn.rollback()


def _adapter(connection_factory: object | None, cursor_factory: object | None) -> Psycopg2Adapter:
    options = {"connection_factory": connection_factory, "cursor_factory": cursor_factory}
    return Psycopg2Adapter(**{k: v for k, v in options.items() if v is not None})


def connect(
    dsn: str | None = None,
    *,
    connection_factory: object | None = None,
    cursor_factory: object | None = None,
    custom_credentials_provider: object | None = None,
    policy: Policy | None = None,
    **kwargs: object,
) -> psycopg2.extensions.connection:
    """Open a psycopg2 connection, signing an IAM token when the endpoint needs one.

    :param dsn: a ``postgresql://`` URL, a libpq ``key=value`` string, a host name or a DSQL
        cluster id. Keyword arguments win over DSN fields.
    :param connection_factory: passed to :func:`psycopg2.connect`.
    :param cursor_factory: passed to :func:`psycopg2.connect`.
    :param custom_credentials_provider: a botocore ``CredentialProvider`` tried before
        botocore's chain.
    :param policy: connect timeout and retry budget (:class:`warmdb.policy.Policy`); the
        preset for the endpoint (:data:`~warmdb.policy.DSQL`, :data:`~warmdb.policy.RDS`...)
        by default.
    :param kwargs: ``host``, ``port`` (default 5432), ``user`` (``admin`` for DSQL),
        ``dbname`` or ``database`` (``postgres`` for DSQL), ``region``, ``profile``,
        ``token_duration_secs`` (default 900), ``auth`` (``"dsql"``, ``"rds"`` or
        ``"password"``; guessed from the host), ``password`` (a string or a callable, password
        mode only), ``sslmode`` (``require`` by default with a token), ``sslrootcert``, and any
        other :func:`psycopg2.connect` argument (libpq's keywords).
    :returns: psycopg2's own connection object.
    :raises ConfigurationError: bad, unknown or contradictory arguments.
    :raises CredentialsError: no AWS credentials to sign with, or the password callable failed.
    :raises ConnectError: the connection failed, after the policy's retries
        (:class:`AuthenticationError` for SQLSTATE class 28); the driver's exception is the
        cause.
    """
    adapter = _adapter(connection_factory, cursor_factory)
    plan = adapter.plan(dsn, kwargs, custom_credentials_provider, policy, reuse=True)
    conn: psycopg2.extensions.connection = open_connection(plan)
    return conn


def warm(
    dsn: str | None = None,
    *,
    connection_factory: object | None = None,
    cursor_factory: object | None = None,
    custom_credentials_provider: object | None = None,
    policy: Policy | None = None,
    **kwargs: object,
) -> Keeper[psycopg2.extensions.connection]:
    """Return a :class:`~warmdb.warm.Keeper`: one connection kept across warm starts.

    Nothing connects until the first ``keeper.connection()``. The arguments are those of
    :func:`connect`; the endpoint is resolved now, so a bad argument fails at import time.
    """
    return Keeper(
        _adapter(connection_factory, cursor_factory).plan(
            dsn, kwargs, custom_credentials_provider, policy
        )
    )


def pool(
    dsn: str | None = None,
    *,
    min_size: int = 1,
    max_size: int = 10,
    timeout: float = 30.0,
    open: bool = True,
    retry: Any = None,
    connection_factory: object | None = None,
    cursor_factory: object | None = None,
    custom_credentials_provider: object | None = None,
    policy: Policy | None = None,
    **kwargs: object,
) -> ConnectionPool:
    """Return a thread-safe pool of psycopg2 connections
    (:class:`warmdb.pools.queue.ConnectionPool`).

    Built on SQLAlchemy's ``QueuePool`` (``pip install 'warmdb[sqlalchemy]'``), with the
    checks of ``warm()`` at every checkout: connections older than the policy's lifetime
    (with jitter) or idle longer than ``max_idle`` are replaced, a connection whose socket
    became readable while idle (closed by the server) is replaced without a round trip, one
    idle longer than ``ping_after_idle`` is pinged first. Replacement is transparent; a
    transaction left open is rolled back when the connection comes back. Connections are
    reused most-recent first.

    :param dsn: as for :func:`connect`.
    :param min_size: connections opened when the pool opens and kept (default 1).
    :param max_size: connections open at once, at most; those beyond *min_size* are closed
        when returned.
    :param timeout: seconds a checkout waits for a free connection when *max_size* are in
        use, 30 by default.
    :param open: open the *min_size* connections now (default); ``False`` leaves it to
        ``pool.open()`` or the first checkout.
    :param retry: the OCC retry budget of ``pool.run_transaction()``
        (:class:`warmdb.OCCRetryConfig`...; warmdb's default when ``None``).
    :param connection_factory: as for :func:`connect`.
    :param cursor_factory: as for :func:`connect`.
    :param custom_credentials_provider: as for :func:`connect`.
    :param policy: lifetime, idle and ping checks, connect timeout and retries; the preset for
        the endpoint by default.
    :param kwargs: the other arguments of :func:`connect`.
    :raises ConfigurationError: bad arguments, or SQLAlchemy is not installed.
    """
    arguments = dict(
        kwargs,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        open=open,
        retry=retry,
        policy=policy,
        custom_credentials_provider=custom_credentials_provider,
    )
    return queue_pool(_adapter(connection_factory, cursor_factory), dsn, arguments)


# ConnectionPool, the class pool() returns, is imported on demand: it needs SQLAlchemy.
__getattr__ = pool_class_on_demand(__name__)
