"""``warmdb emulate --engine mysql`` as a process: what it prints works, statistics at exit."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pymysql
import pytest

# The lead wires command.run into ``warmdb emulate --engine mysql``; this runs it the same way.
_MAIN = (
    "import argparse, sys\n"
    "from warmdb.emulator.mysql import command\n"
    "parser = argparse.ArgumentParser()\n"
    "command.add_arguments(parser)\n"
    "sys.exit(command.run(parser.parse_args(sys.argv[1:])))\n"
)


def _start(*argv: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _MAIN, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    process.send_signal(signal.SIGINT)
    try:
        return process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


def test_json_endpoint_then_statistics():
    process = _start("--json", "--idle-client-timeout", "30", "--wait-timeout", "600")
    try:
        info = json.loads(process.stdout.readline())
        assert info["engine"] == "mysql"
        assert info["limits"]["idle_client_timeout"] == 30
        from warmdb.auth.credentials import Credentials
        from warmdb.auth.tokens import TokenSpec, sign_token

        keys = Credentials(info["access_key_id"], info["secret_access_key"])
        spec = TokenSpec(
            kind="rds",
            host=info["hostname"],
            port=info["port"],
            region=info["region"],
            user="admin",
            expires_in=900,
        )
        conn = pymysql.connect(
            host=info["host"],
            port=info["port"],
            user="admin",
            password=sign_token(spec, keys, time.time()),
            ssl={"ca": info["ca_path"]},
        )
        with conn.cursor() as cursor:
            cursor.execute("SELECT @@wait_timeout")
            assert cursor.fetchone() == (600,)
        conn.close()
    finally:
        out, _err = _stop(process)
    assert process.returncode == 0
    stats = json.loads(out.strip().splitlines()[-1])["stats"]
    assert stats["accepted"] == 1
    assert stats["peak"] == 1


def test_banner_try_line_works_and_no_secret_from_the_environment(aws_credentials):
    process = _start("--credentials", "env", env=dict(os.environ))
    try:
        banner = ""
        while "Press Ctrl-C" not in banner:
            line = process.stdout.readline()
            assert line, process.stderr.read()
            banner += line
        assert aws_credentials.secret_key not in banner
        assert "RDS for MySQL-compatible endpoint" in banner
        # The banner's try line, run for real: its token command, then a login with it.
        match = re.search(r'--password="\$\((warmdb token [^)]*)\)"', banner)
        assert match, banner
        argv = match.group(1).split()
        token = subprocess.run(
            [str(Path(sys.executable).parent / "warmdb"), *argv[1:]],
            capture_output=True,
            text=True,
            check=True,
            env=dict(os.environ),
        ).stdout.strip()
        port = int(re.search(r"-P (\d+)", banner).group(1))
        ca = re.search(r"--ssl-ca=(\S+)", banner).group(1)
        conn = pymysql.connect(
            host="127.0.0.1", port=port, user="admin", password=token, ssl={"ca": ca}
        )
        conn.close()
    finally:
        out, err = _stop(process)
    assert process.returncode == 0
    assert "accepted        : 1" in out
    assert aws_credentials.secret_key not in out + err


def test_usage_error_exits_2_in_one_line():
    result = subprocess.run(
        [sys.executable, "-c", _MAIN, "--idle-client-timeout", "-1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "positive" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("argv", [["--tls-cert", "x.pem"]])
def test_configuration_error_is_raised_before_anything_starts(argv):
    import argparse

    from warmdb.emulator.mysql import command
    from warmdb.errors import ConfigurationError

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    with pytest.raises(ConfigurationError):
        command.run(parser.parse_args(argv))
