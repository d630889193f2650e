"""warmdb: fast, safe database connections from serverless Python.

The driver modules are the entry points: :mod:`warmdb.psycopg`, :mod:`warmdb.psycopg2` and
:mod:`warmdb.asyncpg`. This package imports nothing heavy, so importing it costs a cold start
next to nothing. It gives the exceptions, :class:`~warmdb.policy.Policy`,
:func:`~warmdb.governor.limit_connect_rate` and :func:`generate_token`.
"""

from __future__ import annotations

from warmdb.errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    CredentialsError,
    PoolTimeout,
    WarmdbError,
)
from warmdb.governor import limit_connect_rate
from warmdb.policy import Policy

__all__ = [
    "AuthenticationError",
    "ConfigurationError",
    "ConnectError",
    "CredentialsError",
    "Policy",
    "PoolTimeout",
    "WarmdbError",
    "__version__",
    "generate_token",
    "limit_connect_rate",
]

__version__ = "0.1.0"


def generate_token(dsn: str | None = None, **kwargs: object) -> str:
    """Return an IAM token for an endpoint, as a driver module would send it.

    Takes the endpoint arguments of the ``connect()`` functions (``host``, ``region``,
    ``user``, ``port``, ``auth``, ``profile``, ``token_duration_secs``,
    ``custom_credentials_provider``). Tokens are cached and reused while fresh.

    :raises ConfigurationError: the endpoint does not use IAM authentication, or an argument
        is bad.
    :raises CredentialsError: no AWS credentials to sign with.
    """
    from warmdb._connect import ConnectPlan

    provider = kwargs.pop("custom_credentials_provider", None)
    plan = ConnectPlan(dsn, kwargs, custom_credentials_provider=provider)
    if not plan.endpoint.uses_token:
        raise ConfigurationError(
            f"host {plan.endpoint.host!r} does not use IAM authentication: pass auth='dsql' "
            "or auth='rds'"
        )
    token = plan.password()
    assert token is not None  # the token modes always produce one
    return token
