"""``warmdb emulate --engine mysql``'s options, as they reach the emulator (nothing starts)."""

from __future__ import annotations

import argparse

import pytest

from warmdb.emulator.mysql import command
from warmdb.emulator.mysql.limits import MySQLLimits, access_denied
from warmdb.errors import ConfigurationError


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(argv)


def build(monkeypatch: pytest.MonkeyPatch, *argv: str) -> dict[str, object]:
    """The keyword arguments ``warmdb emulate --engine mysql ARGV`` gives the emulator."""
    captured: dict[str, object] = {}
    monkeypatch.setattr(
        "warmdb.emulator.mysql.service.MySQLEmulator", lambda **kw: captured.update(kw)
    )
    command.build(parse(*argv))
    return captured


def test_defaults_are_rds(monkeypatch):
    options = build(monkeypatch)
    assert options["host"] == "127.0.0.1"
    assert options["port"] == 0
    assert options["region"] == "us-east-1"
    assert options["hostname"] is None
    assert options["limits"] == MySQLLimits()
    assert options["accept"] == []
    assert options["tls_files"] is None
    assert MySQLLimits() == MySQLLimits(
        idle_client_timeout=None, wait_timeout=28_800, iam_connect_rate=200, max_connections=151
    )


def test_every_option_reaches_the_emulator(monkeypatch):
    options = build(
        monkeypatch,
        *("--port", "3307", "--listen", "::1", "--region", "eu-west-1"),
        *("--hostname", "db.test", "--idle-client-timeout", "1800", "--wait-timeout", "60"),
        *("--iam-connect-rate", "20", "--max-connections", "30"),
        *("--tls-cert", "c.pem", "--tls-key", "k.pem"),
    )
    assert (options["host"], options["port"], options["region"]) == ("::1", 3307, "eu-west-1")
    assert options["hostname"] == "db.test"
    assert options["limits"] == MySQLLimits(
        idle_client_timeout=1800, wait_timeout=60, iam_connect_rate=20, max_connections=30
    )
    assert options["tls_files"] == ("c.pem", "k.pem")


def test_environment_keys_are_accepted_too(monkeypatch, aws_credentials):
    options = build(monkeypatch)
    assert options["accept"] == [aws_credentials]
    assert options["credentials"] != aws_credentials
    options = build(monkeypatch, "--credentials", "env")
    assert options["credentials"] == aws_credentials
    assert options["accept"] == []


def test_inconsistent_options(monkeypatch):
    with pytest.raises(ConfigurationError, match="go together"):
        build(monkeypatch, "--tls-cert", "c.pem")
    with pytest.raises(ConfigurationError, match="AWS_ACCESS_KEY_ID"):
        build(monkeypatch, "--credentials", "env")
    with pytest.raises(ConfigurationError, match="max_connections=0"):
        build(monkeypatch, "--max-connections", "0")
    with pytest.raises(ConfigurationError, match="max_connections=9 must be at least 10"):
        build(monkeypatch, "--max-connections", "9")


@pytest.mark.parametrize("argv", [["--idle-client-timeout", "0"], ["--iam-connect-rate", "-1"]])
def test_non_positive_durations_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as info:
        parse(*argv)
    assert info.value.code == 2
    assert "positive" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("idle_client_timeout", 0.0, "greater than 0"),
        ("wait_timeout", 1.5, "whole seconds"),
        ("iam_connect_rate", -1.0, "greater than 0"),
        ("login_timeout", 0.0, "greater than 0"),
    ],
)
def test_limits_validation_names_the_field(field, value, match):
    with pytest.raises(ConfigurationError, match=f"{field}=.*{match}"):
        MySQLLimits(**{field: value})


def test_access_denied_is_mysqls_text():
    assert access_denied("app", "10.0.0.5") == (
        1045,
        "28000",
        "Access denied for user 'app'@'10.0.0.5' (using password: YES)",
    )
    assert access_denied("app", "h", has_password=False)[2].endswith("(using password: NO)")
