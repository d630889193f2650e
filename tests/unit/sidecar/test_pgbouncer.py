"""PgBouncer version facts, the token size check, and the configuration files' text."""

from __future__ import annotations

import pytest

from tests.conftest import ACCESS_KEY, FROZEN_TIME, SECRET_KEY
from warmdb.auth.credentials import Credentials
from warmdb.auth.tokens import TokenSpec, sign_token
from warmdb.errors import ConfigurationError
from warmdb.sidecar.pgbouncer import (
    PgBouncerError,
    capabilities,
    check_password,
    default_settings,
    parse_version,
    render_auth_file,
    render_hba,
    render_ini,
)


def token(session_token_length: int) -> str:
    """A real DSQL admin token signed with a session token of the given length."""
    credentials = Credentials(ACCESS_KEY, SECRET_KEY, "T" * session_token_length or None)
    spec = TokenSpec(
        kind="dsql",
        host="abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws",
        port=5432,
        region="us-east-1",
        user="admin",
        expires_in=900,
    )
    return sign_token(spec, credentials, FROZEN_TIME)


def test_parse_version():
    assert parse_version("PgBouncer 1.18.0\nlibevent 2.1.12-stable\n") == (1, 18, 0)
    assert parse_version("pgbouncer 1.25") == (1, 25, 0)
    with pytest.raises(PgBouncerError):
        parse_version("something else")


@pytest.mark.parametrize(
    ("version", "limit", "prepared", "drops_tls", "sigterm_waits"),
    [
        ((1, 15, 0), 159, False, True, False),
        ((1, 16, 1), 995, False, True, False),
        ((1, 17, 0), 2047, False, True, False),
        ((1, 18, 0), 2047, False, True, False),
        ((1, 21, 0), 2047, True, True, False),
        ((1, 23, 1), 2047, True, True, True),
        ((1, 24, 0), 2047, True, False, True),
        ((1, 25, 2), 2047, True, False, True),
        ((1, 26, 0), 65530, True, False, True),
    ],
)
def test_capabilities(version, limit, prepared, drops_tls, sigterm_waits):
    caps = capabilities(version)
    assert caps.password_limit == limit
    assert caps.prepared_statements is prepared
    assert caps.reload_drops_tls is drops_tls
    assert caps.sigterm_waits is sigterm_waits


def test_a_token_with_session_credentials_fits_1_18_but_not_1_16():
    # Lambda's session tokens make tokens of about 1,100 to 1,900 characters.
    long_token = token(1000)
    assert 996 < len(long_token) < 2047
    check_password(long_token, capabilities((1, 18, 0)))
    with pytest.raises(ConfigurationError, match=r"at most 995 bytes.*1\.17 or newer") as info:
        check_password(long_token, capabilities((1, 16, 0)))
    assert long_token not in str(info.value)
    assert "X-Amz-Signature" not in str(info.value)


def test_a_token_over_2047_bytes_is_refused_by_1_18():
    too_long = token(2000)
    with pytest.raises(ConfigurationError, match=r"is \d+ bytes but PgBouncer 1\.18\.0"):
        check_password(too_long, capabilities((1, 18, 0)))
    check_password(too_long, capabilities((1, 26, 0)))


def test_auth_file_lines():
    text = render_auth_file({"admin": "tok?en=1&x", "warmdb": "pw"})
    assert text == '"admin" "tok?en=1&x"\n"warmdb" "pw"\n'
    with pytest.raises(ConfigurationError):
        render_auth_file({"admin": 'a"b'})
    with pytest.raises(ConfigurationError):
        render_auth_file({'ad"min': "x"})


def test_hba_admits_the_client_user_only():
    lines = render_hba("warmdb").splitlines()
    assert lines == [
        "local all warmdb scram-sha-256",
        "host all warmdb 0.0.0.0/0 scram-sha-256",
        "host all warmdb ::/0 scram-sha-256",
    ]
    with pytest.raises(ConfigurationError):
        render_hba("all")  # would be PgBouncer's keyword, not a user
    with pytest.raises(ConfigurationError):
        render_hba("a b")


def test_ini_forces_the_user_without_a_password():
    text = render_ini(
        dbname="postgres",
        server_host="abc.dsql.us-east-1.on.aws",
        server_port=5432,
        server_dbname="postgres",
        server_user="admin",
        settings={"listen_port": 6432, "log_connections": False, "server_lifetime": 3000.0},
    )
    assert text.splitlines() == [
        "[databases]",
        "postgres = host=abc.dsql.us-east-1.on.aws port=5432 dbname=postgres user=admin",
        "",
        "[pgbouncer]",
        "listen_port = 6432",
        "log_connections = 0",
        "server_lifetime = 3000",
    ]
    assert "password" not in text


@pytest.mark.parametrize(
    "bad",
    [
        {"server_host": "a b"},
        {"server_user": "admin password=x"},
        {"dbname": "x;y"},
        {"settings": {"listen_port": "1\nauth_type = trust"}},
        {"settings": {"Bad Name": 1}},
    ],
)
def test_ini_refuses_injection(bad):
    arguments = {
        "dbname": "postgres",
        "server_host": "h",
        "server_port": 5432,
        "server_dbname": "postgres",
        "server_user": "admin",
        "settings": {},
        **bad,
    }
    with pytest.raises(ConfigurationError):
        render_ini(**arguments)


def test_default_settings_follow_the_version():
    common = {
        "listen_host": "127.0.0.1",
        "listen_port": 6432,
        "directory": "/d",
        "pool_size": 20,
        "client_user": "warmdb",
        "sslmode": "verify-full",
        "ca_file": "/d/ca.pem",
    }
    old = default_settings(capabilities((1, 18, 0)), **common)
    assert "max_prepared_statements" not in old
    assert old["pool_mode"] == "transaction"
    assert old["server_lifetime"] < 3600  # DSQL closes connections at 60 minutes
    assert old["listen_addr"] == "127.0.0.1"
    assert old["server_tls_ca_file"] == "/d/ca.pem"
    assert old["auth_type"] == "hba"
    new = default_settings(capabilities((1, 21, 0)), **common)
    assert new["max_prepared_statements"] > 0


@pytest.mark.parametrize("user", ["ALL", "sameuser", "+admins", "@users"])
def test_hba_refuses_patterns(user):
    with pytest.raises(ConfigurationError, match="would admit other users"):
        render_hba(user)
