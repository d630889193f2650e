"""Endpoint resolution: DSN forms, cluster ids, regions, precedence, defaults, bad input."""

from __future__ import annotations

import pytest

from warmdb.endpoint import is_cluster_id, parse_dsn, region_from_host, resolve
from warmdb.errors import ConfigurationError

CLUSTER_ID = "abcdefghijklmnopqrstuvwxyz"
DSQL_HOST = f"{CLUSTER_ID}.dsql.us-east-1.on.aws"


def endpoint_of(dsn=None, environ=None, **kwargs):
    return resolve(dsn, kwargs, environ or {})[0]


# -- DSN parsing --------------------------------------------------------------------------------


def test_url_dsn_with_warmdb_and_driver_parameters():
    parsed = parse_dsn(
        "postgresql://app%40x:p%2Fw@db.example.com:6543/my%20db"
        "?region=us-west-2&profile=dev&token_duration_secs=3600&application_name=job"
    )
    assert parsed == {
        "user": "app@x",
        "password": "p/w",
        "host": "db.example.com",
        "port": "6543",
        "dbname": "my db",
        "region": "us-west-2",
        "profile": "dev",
        "token_duration_secs": "3600",
        "application_name": "job",
    }


def test_url_dsn_ipv6_and_postgres_scheme():
    assert parse_dsn("postgres://[::1]:5433/db") == {"host": "::1", "port": "5433", "dbname": "db"}


def test_keyword_value_dsn_matches_libpq():
    import psycopg.conninfo

    text = "host=db.example.com port=5433 dbname='my db' user=a\\'b application_name='x \\' y'"
    assert parse_dsn(text) == psycopg.conninfo.conninfo_to_dict(text)


def test_bare_host_and_cluster_id():
    assert parse_dsn(DSQL_HOST) == {"host": DSQL_HOST}
    assert parse_dsn(CLUSTER_ID) == {"host": CLUSTER_ID}


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        ("mysql://h/db", "scheme"),
        ("postgresql://h1,h2/db", "several hosts"),
        ("host='unterminated", "closing quote"),
        ("host=a =b", "key=value"),
        ("two words", "neither"),
    ],
)
def test_malformed_dsns(dsn, message):
    with pytest.raises(ConfigurationError, match=message):
        parse_dsn(dsn)


def test_dsn_password_never_in_error():
    with pytest.raises(ConfigurationError) as caught:
        resolve("postgresql://u:hunter2@h:notaport/db", {}, {})
    assert "hunter2" not in str(caught.value)


# -- cluster ids and hosts ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (CLUSTER_ID, True),
        ("a1b2c3d4e5f6g7h8i9j0k1l2m3", True),
        ("localhost", False),
        ("127.0.0.1", False),
        ("ABCDEFGHIJKLMNOPQRSTUVWXYZ", False),
        (CLUSTER_ID + "a", False),
        (DSQL_HOST, False),
    ],
)
def test_is_cluster_id(text, expected):
    assert is_cluster_id(text) is expected


def test_cluster_id_expands_with_region():
    endpoint = endpoint_of(host=CLUSTER_ID, region="eu-west-1")
    assert endpoint.host == f"{CLUSTER_ID}.dsql.eu-west-1.on.aws"
    assert (endpoint.auth, endpoint.user, endpoint.dbname, endpoint.port) == (
        "dsql",
        "admin",
        "postgres",
        5432,
    )
    assert endpoint.sslmode == "require"
    assert endpoint.token_duration == 900


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "::1", "db.internal"])
def test_other_hosts_are_used_as_given(host):
    # The official connector turns localhost into localhost.dsql.REGION.on.aws; warmdb doesn't.
    endpoint = endpoint_of(host=host, region="us-east-1", auth="dsql")
    assert endpoint.host == host
    assert endpoint_of(host=host).auth == "password"


@pytest.mark.parametrize(
    ("host", "region"),
    [
        (DSQL_HOST, "us-east-1"),
        ("abc.dsql-gamma.eu-central-1.on.aws", "eu-central-1"),
        ("db.cluster-xyz.ap-southeast-2.rds.amazonaws.com", "ap-southeast-2"),
        ("db.abc.cn-north-1.rds.amazonaws.com.cn", "cn-north-1"),
        ("db.abc.us-gov-west-1.rds.amazonaws.com", "us-gov-west-1"),
        ("localhost", None),
        ("on.aws", None),
    ],
)
def test_region_from_host(host, region):
    assert region_from_host(host) == region


def test_auth_guessed_from_host():
    assert endpoint_of(host=DSQL_HOST).auth == "dsql"
    rds = "db.abc.us-east-1.rds.amazonaws.com"
    assert endpoint_of(host=rds, user="iam").auth == "rds"
    assert endpoint_of(host=rds, user="u", password="pw").auth == "password"


# -- precedence ---------------------------------------------------------------------------------


def test_argument_beats_dsn_beats_environment_beats_default():
    env = {"PGPORT": "1111", "PGUSER": "env_user", "PGDATABASE": "env_db"}
    dsn = f"postgresql://dsn_user@{DSQL_HOST}:2222/dsn_db"
    assert endpoint_of(dsn, env, port=3333, user="arg_user", dbname="arg_db").port == 3333
    from_dsn = endpoint_of(dsn, env)
    assert (from_dsn.port, from_dsn.user, from_dsn.dbname) == (2222, "dsn_user", "dsn_db")
    from_env = endpoint_of(DSQL_HOST, env)
    assert (from_env.port, from_env.user, from_env.dbname) == (1111, "env_user", "env_db")
    default = endpoint_of(DSQL_HOST)
    assert (default.port, default.user, default.dbname) == (5432, "admin", "postgres")


