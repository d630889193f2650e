"""What differs between the emulated services: one :class:`Engine` per ``--engine`` choice.

The server, token checks and statistics are shared; an engine says which tokens it takes,
which limits it has by default, what it answers when it refuses, and whether DSQL's
transaction rules apply. Adding an engine is adding an entry to :data:`ENGINES` (the MySQL
engine, built on MariaDB, has its place reserved and reports itself unavailable until it is
wired in).

Sources for every value: docs/emulator.md, "Engines".
"""

from __future__ import annotations

import dataclasses
import math
import sys

from warmdb.emulator.limits import Limits, Refusal
from warmdb.errors import ConfigurationError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["ENGINES", "ENGINE_NAMES", "Engine", "get_engine"]


@dataclasses.dataclass(frozen=True)
class Engine:
    """One emulated service. Immutable.

    :ivar name: the ``--engine`` value.
    :ivar description: what the banner calls it.
    :ivar iam_kind: ``"dsql"`` or ``"rds"`` (:class:`~warmdb.emulator.token_check.TokenVerifier`).
    :ivar hostname: the default endpoint host name; ``{region}`` is filled in.
    :ivar limits: the default limits.
    :ivar refusals: refusals that differ from :data:`warmdb.emulator.limits.REFUSALS`.
    :ivar require_sni: refuse TLS clients that send no server name (DSQL does).
    :ivar dsql_transactions: DSQL's transaction rules (limits, OCC, SQL subset, REPEATABLE
        READ) apply; otherwise messages pass through as to a plain PostgreSQL.
    :ivar is_available: whether this build can run it.
    """

    name: str
    description: str
    iam_kind: str
    hostname: str
    limits: Limits
    refusals: Mapping[str, Refusal] = dataclasses.field(default_factory=dict)
    require_sni: bool = False
    dsql_transactions: bool = False
    is_available: bool = True

    def refusal(self, limits: Limits, reason: str) -> Refusal:
        """The refusal for *reason* under *limits*, this engine's wording first."""
        override = self.refusals.get(reason)
        return override if override is not None else limits.refusal(reason)


# RDS has no transaction limits and no connection lifetime: "never", in the units Limits takes.
_UNLIMITED = {
    "connection_lifetime": math.inf,
    "transaction_age": math.inf,
    "transaction_rows": sys.maxsize,
    "transaction_bytes": sys.maxsize,
}

DSQL = Engine(
    name="dsql",
    description="Aurora DSQL-compatible endpoint",
    iam_kind="dsql",
    hostname="local.dsql.{region}.on.aws",
    limits=Limits(),
    refusals={
        # DSQL's troubleshooting page quotes this text for clients that send no SNI.
        "no_sni": Refusal("08004", "unable to accept connection, sni was not received"),
    },
    require_sni=True,
    dsql_transactions=True,
)

RDS_POSTGRES = Engine(
    name="rds-postgres",
    description="RDS PostgreSQL-compatible endpoint (IAM authentication)",
    iam_kind="rds",
    hostname="local.cluster-emulator.{region}.rds.amazonaws.com",
    # RDS throttles new IAM connections at about 200 per second; no documented burst.
    limits=Limits(connection_rate=200.0, connection_burst=200, **_UNLIMITED),  # type: ignore[arg-type]
    refusals={
        # RDS checks IAM tokens through PAM: PostgreSQL's own PAM failure (28P01).
        "auth": Refusal("28P01", 'PAM authentication failed for user "{user}"'),
        # Throttled IAM logins fail authentication too (an assumption: not documented).
        "rate": Refusal("28P01", 'PAM authentication failed for user "{user}"'),
        # PostgreSQL's own refusal: an RDS instance is a PostgreSQL server.
        "max_connections": Refusal("53300", "sorry, too many clients already"),
        "no_tls": Refusal(
            "28000", 'no pg_hba.conf entry for user "{user}", SSL off (IAM needs TLS)'
        ),
    },
)

#: Every engine by ``--engine`` name; the first is the default.
ENGINES = {engine.name: engine for engine in (DSQL, RDS_POSTGRES)}
ENGINE_NAMES = tuple(ENGINES)


def get_engine(name: str) -> Engine:
    """The engine called *name*.

    :raises ConfigurationError: no such engine, or not available in this build.
    """
    engine = ENGINES.get(name)
    if name == "mysql":
        # The MySQL protocol is a server of its own, on MariaDB.
        raise ConfigurationError(
            "engine='mysql' speaks the MySQL protocol: use warmdb.emulator.mysql.serve() "
            "(or warmdb emulate --engine mysql)"
        )
    if engine is None:
        raise ConfigurationError(f"engine={name!r} must be one of {', '.join(ENGINE_NAMES)}")
    if not engine.is_available:
        raise ConfigurationError(f"engine={name!r} is not available in this build")
    return engine
