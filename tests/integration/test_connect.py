"""One-line connect against a real TLS PostgreSQL: the token really reaches the server.

With the token clock frozen, the token warmdb will send is known in advance; the role's
SCRAM password is set to exactly that token, so a login succeeds only if warmdb signed the
right host, region, action and credentials and sent the token over TLS.
"""

from __future__ import annotations

import psycopg
import pytest
import trustme

import warmdb.psycopg
import warmdb.psycopg2
from tests.conftest import FROZEN_TIME
from tests.integration.drivers import DRIVERS, connect_and_query
from warmdb import AuthenticationError, ConfigurationError, ConnectError
from warmdb.auth.credentials import Credentials
from warmdb.auth.tokens import TokenSpec, sign_token
from warmdb.policy import DSQL

REGION = "us-east-1"
CLUSTER_ID = "abcdefghijklmnopqrstuvwxyz"


def token_for(server, user, credentials, *, host="127.0.0.1", kind="dsql", expires_in=900):
    spec = TokenSpec(
        kind=kind, host=host, port=server.port, region=REGION, user=user, expires_in=expires_in
    )
    return sign_token(spec, credentials, FROZEN_TIME)


@pytest.mark.parametrize("driver", DRIVERS)
def test_dsql_token_logs_in_over_tls(driver, tls_server, make_role, aws_credentials, frozen_clock):
    name = "reader"
    make_role(token_for(tls_server, name, aws_credentials), name)
    user, encrypted = connect_and_query(
        driver, host="127.0.0.1", port=tls_server.port, user=name, auth="dsql", region=REGION
    )
    assert user == name
    assert encrypted is True  # sslmode=require by default whenever a token is sent


@pytest.mark.parametrize("driver", DRIVERS)
def test_admin_is_the_default_user_and_signs_db_connect_admin(
    driver, tls_server, make_role, aws_credentials, frozen_clock
):
    token = token_for(tls_server, "admin", aws_credentials)
    assert "Action=DbConnectAdmin" in token
    make_role(token, "admin")
    dsn = f"postgresql://127.0.0.1:{tls_server.port}/postgres?region={REGION}&auth=dsql"
    assert connect_and_query(driver, dsn) == ("admin", True)


@pytest.mark.parametrize("driver", DRIVERS)
def test_different_token_is_refused_with_clean_error(
    driver, tls_server, make_role, aws_credentials, frozen_clock
):
    other = Credentials(aws_credentials.access_key, "another-secret-key", aws_credentials.token)
    name = make_role(token_for(tls_server, "x", other))
    with pytest.raises(AuthenticationError) as caught:
        connect_and_query(
            driver, host="127.0.0.1", port=tls_server.port, user=name, auth="dsql", region=REGION
        )
    error = caught.value
    assert error.sqlstate == "28P01"
    assert "password authentication failed" in str(error)
    assert error.driver == driver.removesuffix("-async")
    assert error.__cause__ is not None  # the driver's own exception stays reachable


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_cluster_id_expands_and_is_signed(
    driver, tls_server, make_role, aws_credentials, frozen_clock
):
    # libpq connects to hostaddr while host is what TLS and the token name: the DSQL shape.
    full_host = f"{CLUSTER_ID}.dsql.{REGION}.on.aws"
    name = make_role(token_for(tls_server, "u", aws_credentials, host=full_host))
    user, _ = connect_and_query(
        driver,
        host=CLUSTER_ID,
        hostaddr="127.0.0.1",
        port=tls_server.port,
        user=name,
        region=REGION,
    )
    assert user == name


@pytest.mark.parametrize("driver", DRIVERS)
def test_rds_token_logs_in(driver, tls_server, make_role, aws_credentials, frozen_clock):
    name = "rds_user"
    token = token_for(tls_server, name, aws_credentials, kind="rds")
    assert f"127.0.0.1:{tls_server.port}/?Action=connect&DBUser={name}" in token
    make_role(token, name)
    # RDS has no default database: libpq's default (the user name) applies unless one is given.
    dsn = f"postgresql://{name}@127.0.0.1:{tls_server.port}/postgres?auth=rds&region={REGION}"
    user, encrypted = connect_and_query(driver, dsn)
    assert (user, encrypted) == (name, True)