def test_region_precedence():
    env = {"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-west-2"}
    assert endpoint_of(environ=env, host=CLUSTER_ID).region == "eu-west-1"
    assert endpoint_of(environ={"AWS_DEFAULT_REGION": "eu-west-2"}, host=CLUSTER_ID).region == (
        "eu-west-2"
    )
    assert endpoint_of(f"{CLUSTER_ID}", env, region="ap-east-1").region == "ap-east-1"
    dsn = f"postgresql://{CLUSTER_ID}/postgres?region=sa-east-1"
    assert endpoint_of(dsn, env).region == "sa-east-1"
    assert endpoint_of(environ=env, host=DSQL_HOST).region == "us-east-1"


def test_region_from_botocore_profile(tmp_path, monkeypatch):
    config = tmp_path / "config"
    config.write_text("[profile dev]\nregion = ca-central-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    assert endpoint_of(host=CLUSTER_ID, profile="dev").region == "ca-central-1"


def test_driver_arguments_pass_through_and_win_over_dsn():
    dsn = f"postgresql://{DSQL_HOST}/db?application_name=from_dsn&connect_timeout=3"
    _, password, driver_kwargs = resolve(dsn, {"application_name": "from_arg", "x": 1}, {})
    assert password is None
    assert driver_kwargs == {"application_name": "from_arg", "connect_timeout": "3", "x": 1}


def test_password_mode_keeps_the_password():
    _, password, _ = resolve("postgresql://u:pw@localhost/db", {}, {})
    assert password == "pw"
    assert resolve(None, {"host": "h", "password": "arg"}, {})[1] == "arg"


def test_database_and_dbname_are_synonyms():
    assert endpoint_of(host=DSQL_HOST, database="a").dbname == "a"
    assert endpoint_of(host=DSQL_HOST, dbname="a", database="a").dbname == "a"


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "host is required"),
        ({"host": ""}, "host is empty"),
        ({"host": "   "}, "host is empty"),
        ({"host": 5}, "host must be a string"),
        ({"host": DSQL_HOST, "port": 0}, "port must be between 1 and 65535"),
        ({"host": DSQL_HOST, "port": 70000}, "port must be between 1 and 65535"),
        ({"host": DSQL_HOST, "port": "54a"}, "port must be an integer"),
        ({"host": DSQL_HOST, "port": True}, "not a bool"),
        ({"host": DSQL_HOST, "token_duration_secs": 0}, "between 1 and 604800"),
        ({"host": DSQL_HOST, "token_duration_secs": 604_801}, "between 1 and 604800"),
        ({"host": DSQL_HOST, "token_duration_secs": "soon"}, "must be an integer"),
        ({"host": DSQL_HOST, "auth": "kerberos"}, "auth='kerberos' is not one of"),
        ({"host": CLUSTER_ID}, "no AWS region"),
        ({"host": "localhost", "auth": "dsql"}, "no AWS region"),
        ({"host": DSQL_HOST, "region": "us-west-2"}, "contradicts host"),
        ({"host": DSQL_HOST, "region": "mars"}, "not an AWS region"),
        ({"host": DSQL_HOST, "password": "pw"}, "password conflicts with auth='dsql'"),
        ({"host": DSQL_HOST, "sslmode": "prefer"}, "unencrypted"),
        ({"host": DSQL_HOST, "sslmode": "bogus"}, "not one of"),
        ({"host": "h.abc.us-east-1.rds.amazonaws.com", "auth": "rds"}, "user is required"),
        (
            {"host": "h.us-east-1.rds.amazonaws.com", "user": "u", "token_duration_secs": 60},
            "always last 900",
        ),
        ({"host": "/var/run/postgresql", "auth": "dsql", "region": "us-east-1"}, "TCP host"),
        ({"host": DSQL_HOST, "dbname": "a", "database": "b"}, "disagree"),
        ({"host": DSQL_HOST, "user": ""}, "user is empty"),
    ],
)
def test_bad_input_is_a_clear_configuration_error(kwargs, message):
    with pytest.raises(ConfigurationError, match=message) as caught:
        resolve(None, kwargs, {})
    assert isinstance(caught.value, ValueError)


def test_verify_full_defaults_to_the_system_store():
    endpoint = endpoint_of(host=DSQL_HOST, sslmode="verify-full")
    assert endpoint.sslrootcert == "system"
    explicit = endpoint_of(host=DSQL_HOST, sslmode="verify-full", sslrootcert="/ca.pem")
    assert explicit.sslrootcert == "/ca.pem"


def test_endpoint_is_immutable_and_hashable():
    endpoint = endpoint_of(host=DSQL_HOST)
    with pytest.raises(AttributeError):
        endpoint.host = "x"
    assert endpoint == endpoint_of(host=DSQL_HOST)
    assert len({endpoint, endpoint_of(host=DSQL_HOST)}) == 1
    assert DSQL_HOST in repr(endpoint)
