"""MySQLEmulator's Python face: what a test suite or script gets from it."""

from __future__ import annotations

import json

import pymysql
import pytest

from warmdb.auth.sigv4 import parse_token
from warmdb.emulator.mysql import MySQLEmulator, MySQLLimits, serve
from warmdb.errors import ConfigurationError


def test_describe_is_json_and_names_the_endpoint(mysql_emulator):
    info = json.loads(json.dumps(mysql_emulator.describe()))
    assert info["engine"] == "mysql"
    assert info["port"] == mysql_emulator.port
    assert info["hostname"] == "local.emulator.us-east-1.rds.amazonaws.com"
    assert info["server_version"].startswith("5.5.5-10.")
    assert info["master_user"] == "admin"
    assert info["limits"] == {
        "idle_client_timeout": None,
        "wait_timeout": 28800.0,
        "iam_connect_rate": 200.0,
        "max_connections": 151,
        "login_timeout": 10.0,
    }


def test_token_is_an_rds_token_for_the_endpoint(mysql_emulator):
    token = parse_token(mysql_emulator.token("app"))
    assert token.netloc == f"{mysql_emulator.hostname}:{mysql_emulator.port}"
    assert token.param("Action") == "connect"
    assert token.param("DBUser") == "app"
    assert token.param("X-Amz-Expires") == "900"
    assert "/us-east-1/rds-db/" in token.param("X-Amz-Credential")


def test_connection_params_log_in_with_pymysql(mysql_emulator):
    params = mysql_emulator.connection_params()
    assert params["ssl"] == {"ca": str(mysql_emulator.ca_path)}
    conn = pymysql.connect(**params)
    conn.close()
    assert "password" not in mysql_emulator.connection_params(token=False)


def test_options_override_limits_fields():
    emulator = MySQLEmulator(limits=MySQLLimits(wait_timeout=60), idle_client_timeout=5)
    assert emulator.limits == MySQLLimits(wait_timeout=60, idle_client_timeout=5)


def test_bad_options_fail_before_anything_starts():
    with pytest.raises(ConfigurationError, match="port=70000"):
        MySQLEmulator(port=70000)
    with pytest.raises(ConfigurationError, match="idle_client_timeout=-1"):
        MySQLEmulator(idle_client_timeout=-1)


def test_not_running_is_a_clear_error():
    emulator = MySQLEmulator()
    for name in ("port", "ca_path", "stats", "upstream", "server_version"):
        with pytest.raises(RuntimeError, match="not running"):
            getattr(emulator, name)


def test_serve_returns_a_started_emulator_that_with_stops():
    with serve(region="eu-west-1") as rds:
        assert rds.region == "eu-west-1"
        assert rds.hostname == "local.emulator.eu-west-1.rds.amazonaws.com"
        pymysql.connect(**rds.connection_params()).close()
        assert rds.stats.accepted == 1
    for name in ("port", "ca_path", "stats"):
        with pytest.raises(RuntimeError, match="not running"):
            getattr(rds, name)
