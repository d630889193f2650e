"""warmdb: fast, safe database connections from serverless Python.

The driver modules are the entry points: :mod:`warmdb.psycopg`, :mod:`warmdb.psycopg2`,
:mod:`warmdb.asyncpg`, :mod:`warmdb.pymysql`, :mod:`warmdb.mysql_connector` and
:mod:`warmdb.aiomysql`. This package imports nothing heavy, so importing it costs a cold start
next to nothing. It gives the exceptions, :class:`~warmdb.policy.Policy`,
:func:`~warmdb.governor.limit_connect_rate`, :func:`generate_token`, and (imported on first
use) :mod:`warmdb.transactions`' ``run_transaction``, ``write_batches`` (and their async
forms) and ``OCCRetryConfig``; the submodules
:mod:`warmdb.events` and :mod:`warmdb.emulator` are reachable as attributes, imported on
first use.
"""

from __future__ import annotations

from warmdb.errors import (
    AuthenticationError,
    BatchWriteError,
    ConfigurationError,
    ConflictError,
    ConnectError,
    CredentialsError,
    PoolClosed,
    PoolError,
    PoolTimeout,
    TransactionError,
    UsageError,
    WarmdbError,
)
from warmdb.governor import limit_connect_rate
from warmdb.policy import Policy

__all__ = [
    "AuthenticationError",
    "BatchWriteError",
    "ConfigurationError",
    "ConflictError",
    "ConnectError",
    "CredentialsError",
    "OCCRetryConfig",
    "Policy",
    "PoolClosed",
    "PoolError",
    "PoolTimeout",
    "TransactionError",
    "UsageError",
    "WarmdbError",
    "__version__",
    "generate_token",
    "limit_connect_rate",
    "run_transaction",
    "run_transaction_async",
    "write_batches",
    "write_batches_async",
]

__version__ = "0.1.0"

# Submodules reachable as attributes (``warmdb.events.counts()``), and the transaction
# functions re-exported from warmdb.transactions, imported on first use so that
# ``import warmdb`` stays cheap.
_LAZY_SUBMODULES = frozenset({"events", "emulator", "drivers", "transactions"})
_FROM_TRANSACTIONS = frozenset(
    {
        "OCCRetryConfig",
        "run_transaction",
        "run_transaction_async",
        "write_batches",
        "write_batches_async",
    }
)


def __getattr__(name: str) -> object:
    import importlib

    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"warmdb.{name}")
    if name in _FROM_TRANSACTIONS:
        return getattr(importlib.import_module("warmdb.transactions"), name)
    raise AttributeError(f"module 'warmdb' has no attribute {name!r}")


def generate_token(dsn: str | None = None, **kwargs: object) -> str:
    """Return an IAM token for an endpoint, as a driver module would send it.

    Takes the endpoint arguments of the ``connect()`` functions (``host``, ``region``,
    ``user``, ``port``, ``auth``, ``profile``, ``token_duration_secs``,
    ``custom_credentials_provider``), and ``family`` (``"postgresql"``, the default, or
    ``"mysql"``: its default port is 3306). Tokens are cached and reused while fresh.

    :raises ConfigurationError: the endpoint does not use IAM authentication, or an argument
        is bad or unknown (the message names the closest valid one).
    :raises CredentialsError: no AWS credentials to sign with.
    """
    from warmdb._connect import ConnectPlan
    from warmdb.drivers import NoDriver

    provider = kwargs.pop("custom_credentials_provider", None)
    family = kwargs.pop("family", "postgresql")
    if family not in ("postgresql", "mysql"):
        raise ConfigurationError(f"family={family!r} is not 'postgresql' or 'mysql'")
    plan = ConnectPlan(
        dsn, kwargs, adapter=NoDriver(str(family)), custom_credentials_provider=provider
    )
    if not plan.endpoint.uses_token:
        raise ConfigurationError(
            f"host {plan.endpoint.host!r} does not use IAM authentication: pass auth='dsql' "
            "or auth='rds'"
        )
    token = plan.password()
    assert token is not None  # the token modes always produce one
    return token
