"""warmdb for psycopg2: ``connect()`` with IAM tokens, returning psycopg2's own connection.

::

    import warmdb.psycopg2 as db

    conn = db.connect(host="abc123.dsql.us-east-1.on.aws", user="admin")

    keeper = db.warm(host="abc123.dsql.us-east-1.on.aws")   # module level: connects lazily
    with keeper.connection() as conn:                        # reused across invocations
        ...

The arguments are those of aurora-dsql-python-connector's ``aurora_dsql_psycopg2.connect``
(``dsn``, ``host``, ``user``, ``dbname``/``database``, ``port``, ``region``, ``profile``,
``token_duration_secs``, ``custom_credentials_provider``) plus ``auth``, ``policy`` and every
argument of
:func:`psycopg2.connect`, passed through unchanged.
"""

from __future__ import annotations

import contextlib

import psycopg2
import psycopg2.extensions

from warmdb._connect import ConnectPlan, libpq_params, open_with_retry, raise_connect_error
from warmdb.warm import Keeper

TYPE_CHECKING = False
if TYPE_CHECKING:
    from warmdb.policy import Policy

__all__ = ["connect", "warm"]

DRIVER = "psycopg2"


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
        other :func:`psycopg2.connect` argument.
    :returns: psycopg2's own connection object.
    :raises ConfigurationError: bad or contradictory arguments.
    :raises CredentialsError: no AWS credentials to sign with.
    :raises ConnectError: the connection failed, after the policy's retries
        (:class:`AuthenticationError` for SQLSTATE class 28); the driver's exception is the
        cause.
    """
    plan = ConnectPlan(
        dsn, kwargs, custom_credentials_provider=custom_credentials_provider, policy=policy
    )
    return connect_plan(plan, connection_factory=connection_factory, cursor_factory=cursor_factory)


def connect_plan(
    plan: ConnectPlan,
    *,
    connection_factory: object | None = None,
    cursor_factory: object | None = None,
) -> psycopg2.extensions.connection:
    """Open one connection for an already resolved *plan*, retrying as its policy says.

    Used by :func:`connect`, keepers and pools.
    """

    def attempt() -> psycopg2.extensions.connection:
        password = plan.password()
        params = libpq_params(plan, password, psycopg2.extensions.libpq_version())
        try:
            return psycopg2.connect(
                connection_factory=connection_factory, cursor_factory=cursor_factory, **params
            )
        except psycopg2.Error as exc:
            raise_connect_error(
                exc, driver=DRIVER, endpoint=plan.endpoint, secrets=plan.secrets_of(password)
            )

    return open_with_retry(plan, attempt, driver=DRIVER)


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
    plan = ConnectPlan(
        dsn, kwargs, custom_credentials_provider=custom_credentials_provider, policy=policy
    )
    ops = _KeeperOps(plan, connection_factory, cursor_factory)
    return Keeper(plan, ops, driver=DRIVER)


class _KeeperOps:
    """How a keeper opens, checks and resets psycopg2 connections."""

    __slots__ = ("_connection_factory", "_cursor_factory", "_plan")

    def __init__(
        self, plan: ConnectPlan, connection_factory: object | None, cursor_factory: object | None
    ) -> None:
        self._plan = plan
        self._connection_factory = connection_factory
        self._cursor_factory = cursor_factory

    def open(self) -> psycopg2.extensions.connection:
        return connect_plan(
            self._plan,
            connection_factory=self._connection_factory,
            cursor_factory=self._cursor_factory,
        )

    @staticmethod
    def is_closed(conn: psycopg2.extensions.connection) -> bool:
        return conn.closed != 0

    @staticmethod
    def fileno(conn: psycopg2.extensions.connection) -> int:
        return conn.fileno()

    @staticmethod
    def ping(conn: psycopg2.extensions.connection) -> None:
        # In autocommit mode the ping is one round trip and opens no transaction.
        autocommit = conn.autocommit
        conn.autocommit = True
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
        finally:
            if not conn.closed:
                conn.autocommit = autocommit

    @staticmethod
    def reset(conn: psycopg2.extensions.connection) -> None:
        if conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            conn.rollback()

    @staticmethod
    def is_broken_by(conn: psycopg2.extensions.connection, exc: BaseException) -> bool:
        # An OperationalError without a SQLSTATE did not come from the server: the socket
        # failed. (Server errors such as serialization failures carry one and leave the
        # connection usable.)
        return isinstance(exc, psycopg2.OperationalError) and exc.pgcode is None

    @staticmethod
    def close(conn: psycopg2.extensions.connection) -> None:
        with contextlib.suppress(psycopg2.Error):
            conn.close()
