"""The same failure raises the same error whatever the driver.

Each row is one failure, provoked for real against the DSQL emulator (or before any I/O for
the argument mistakes), through every driver module; the exception class, SQLSTATE and retry
reason must be identical across drivers. The adapters' classification (warmdb.drivers) is what
makes them so: this table is its contract.
"""

from __future__ import annotations

import asyncio
import logging
import time

import psycopg
import pytest

import warmdb
from tests.integration.drivers import DRIVERS, connect_and_query
from tests.integration.emulator.conftest import emulator
from tests.integration.lifecycle import warmdb_kwargs
from warmdb import AuthenticationError, ConfigurationError, ConnectError, CredentialsError
from warmdb.emulator.limits import Limits
from warmdb.policy import DSQL

ONE_ATTEMPT = DSQL.replace(retry_timeout=0)


@pytest.fixture(scope="module")
def two_at_once():
    """An emulator that admits 2 clients at once."""
    with emulator(limits=Limits(max_connections=2)) as dsql:
        yield dsql


@pytest.fixture(scope="module")
def slow_to_admit():
    """An emulator that admits one new connection every 10 s, after a burst of 2."""
    with emulator(limits=Limits(connection_rate=0.1, connection_burst=2)) as dsql:
        yield dsql


@pytest.fixture
def endpoint(dsql_emulator, monkeypatch):
    return warmdb_kwargs(dsql_emulator, monkeypatch)


def failure(driver: str, **kwargs) -> BaseException:
    with pytest.raises(Exception) as caught:  # noqa: PT011 (the class is what is compared)
        connect_and_query(driver, **kwargs)
    return caught.value


def summary(exc: BaseException) -> tuple[type, str | None, str | None]:
    return type(exc), getattr(exc, "sqlstate", None), getattr(exc, "reason", None)


def same_everywhere(outcomes: dict[str, BaseException]) -> tuple[type, str | None, str | None]:
    seen = {driver: summary(exc) for driver, exc in outcomes.items()}
    assert len(set(seen.values())) == 1, seen
    return next(iter(seen.values()))


def test_role_that_does_not_exist(endpoint):
    args = {**endpoint, "user": "ghost", "policy": ONE_ATTEMPT}
    outcomes = {d: failure(d, **args) for d in DRIVERS}
    assert same_everywhere(outcomes) == (AuthenticationError, "28000", "auth")


