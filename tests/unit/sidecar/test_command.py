"""``warmdb sidecar``'s options as they reach the Sidecar (nothing is started), usage errors."""

from __future__ import annotations

import argparse

import pytest

from warmdb.cli import main
from warmdb.errors import ConfigurationError
from warmdb.sidecar import command
from warmdb.sidecar.extension import ExtensionsClient, registration_events


def build(monkeypatch: pytest.MonkeyPatch, *argv: str) -> dict[str, object]:
    """The keyword arguments ``warmdb sidecar ARGV`` gives the Sidecar."""
    captured: dict[str, object] = {}
    monkeypatch.setattr("warmdb.sidecar.supervisor.Sidecar", lambda **kw: captured.update(kw))
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    command.build(parser.parse_args(argv))
    return captured


def test_defaults(monkeypatch):
    options = build(monkeypatch, "--host", "abc.dsql.us-east-1.on.aws")
    assert options["host"] == "abc.dsql.us-east-1.on.aws"
    assert options["listen_host"] == "127.0.0.1"
    assert options["listen_port"] == 6432
    assert options["pool_size"] == 20
    assert options["client_user"] == "warmdb"
    assert options["settings"] == {}
    assert options["state_path"] is None
    assert options["time_scale"] == 1.0
    assert options["shutdown_timeout"] == 1.5
    assert options["port"] is None


def test_options(monkeypatch):
    options = build(
        monkeypatch,
        "--host",
        "db.abc.us-east-1.rds.amazonaws.com",
        "--auth",
        "rds",
        "--user",
        "app",
        "--listen",
        "[::1]:7000",
        "--pool-size",
        "5",
        "--set",
        "server_lifetime=1200",
        "--set",
        "log_connections=",
        "--state-file",
        "/tmp/s/state.json",
    )
    assert options["auth"] == "rds"
    assert options["user"] == "app"
    assert (options["listen_host"], options["listen_port"]) == ("::1", 7000)
    assert options["pool_size"] == 5
    assert options["settings"] == {"server_lifetime": "1200", "log_connections": None}
    assert options["state_path"] == "/tmp/s/state.json"


def test_environment_configures_the_launcher(monkeypatch):
    monkeypatch.setenv("WARMDB_SIDECAR_HOST", "abc.dsql.us-east-1.on.aws")
    monkeypatch.setenv("WARMDB_SIDECAR_POOL_SIZE", "7")
    monkeypatch.setenv("WARMDB_SIDECAR_LISTEN", "127.0.0.1:5432")
    monkeypatch.setenv("WARMDB_SIDECAR", "/tmp/w/state.json")
    options = build(monkeypatch)
    assert options["host"] == "abc.dsql.us-east-1.on.aws"
    assert options["pool_size"] == 7
    assert options["listen_port"] == 5432
    assert options["state_path"] == "/tmp/w/state.json"
    # An option on the command line wins over the environment.
    assert build(monkeypatch, "--pool-size", "9")["pool_size"] == 9


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "--host is required"),
        (["--host", "h", "--listen", "6432"], "HOST:PORT"),
        (["--host", "h", "--set", "novalue"], "NAME=VALUE"),
    ],
)
def test_bad_options(monkeypatch, argv, message):
    with pytest.raises(ConfigurationError, match=message):
        build(monkeypatch, *argv)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sidecar"], "--host is required"),
        (["sidecar", "status"], "status needs --state-file or WARMDB_SIDECAR"),
        (["sidecar", "--host", "localhost"], "does not use IAM authentication"),
        (["sidecar", "--host", "a.dsql.us-east-1.on.aws", "--sslmode", "require"], "SNI"),
        (["sidecar", "--host", "a.dsql.us-east-1.on.aws", "--pool-size", "0"], "pool_size"),
        (["sidecar", "--host", "a.dsql.us-east-1.on.aws", "--client-user", "admin"], "differ"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("warmdb sidecar: error: ")
    assert message in err


def test_status_of_a_missing_sidecar_is_one_line(capsys, tmp_path):
    assert main(["sidecar", "status", "--state-file", str(tmp_path / "absent.json")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "does not exist" in err


def test_registration_events():
    assert registration_events({}) == ["INVOKE", "SHUTDOWN"]
    assert registration_events({"AWS_LAMBDA_INITIALIZATION_TYPE": "lambda-managed-instances"}) == [
        "SHUTDOWN"
    ]
    assert registration_events({"AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand"}) == [
        "INVOKE",
        "SHUTDOWN",
    ]


@pytest.mark.parametrize(("address", "message"), [("", "not set"), ("nohostport", "host:port")])
def test_extensions_client_needs_the_runtime_api(address, message):
    with pytest.raises(ConfigurationError, match=message):
        ExtensionsClient(address, "warmdb-sidecar")
