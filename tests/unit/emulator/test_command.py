"""``warmdb emulate``'s options, as they reach the emulator (nothing is started)."""

from __future__ import annotations

import argparse

import pytest

from warmdb.emulator import command
from warmdb.emulator.limits import Limits
from warmdb.errors import ConfigurationError


def build(monkeypatch: pytest.MonkeyPatch, *argv: str) -> dict[str, object]:
    """The keyword arguments ``warmdb emulate ARGV`` gives the Emulator."""
    captured: dict[str, object] = {}
    monkeypatch.setattr("warmdb.emulator.service.Emulator", lambda **kw: captured.update(kw))
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    command.build(parser.parse_args(argv))
    return captured


@pytest.fixture(autouse=True)
def no_environment_keys(monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def test_defaults(monkeypatch):
    options = build(monkeypatch)
    assert options["host"] == "127.0.0.1"
    assert options["port"] == 0
    assert options["region"] == "us-east-1"
    assert options["limits"] == Limits()
    assert options["occ_conflict_rate"] == 0
    assert options["data_dir"] is None
    assert options["accept"] == []


def test_every_option_reaches_the_emulator(monkeypatch):
    options = build(
        monkeypatch,
        *("--port", "5433", "--listen", "::1", "--region", "eu-west-1"),
        *("--hostname", "db.test", "--data-dir", "/srv/dsql", "--seed", "7"),
        *("--time-scale", "3600", "--token-time-scale", "1", "--occ-conflict-rate", "0.25"),
        *("--connection-rate", "5", "--connection-burst", "10", "--max-connections", "20"),
        *("--connection-lifetime", "60", "--transaction-age", "30"),
        *("--transaction-rows", "100", "--transaction-bytes", "4096"),
        *("--tls-cert", "c.pem", "--tls-key", "k.pem"),
    )
    assert options["limits"] == Limits(
        connection_rate=5,
        connection_burst=10,
        max_connections=20,
        connection_lifetime=60,
        transaction_age=30,
        transaction_rows=100,
        transaction_bytes=4096,
        time_scale=3600,
        token_time_scale=1,
    )
    assert (options["host"], options["port"]) == ("::1", 5433)
    assert (options["region"], options["hostname"]) == ("eu-west-1", "db.test")
    assert (options["data_dir"], options["seed"]) == ("/srv/dsql", 7)
    assert options["occ_conflict_rate"] == 0.25
    assert options["tls_files"] == ("c.pem", "k.pem")


def test_environment_keys_are_accepted_besides_random_ones(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENT00001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "environment/secret/key/0123456789abcdef")
    random_pair = build(monkeypatch)
    assert random_pair["credentials"].access_key != "AKIAENVIRONMENT00001"
    assert [c.access_key for c in random_pair["accept"]] == ["AKIAENVIRONMENT00001"]
    env_pair = build(monkeypatch, "--credentials", "env")
    assert env_pair["credentials"].access_key == "AKIAENVIRONMENT00001"
    assert env_pair["accept"] == []


def test_tls_cert_needs_its_key(monkeypatch):
    with pytest.raises(ConfigurationError, match="--tls-key"):
        build(monkeypatch, "--tls-cert", "c.pem")


def test_engine_defaults(monkeypatch):
    options = build(monkeypatch)
    assert options["engine"] == "dsql"
    assert options["upstream_connections"] == 1000
    assert options["idle_client_timeout"] is None
    assert options["require_sni"] is None
    assert options["credentials"].token is None


def test_rds_engine_keeps_its_limits_unless_given(monkeypatch):
    options = build(monkeypatch, "--engine", "rds-postgres", "--idle-client-timeout", "1800")
    limits = options["limits"]
    assert (limits.connection_rate, limits.connection_burst) == (200.0, 200)
    assert limits.connection_lifetime == float("inf")
    assert options["idle_client_timeout"] == 1800.0
    given = build(monkeypatch, "--engine", "rds-postgres", "--connection-rate", "50")["limits"]
    assert given.connection_rate == 50.0
    assert given.connection_burst == 200


def test_session_token_issues_temporary_credentials(monkeypatch):
    keys = build(monkeypatch, "--session-token")["credentials"]
    assert keys.access_key.startswith("ASIA")
    assert keys.token


def test_session_token_is_not_for_environment_keys(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENT00001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x" * 40)
    with pytest.raises(ConfigurationError, match="--session-token"):
        build(monkeypatch, "--credentials", "env", "--session-token")


def test_mysql_engine_is_not_a_postgresql_emulator(monkeypatch):
    with pytest.raises(ConfigurationError, match=r"warmdb\.emulator\.mysql"):
        build(monkeypatch, "--engine", "mysql")


def test_mysql_options_are_checked_by_engine():
    import argparse

    from warmdb.emulator.command import _mysql_arguments, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = _mysql_arguments(parser.parse_args(["--engine", "mysql", "--wait-timeout", "5"]))
    assert (args.wait_timeout, args.max_connections, args.iam_connect_rate) == (5, 151, 200.0)
    with pytest.raises(ConfigurationError, match="--time-scale does not apply"):
        _mysql_arguments(parser.parse_args(["--engine", "mysql", "--time-scale", "3"]))
    with pytest.raises(ConfigurationError, match="--no-sni-check does not apply"):
        _mysql_arguments(parser.parse_args(["--engine", "mysql", "--no-sni-check"]))


def test_no_sni_check(monkeypatch):
    assert build(monkeypatch, "--no-sni-check")["require_sni"] is False


def test_postgres_compatible_turns_the_sql_checks_off(monkeypatch):
    assert build(monkeypatch)["limits"].sql_checks
    assert not build(monkeypatch, "--postgres-compatible")["limits"].sql_checks