def test_wrong_token(endpoint, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-emulator-secret-key-0000000000000")
    outcomes = {d: failure(d, **endpoint) for d in DRIVERS}
    assert same_everywhere(outcomes) == (AuthenticationError, "28000", "auth")


def test_wrong_password(endpoint):
    args = {**endpoint, "auth": "password", "password": "not-a-token", "policy": ONE_ATTEMPT}
    outcomes = {d: failure(d, **args) for d in DRIVERS}
    assert same_everywhere(outcomes) == (AuthenticationError, "28000", "auth")


def test_tls_required_but_refused(endpoint):
    """The client turns TLS off knowingly; the server (as DSQL) requires it."""
    args = {**endpoint, "sslmode": "disable", "policy": ONE_ATTEMPT}
    args.pop("sslrootcert")
    outcomes = {d: failure(d, **args) for d in DRIVERS}
    assert same_everywhere(outcomes) == (AuthenticationError, "28000", "auth")


def test_too_many_connections(two_at_once, monkeypatch):
    args = {**warmdb_kwargs(two_at_once, monkeypatch), "policy": ONE_ATTEMPT}
    holders = [psycopg.connect(**two_at_once.connection_params()) for _ in range(2)]
    try:
        outcomes = {d: failure(d, **args) for d in DRIVERS}
    finally:
        for conn in holders:
            conn.close()
    assert same_everywhere(outcomes) == (ConnectError, "53300", "too-many-connections")


def test_rate_exceeded(slow_to_admit, monkeypatch):
    args = {**warmdb_kwargs(slow_to_admit, monkeypatch), "policy": ONE_ATTEMPT}
    for _ in range(2):  # the burst, spent; the next token comes in 10 s
        connect_and_query("psycopg", **args)
    outcomes = {d: failure(d, **args) for d in DRIVERS}
    assert same_everywhere(outcomes) == (ConnectError, "53400", "rate-exceeded")


@pytest.mark.parametrize(
    ("mistake", "named", "suggested"),
    [
        ({"regoin": "us-east-1"}, "regoin", "region"),
        ({"sslmod": "require"}, "sslmod", "sslmode"),
        ({"databse": "postgres"}, "databse", "database"),
    ],
)
@pytest.mark.parametrize("driver", DRIVERS)
def test_misspelled_keyword_names_it_and_the_closest(driver, endpoint, mistake, named, suggested):
    started = time.monotonic()
    with pytest.raises(ConfigurationError) as caught:
        connect_and_query(driver, **endpoint, **mistake)
    assert f"{named!r}" in str(caught.value)
    assert f"did you mean {suggested!r}" in str(caught.value)
    assert time.monotonic() - started < 1.0  # refused before any connect or retry


def test_generate_token_refuses_unknown_keywords():
    with pytest.raises(ConfigurationError, match="did you mean 'region'"):
        warmdb.generate_token(host="abc.dsql.us-east-1.on.aws", regoin="us-east-1")


class Boom(Exception):
    pass


def raising_password():
    raise Boom("the vault said: s3cr3t-value")


@pytest.mark.parametrize(
    ("password", "cause"),
    [(raising_password, Boom), (lambda: 42, None), (lambda: "bad\0password", None)],
)
@pytest.mark.parametrize("driver", DRIVERS)
def test_password_callable_failures_are_credentials_errors(driver, endpoint, password, cause):
    args = {**endpoint, "auth": "password", "password": password}
    with pytest.raises(CredentialsError) as caught:
        connect_and_query(driver, **args)
    assert "s3cr3t" not in str(caught.value)
    if cause is not None:
        assert isinstance(caught.value.__cause__, cause)


@pytest.mark.parametrize("driver", DRIVERS)
def test_credentials_provider_that_raises(driver, endpoint):
    class Provider:
        METHOD = "broken"
        CANONICAL_NAME = "Broken"

        def load(self):
            raise Boom("token=s3cr3t-value")

    with pytest.raises(CredentialsError) as caught:
        connect_and_query(driver, **endpoint, custom_credentials_provider=Provider(), profile=None)
    assert "s3cr3t" not in str(caught.value)
    assert isinstance(caught.value.__cause__, Boom)


@pytest.mark.parametrize(
    ("dsn", "kwargs", "named"),
    [
        (b"postgresql://localhost/postgres", {}, "dsn must be a string"),
        ("postgresql://[::1", {}, "closing"),
        (None, {"host": "localhost", "password": "a\0b", "auth": "password"}, "NUL"),
    ],
)
@pytest.mark.parametrize("driver", DRIVERS)
def test_malformed_input_fails_at_once(driver, dsn, kwargs, named):
    started = time.monotonic()
    with pytest.raises(ConfigurationError, match=named):
        connect_and_query(driver, dsn, **kwargs)
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("driver", DRIVERS)
def test_messages_never_say_as_none(driver, caplog):
    kwargs = {"host": "localhost", "port": 1, "auth": "password", "policy": ONE_ATTEMPT}
    with pytest.raises(ConnectError) as caught:
        connect_and_query(driver, **kwargs)
    assert "None" not in str(caught.value)
    assert caught.value.reason == "refused"


def test_refused_connect_warns_at_its_first_retry(caplog):
    policy = DSQL.replace(retry_timeout=0.3, backoff_initial=0.05, backoff_max=0.05)
    with caplog.at_level(logging.WARNING, logger="warmdb.connect"), pytest.raises(ConnectError):
        warmdb.psycopg.connect(host="localhost", port=1, auth="password", policy=policy)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "localhost:1 refused the connection" in warnings[0]
    assert "is the port right?" in warnings[0]


def test_asyncio_drivers_raise_the_same_for_refused():
    async def both():
        results = []
        for connect in (warmdb.asyncpg.connect, warmdb.psycopg.connect_async):
            try:
                await connect(host="localhost", port=1, auth="password", policy=ONE_ATTEMPT)
            except ConnectError as exc:
                results.append(summary(exc))
        return results

    assert asyncio.run(both()) == [(ConnectError, None, "refused")] * 2
