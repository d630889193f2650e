"""The engines: what each emulated service takes, allows and answers."""

from __future__ import annotations

import math

import pytest

from warmdb.emulator.engines import DSQL, ENGINE_NAMES, ENGINES, RDS_POSTGRES, get_engine
from warmdb.emulator.limits import REFUSALS, Limits
from warmdb.errors import ConfigurationError


def test_dsql_is_the_default_and_keeps_dsqls_rules():
    assert ENGINE_NAMES[0] == "dsql"
    assert DSQL.iam_kind == "dsql"
    assert DSQL.dsql_transactions
    assert DSQL.require_sni
    assert DSQL.limits == Limits()
    # DSQL's troubleshooting page: "unable to accept connection, sni was not received".
    assert DSQL.refusal(Limits(), "no_sni").message == (
        "unable to accept connection, sni was not received"
    )
    assert DSQL.refusal(Limits(), "max_connections") == REFUSALS["max_connections"]


def test_rds_postgres_takes_rds_tokens_and_has_no_transaction_limits():
    assert RDS_POSTGRES.iam_kind == "rds"
    assert not RDS_POSTGRES.dsql_transactions
    assert not RDS_POSTGRES.require_sni
    limits = RDS_POSTGRES.limits
    assert (limits.connection_rate, limits.connection_burst) == (200.0, 200)
    assert math.isinf(limits.connection_lifetime)
    assert math.isinf(limits.transaction_age)
    assert RDS_POSTGRES.refusal(limits, "auth").code == "28P01"
    assert RDS_POSTGRES.refusal(limits, "max_connections").message == (
        "sorry, too many clients already"
    )
    # Not overridden: the shared wording.
    assert RDS_POSTGRES.refusal(limits, "lifetime") == limits.refusal("lifetime")


def test_get_engine():
    assert get_engine("rds-postgres") is RDS_POSTGRES
    with pytest.raises(ConfigurationError, match="must be one of"):
        get_engine("oracle")
    # The MySQL engine is a server of its own (warmdb.emulator.mysql), not a PostgreSQL one.
    assert "mysql" not in ENGINES
    with pytest.raises(ConfigurationError, match=r"warmdb\.emulator\.mysql"):
        get_engine("mysql")
