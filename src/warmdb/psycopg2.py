"""warmdb for psycopg2: ``connect()`` with IAM tokens, returning psycopg2's own connection.

::

    import warmdb.psycopg2 as db

    conn = db.connect(host="abc123.dsql.us-east-1.on.aws", user="admin")

The arguments are those of aurora-dsql-python-connector's ``aurora_dsql_psycopg2.connect``
(``dsn``, ``host``, ``user``, ``dbname``/``database``, ``port``, ``region``, ``profile``,
``token_duration_secs``, ``custom_credentials_provider``) plus ``auth`` and every argument of
:func:`psycopg2.connect`, passed through unchanged.
"""

from __future__ import annotations

import psycopg2
import psycopg2.extensions

from warmdb._connect import ConnectPlan, libpq_params, raise_connect_error

__all__ = ["connect"]

DRIVER = "psycopg2"


def connect(
    dsn: str | None = None,
    *,
    connection_factory: object | None = None,
    cursor_factory: object | None = None,
    custom_credentials_provider: object | None = None,
    **kwargs: object,
) -> psycopg2.extensions.connection:
    """Open a psycopg2 connection, signing an IAM token when the endpoint needs one.

    :param dsn: a ``postgresql://`` URL, a libpq ``key=value`` string, a host name or a DSQL
        cluster id. Keyword arguments win over DSN fields.
    :param connection_factory: passed to :func:`psycopg2.connect`.
    :param cursor_factory: passed to :func:`psycopg2.connect`.
    :param custom_credentials_provider: a botocore ``CredentialProvider`` tried before
        botocore's chain.
    :param kwargs: ``host``, ``port`` (default 5432), ``user`` (``admin`` for DSQL),
        ``dbname`` or ``database`` (``postgres`` for DSQL), ``region``, ``profile``,
        ``token_duration_secs`` (default 900), ``auth`` (``"dsql"``, ``"rds"`` or
        ``"password"``; guessed from the host), ``password`` (a string or a callable, password
        mode only), ``sslmode`` (``require`` by default with a token), ``sslrootcert``, and any
        other :func:`psycopg2.connect` argument.
    :returns: psycopg2's own connection object.
    :raises ConfigurationError: bad or contradictory arguments.
    :raises CredentialsError: no AWS credentials to sign with.
    :raises ConnectError: the connection failed (:class:`AuthenticationError` for SQLSTATE
        class 28); the driver's exception is the cause.
    """
    plan = ConnectPlan(dsn, kwargs, custom_credentials_provider=custom_credentials_provider)
    return connect_plan(plan, connection_factory=connection_factory, cursor_factory=cursor_factory)


def connect_plan(
    plan: ConnectPlan,
    *,
    connection_factory: object | None = None,
    cursor_factory: object | None = None,
) -> psycopg2.extensions.connection:
    """Open one connection for an already resolved *plan* (used by pools and keepers)."""
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
