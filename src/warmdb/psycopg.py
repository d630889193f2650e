"""warmdb for psycopg 3: ``connect()`` / ``connect_async()`` with IAM tokens.

::

    import warmdb.psycopg as db

    conn = db.connect(host="abc123.dsql.us-east-1.on.aws", user="admin")
    aconn = await db.connect_async(host="abc123.dsql.us-east-1.on.aws")

Both return psycopg's own connection objects. The arguments are those of
aurora-dsql-python-connector's ``aurora_dsql_psycopg.connect`` (``conninfo``, ``host``,
``user``, ``dbname``/``database``, ``port``, ``region``, ``profile``, ``token_duration_secs``,
``custom_credentials_provider``) plus ``auth`` and every argument of
:meth:`psycopg.Connection.connect`, passed through unchanged.
"""

from __future__ import annotations

import psycopg

from warmdb._connect import ConnectPlan, libpq_params, raise_connect_error

__all__ = ["connect", "connect_async"]

DRIVER = "psycopg"


def connect(
    conninfo: str = "",
    *,
    connection_class: type[psycopg.Connection] = psycopg.Connection,
    custom_credentials_provider: object | None = None,
    **kwargs: object,
) -> psycopg.Connection:
    """Open a psycopg connection, signing an IAM token when the endpoint needs one.

    :param conninfo: a ``postgresql://`` URL, a libpq ``key=value`` string, a host name or a
        DSQL cluster id. Keyword arguments win over its fields.
    :param connection_class: the class whose ``connect`` is called (a subclass of
        :class:`psycopg.Connection`).
    :param custom_credentials_provider: a botocore ``CredentialProvider`` tried before
        botocore's chain.
    :param kwargs: warmdb's arguments (see :func:`warmdb.psycopg2.connect`) and any argument of
        :meth:`psycopg.Connection.connect` (``autocommit``, ``row_factory``...).
    :returns: psycopg's own connection object.
    :raises ConfigurationError: bad or contradictory arguments.
    :raises CredentialsError: no AWS credentials to sign with.
    :raises ConnectError: the connection failed; the driver's exception is the cause.
    """
    plan = ConnectPlan(conninfo, kwargs, custom_credentials_provider=custom_credentials_provider)
    return connect_plan(plan, connection_class=connection_class)


async def connect_async(
    conninfo: str = "",
    *,
    connection_class: type[psycopg.AsyncConnection] = psycopg.AsyncConnection,
    custom_credentials_provider: object | None = None,
    **kwargs: object,
) -> psycopg.AsyncConnection:
    """Open a psycopg async connection; the arguments are those of :func:`connect`.

    A ``password`` callable may return an awaitable.
    """
    plan = ConnectPlan(conninfo, kwargs, custom_credentials_provider=custom_credentials_provider)
    return await connect_plan_async(plan, connection_class=connection_class)


def connect_plan(
    plan: ConnectPlan, *, connection_class: type[psycopg.Connection] = psycopg.Connection
) -> psycopg.Connection:
    """Open one connection for an already resolved *plan* (used by pools and keepers)."""
    password = plan.password()
    try:
        return connection_class.connect(**libpq_params(plan, password, psycopg.pq.version()))  # type: ignore[arg-type]
    except psycopg.Error as exc:
        raise_connect_error(
            exc, driver=DRIVER, endpoint=plan.endpoint, secrets=plan.secrets_of(password)
        )


async def connect_plan_async(
    plan: ConnectPlan,
    *,
    connection_class: type[psycopg.AsyncConnection] = psycopg.AsyncConnection,
) -> psycopg.AsyncConnection:
    """Open one async connection for an already resolved *plan*."""
    password = await plan.password_async()
    try:
        return await connection_class.connect(**libpq_params(plan, password, psycopg.pq.version()))  # type: ignore[arg-type]
    except psycopg.Error as exc:
        raise_connect_error(
            exc, driver=DRIVER, endpoint=plan.endpoint, secrets=plan.secrets_of(password)
        )
