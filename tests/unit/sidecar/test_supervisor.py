"""The Sidecar's arguments: endpoint resolution, TLS mode per token kind, refusals."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

from warmdb.errors import ConfigurationError
from warmdb.sidecar.supervisor import Sidecar, _check_reachable

# Any executable will do: nothing is started here.
FAKE_PGBOUNCER = sys.executable


def sidecar(**options) -> Sidecar:
    return Sidecar(pgbouncer=FAKE_PGBOUNCER, **options)


def test_dsql_defaults_to_verify_full_for_sni():
    endpoint = sidecar(host="abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws").endpoint
    assert endpoint.auth == "dsql"
    assert endpoint.sslmode == "verify-full"
    assert endpoint.user == "admin"
    assert endpoint.dbname == "postgres"
    assert endpoint.region == "us-east-1"


def test_cluster_id_expands():
    endpoint = sidecar(host="abcdefghijklmnopqrstuvwxyz", region="eu-west-1").endpoint
    assert endpoint.host == "abcdefghijklmnopqrstuvwxyz.dsql.eu-west-1.on.aws"


def test_rds_defaults_to_require():
    endpoint = sidecar(host="db.abc.us-east-1.rds.amazonaws.com", user="app", dbname="app").endpoint
    assert endpoint.auth == "rds"
    assert endpoint.sslmode == "require"


def test_pg_variables_and_warmdb_sidecar_are_ignored(monkeypatch):
    # They describe the clients' side; the sidecar must not point at itself.
    monkeypatch.setenv("PGHOST", "elsewhere")
    monkeypatch.setenv("PGUSER", "someone")
    monkeypatch.setenv("WARMDB_SIDECAR", "/tmp/x/state.json")
    endpoint = sidecar(host="abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws").endpoint
    assert endpoint.user == "admin"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"host": "localhost"}, "does not use IAM authentication"),
        ({"host": "a.dsql.us-east-1.on.aws", "sslmode": "require"}, "SNI"),
        ({"host": "db.a.us-east-1.rds.amazonaws.com", "user": "u", "sslmode": "disable"}, "TLS"),
        ({"host": "a.dsql.us-east-1.on.aws", "client_user": "admin"}, "must differ"),
        ({"host": "a.dsql.us-east-1.on.aws", "pool_size": 0}, "pool_size"),
        ({"host": "a.dsql.us-east-1.on.aws", "listen_port": 0}, "listen_port"),
        ({"host": "a.dsql.us-east-1.on.aws", "time_scale": 0}, "time_scale"),
        ({"host": "a.dsql.us-east-1.on.aws", "shutdown_timeout": -1}, "shutdown_timeout"),
        ({"host": "a.dsql.us-east-1.on.aws", "pgbouncer": "/nonexistent"}, "not an executable"),
    ],
)
def test_refusals(options, message):
    options.setdefault("pgbouncer", FAKE_PGBOUNCER)
    with pytest.raises(ConfigurationError, match=message):
        Sidecar(**options)


def test_a_directory_without_search_permission_for_the_account_is_refused():
    base = Path(tempfile.mkdtemp(prefix="warmdb-sidecar-unit-"))  # in /tmp, mode 1777
    try:
        other = (os.geteuid() + 12345, os.getegid() + 12345)
        base.chmod(0o700)
        with pytest.raises(ConfigurationError, match="cannot enter"):
            _check_reachable(base, other)
        base.chmod(0o711)
        _check_reachable(base, other)
    finally:
        base.rmdir()


def test_database_defaults_to_postgres_for_rds_too():
    assert sidecar(host="db.abc.us-east-1.rds.amazonaws.com", user="app").dbname == "postgres"
    assert sidecar(host="db.abc.us-east-1.rds.amazonaws.com", user="a", dbname="x").dbname == "x"