@pytest.mark.parametrize("driver", DRIVERS)
def test_verify_full_checks_the_certificate(
    driver, tls_server, make_role, aws_credentials, frozen_clock, tmp_path
):
    name = "verified"
    make_role(token_for(tls_server, name, aws_credentials, host="localhost"), name)
    common = {
        "host": "localhost",
        "port": tls_server.port,
        "user": name,
        "auth": "dsql",
        "region": REGION,
        "sslmode": "verify-full",
    }
    assert connect_and_query(driver, sslrootcert=str(tls_server.ca_path), **common)[0] == name

    stranger_ca = tmp_path / "stranger.pem"
    trustme.CA().cert_pem.write_to_path(str(stranger_ca))
    with pytest.raises(ConnectError) as caught:
        connect_and_query(driver, sslrootcert=str(stranger_ca), **common)
    assert caught.value.sqlstate is None  # refused by the client before any login
    assert not isinstance(caught.value, AuthenticationError)


@pytest.mark.parametrize("driver", DRIVERS)
def test_token_goes_unencrypted_only_when_tls_is_disabled_explicitly(
    driver, tls_server, make_role, aws_credentials, frozen_clock
):
    name = make_role(token_for(tls_server, "p", aws_credentials))
    common = {"host": "127.0.0.1", "port": tls_server.port, "user": name, "auth": "dsql"}
    with pytest.raises(ConfigurationError, match="unencrypted"):
        connect_and_query(driver, region=REGION, sslmode="prefer", **common)
    # This server rejects plaintext TCP logins: the explicit choice reaches it.
    with pytest.raises(AuthenticationError) as caught:
        connect_and_query(driver, region=REGION, sslmode="disable", **common)
    assert caught.value.sqlstate == "28000"


def password_login(driver, server, user, password):
    return connect_and_query(
        driver,
        host="127.0.0.1",
        port=server.port,
        user=user,
        dbname="postgres",
        password=password,
        sslmode="require",
    )


@pytest.mark.parametrize("driver", DRIVERS)
def test_password_mode_calls_the_password_callable_per_connect(driver, tls_server, make_role):
    name = make_role("s3cret-pw")
    calls = []

    def password():
        calls.append(1)
        return "s3cret-pw"

    for _ in range(2):
        assert password_login(driver, tls_server, name, password) == (name, True)
    assert len(calls) == 2


def test_async_password_callable(tls_server, make_role):
    name = make_role("async-pw")

    async def password():
        return "async-pw"

    for driver in ("psycopg-async", "asyncpg"):
        assert password_login(driver, tls_server, name, password) == (name, True)
    with pytest.raises(ConfigurationError, match="awaitable"):
        warmdb.psycopg2.connect(host="127.0.0.1", port=tls_server.port, password=password)


def test_refused_connection_has_no_sqlstate(aws_credentials):
    from warmdb.emulator.postgres import free_port

    with pytest.raises(ConnectError) as caught:
        warmdb.psycopg.connect(
            host="127.0.0.1",
            port=free_port(),
            auth="dsql",
            region=REGION,
            policy=DSQL.replace(retry_timeout=0),
        )
    assert caught.value.sqlstate is None
    assert caught.value.reason == "refused"


@pytest.fixture(scope="module")
def plain_server():
    """A PostgreSQL without TLS, password logins over TCP."""
    from warmdb.emulator.postgres import EmbeddedPostgres

    postgres = EmbeddedPostgres(
        tcp_host="127.0.0.1",
        hba=["local all all trust", "host all all 127.0.0.1/32 scram-sha-256"],
        settings={"password_encryption": "scram-sha-256"},
    )
    postgres.start()
    try:
        with psycopg.connect(**postgres.libpq_params(), autocommit=True) as admin:
            admin.execute("CREATE ROLE plain LOGIN PASSWORD 'plain-secret'")
        yield postgres
    finally:
        postgres.stop()


@pytest.mark.parametrize("sslmode", ["prefer", "allow"])
@pytest.mark.parametrize("driver", DRIVERS)
def test_prefer_and_allow_connect_to_a_server_without_tls(driver, sslmode, plain_server):
    """Regression: asyncpg forced TLS for sslmode=prefer/allow, where libpq falls back."""
    user, encrypted = connect_and_query(
        driver,
        host="127.0.0.1",
        port=plain_server.port,
        user="plain",
        password="plain-secret",
        dbname="postgres",
        sslmode=sslmode,
    )
    assert (user, encrypted) == ("plain", False)
