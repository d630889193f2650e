"""`warmdb token`: prints a token botocore would accept; errors are one clear line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import SECRET_KEY
from warmdb.auth import sigv4
from warmdb.cli import main


def test_token_prints_a_verifiable_token(aws_credentials, frozen_clock, capsys):
    assert main(["token", "--host", "abcdefghijklmnopqrstuvwxyz", "--region", "eu-west-1"]) == 0
    token = capsys.readouterr().out.strip()
    parsed = sigv4.parse_token(token)
    assert parsed.netloc == "abcdefghijklmnopqrstuvwxyz.dsql.eu-west-1.on.aws"
    assert parsed.param("Action") == "DbConnectAdmin"
    assert parsed.param("X-Amz-Expires") == "900"
    expected = sigv4.signature(
        host_header=parsed.netloc,
        query=parsed.query,
        secret_key=SECRET_KEY,
        region="eu-west-1",
        service="dsql",
        timestamp=parsed.param("X-Amz-Date"),
    )
    assert parsed.signature == expected


def test_token_options(aws_credentials, frozen_clock, capsys):
    argv = ["token", "--host", "h.dsql.us-east-1.on.aws", "--user", "app", "--expires", "60"]
    assert main(argv) == 0
    parsed = sigv4.parse_token(capsys.readouterr().out.strip())
    assert (parsed.param("Action"), parsed.param("X-Amz-Expires")) == ("DbConnect", "60")
    rds = ["token", "--host", "db.x.us-east-1.rds.amazonaws.com", "--user", "u", "--port", "3306"]
    assert main(rds) == 0
    out = capsys.readouterr().out
    assert out.startswith("db.x.us-east-1.rds.amazonaws.com:3306/?Action=connect&DBUser=u&")


def test_bad_options_are_one_line_usage_errors_naming_flags(aws_credentials, capsys):
    assert main(["token", "--host", "localhost"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("warmdb token: error: host 'localhost' does not use IAM")
    assert "pass --auth dsql or --auth rds" in err
    assert err.count("\n") == 1
    assert main(["token", "--host", "h.dsql.us-east-1.on.aws", "--expires", "0"]) == 2
    assert "--expires must be between 1 and 604800" in capsys.readouterr().err
    assert main(["token", "--host", "h.dsql.us-east-1.on.aws", "--region", "eu"]) == 2
    assert "--region eu is not an AWS region name" in capsys.readouterr().err
    assert main(["token", "--host", "abcdefghijklmnopqrstuvwxyz"]) == 2
    assert "pass --region us-east-1" in capsys.readouterr().err


def test_missing_credentials_is_a_failure_not_a_usage_error(capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "botocore", None)
    monkeypatch.setitem(__import__("sys").modules, "botocore.session", None)
    assert main(["token", "--host", "h.dsql.us-east-1.on.aws"]) == 1
    assert "no AWS credentials" in capsys.readouterr().err


def test_usage_errors_exit_2():
    with pytest.raises(SystemExit) as caught:
        main(["token"])
    assert caught.value.code == 2


def test_python_dash_m(aws_credentials):
    out = subprocess.run(
        [sys.executable, "-m", "warmdb", "token", "--host", "h.dsql.us-east-1.on.aws"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.startswith("h.dsql.us-east-1.on.aws/?Action=DbConnectAdmin&")
