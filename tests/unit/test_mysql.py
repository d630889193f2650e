"""The MySQL adapters without a server: classification of the drivers' real exceptions, the
TLS rule for tokens, the connect arguments each driver gets, and guards on the drivers'
signatures and private details warmdb relies on."""

from __future__ import annotations

import inspect
import socket
import ssl

import aiomysql
import mysql.connector
import pymysql
import pytest
import trustme
from mysql.connector.connection import MySQLConnection
from mysql.connector.constants import DEFAULT_CONFIGURATION

import warmdb.aiomysql
import warmdb.mysql_connector
import warmdb.pymysql
from warmdb import drivers
from warmdb._connect import ConnectPlan
from warmdb._mysql import classify_mysql, errno_of
from warmdb.drivers import ErrorVerdict
from warmdb.errors import ConfigurationError

ADAPTERS = {
    "pymysql": warmdb.pymysql.PyMySQLAdapter,
    "mysql_connector": warmdb.mysql_connector.MySQLConnectorAdapter,
    "aiomysql": warmdb.aiomysql.AiomysqlAdapter,
}
RDS_HOST = "mydb.abc123.eu-west-1.rds.amazonaws.com"


@pytest.fixture(autouse=True)
def aws_keys(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")


def plan(driver: str, **kwargs) -> ConnectPlan:
    kwargs.setdefault("host", RDS_HOST)
    kwargs.setdefault("user", "iam_user")
    return ConnectPlan(None, kwargs, adapter=ADAPTERS[driver]())


# Classification ----------------------------------------------------------------------------

# Each driver's own exception for one server or client error number.
MAKERS = {
    "pymysql": lambda n, text: pymysql.err.OperationalError(n, text),
    "mysql_connector": lambda n, text: mysql.connector.errors.get_mysql_exception(n, text, None),
}


@pytest.mark.parametrize("driver", sorted(MAKERS))
@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (1045, ErrorVerdict(errno=1045, reason="auth")),
        (1040, ErrorVerdict(errno=1040, reason="too-many-connections")),
        (2003, ErrorVerdict(errno=2003, reason="refused")),
        (2006, ErrorVerdict(errno=2006, reason="reset", broken=True)),
        (2013, ErrorVerdict(errno=2013, reason="reset", broken=True)),
        (4031, ErrorVerdict(errno=4031, broken=True)),
        (1213, ErrorVerdict(errno=1213, conflict="1213")),
        (1205, ErrorVerdict(errno=1205, conflict="1205")),
        (1064, ErrorVerdict(errno=1064)),
        (1049, ErrorVerdict(errno=1049)),
    ],
)
def test_error_numbers_mean_the_same_for_every_driver(driver, number, expected):
    exc = MAKERS[driver](number, "message")
    assert errno_of(exc) == number
    verdict = ADAPTERS[driver]().classify(exc)
    assert verdict.errno == expected.errno
    assert verdict.reason == expected.reason
    assert verdict.conflict == expected.conflict
    assert verdict.broken == expected.broken


def test_pymysql_cant_connect_is_refined_by_the_socket_error():
    refused = pymysql.err.OperationalError(2003, "Can't connect ([Errno 111] refused)")
    refused.original_exception = ConnectionRefusedError(111, "refused")
    assert classify_mysql(refused).reason == "refused"
    timed_out = pymysql.err.OperationalError(2003, "Can't connect (timed out)")
    timed_out.original_exception = TimeoutError("timed out")
    assert classify_mysql(timed_out).reason == "timeout"
    unknown_host = pymysql.err.OperationalError(2003, "Can't connect (Name or service unknown)")
    unknown_host.original_exception = socket.gaierror(-2, "Name or service not known")
    assert classify_mysql(unknown_host).reason is None


def test_aiomysql_cant_connect_for_a_rejected_certificate_is_not_retried():
    wrapped = pymysql.err.OperationalError(2003, "Can't connect to MySQL server on 'db'")
    wrapped.__cause__ = ssl.SSLCertVerificationError(1, "certificate verify failed")
    assert warmdb.aiomysql.AiomysqlAdapter().classify(wrapped).reason is None
    wrapped.__cause__ = ConnectionRefusedError(111, "refused")
    assert warmdb.aiomysql.AiomysqlAdapter().classify(wrapped).reason == "refused"


def test_bare_socket_errors_and_closed_connections_are_broken():
    for adapter in (cls() for cls in ADAPTERS.values()):
        verdict = adapter.classify(ConnectionResetError(104, "reset"))
        assert verdict == ErrorVerdict(reason="reset", broken=True)
    closed = pymysql.err.InterfaceError(0, "")
    assert warmdb.pymysql.PyMySQLAdapter().classify(closed).broken
    assert warmdb.aiomysql.AiomysqlAdapter().classify(closed).broken
    # A server error leaves the connection usable.
    syntax = pymysql.err.ProgrammingError(1064, "syntax")
    assert not warmdb.pymysql.PyMySQLAdapter().classify(syntax).broken


def test_mysql_connector_lost_connection_is_broken():
    lost = mysql.connector.errors.OperationalError(
        msg="Lost connection to MySQL server at '127.0.0.1:3306', system error: 104", errno=2055
    )
    verdict = warmdb.mysql_connector.MySQLConnectorAdapter().classify(lost)
    assert verdict == ErrorVerdict(errno=2055, reason="reset", broken=True)


# TLS with a token ---------------------------------------------------------------------------


@pytest.mark.parametrize("driver", sorted(ADAPTERS))
def test_a_token_is_never_sent_without_tls(driver):
    module = {"pymysql": warmdb.pymysql, "mysql_connector": warmdb.mysql_connector}.get(
        driver, warmdb.aiomysql
    )
    with pytest.raises(ConfigurationError, match="clear text"):
        module.warm(host=RDS_HOST, user="iam_user", ssl_mode="DISABLED")
    # aiomysql has no ssl_disabled: ssl=None is its "off".
    off = {"ssl": None} if driver == "aiomysql" else {"ssl_disabled": True}
    with pytest.raises(ConfigurationError, match=f"{next(iter(off))}=.* clear text"):
        module.warm(host=RDS_HOST, user="iam_user", **off)


def test_an_empty_ssl_argument_is_refused_with_a_token():
    with pytest.raises(ConfigurationError, match="ssl=\\{\\}"):
        warmdb.pymysql.warm(host=RDS_HOST, user="iam_user", ssl={})


def test_password_mode_may_turn_tls_off():
    params = plan("pymysql", host="db.internal", password="pw", ssl_mode="DISABLED")
    assert params.adapter.connect_params(params, "pw")["ssl_disabled"] is True
    keeper = warmdb.mysql_connector.warm(host="db.internal", password="pw", ssl_mode="disable")
    args = keeper.plan.adapter.connect_params(keeper.plan, "pw")
    assert args["ssl_disabled"] is True
    assert "auth_plugin" not in args


@pytest.mark.parametrize("mode", ["REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY"])
def test_pymysql_and_aiomysql_get_a_context_that_requires_tls(mode, tmp_path):
    ca = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca))
    for driver in ("pymysql", "aiomysql"):
        p = plan(driver, ssl_mode=mode, ssl_ca=str(ca))
        context = p.adapter.connect_params(p, "token")["ssl"]
        assert isinstance(context, ssl.SSLContext)
        assert context.verify_mode == ssl.CERT_REQUIRED  # a CA file is always checked
        assert context.check_hostname == (mode == "VERIFY_IDENTITY")


def test_the_default_with_a_token_is_tls_without_verification():
    p = plan("pymysql")
    params = p.adapter.connect_params(p, "token")
    assert params["ssl"].verify_mode == ssl.CERT_NONE
    assert params["password"] == "token"
    assert params["user"] == "iam_user"
    assert params["port"] == 3306
    assert params["connect_timeout"] == p.policy.connect_timeout


def test_mysql_connector_arguments_for_a_token():
    p = plan("mysql_connector", ssl_mode="verify-full", ssl_ca="/etc/rds/global-bundle.pem")
    params = p.adapter.connect_params(p, "token")
    assert params["auth_plugin"] == "mysql_clear_password"
    assert params["ssl_disabled"] is False
    assert params["ssl_verify_cert"] is True
    assert params["ssl_verify_identity"] is True
    assert params["ssl_ca"] == "/etc/rds/global-bundle.pem"
    assert params["use_pure"] is True
    assert params["connection_timeout"] == 10
    # The system store: mysql-connector loads it whatever the CA file, so none is named.
    p = plan("mysql_connector", ssl_mode="VERIFY_IDENTITY")
    params = p.adapter.connect_params(p, "token")
    assert "ssl_ca" not in params
    assert params["ssl_verify_cert"] is True
    with pytest.raises(ConfigurationError, match="auth_plugin='mysql_native_password'"):
        warmdb.mysql_connector.warm(
            host=RDS_HOST, user="iam_user", auth_plugin="mysql_native_password"
        )


def test_aiomysql_takes_db_and_the_region_comes_from_the_host():
    p = plan("aiomysql", database="app")
    params = p.adapter.connect_params(p, "token")
    assert params["db"] == "app"
    assert "database" not in params
    assert p.endpoint.region == "eu-west-1"
    assert p.endpoint.auth == "rds"


@pytest.mark.parametrize("module", [warmdb.pymysql, warmdb.aiomysql, warmdb.mysql_connector])
def test_db_is_the_database(module):
    assert module.warm(host=RDS_HOST, user="u", db="app").plan.endpoint.dbname == "app"
    with pytest.raises(ConfigurationError, match="disagree"):
        module.warm(host=RDS_HOST, user="u", db="app", database="other")


@pytest.mark.parametrize(
    ("driver", "wrong", "suggestion"),
    [
        ("pymysql", "conect_timeout", "connect_timeout"),
        ("mysql_connector", "conection_timeout", "connection_timeout"),
        ("aiomysql", "autocomit", "autocommit"),
        ("pymysql", "passwd", "password"),
    ],
)
def test_unknown_arguments_name_the_closest(driver, wrong, suggestion):
    with pytest.raises(ConfigurationError, match=f"'{wrong}'.*{suggestion}"):
        plan(driver, **{wrong: 1})


# The registry and guards on the drivers -----------------------------------------------------


def test_registry_finds_the_mysql_adapters():
    for name, cls in ADAPTERS.items():
        entry = drivers.REGISTRY[name]
        assert drivers.adapter_class(name, is_async=cls.is_async) is cls
        assert cls.name == name
        assert cls.family == entry.family == "mysql"
    assert drivers.entry_for_dialect("mysql+pymysql").name == "pymysql"
    assert drivers.entry_for_dialect("mysql+mysqlconnector").name == "mysql_connector"
    assert drivers.entry_for_dialect("mysql+aiomysql").name == "aiomysql"


ENDPOINT = {"host", "port", "user", "password", "database", "db", "passwd", "ssl_ca"}


def test_pymysql_keys_are_its_connect_arguments():
    real = set(inspect.signature(pymysql.connections.Connection.__init__).parameters) - {"self"}
    # Left out on purpose: TLS switches that would replace warmdb's context.
    replaced = {"ssl_cert", "ssl_key", "ssl_key_password", "ssl_verify_cert", "ssl_verify_identity"}
    assert warmdb.pymysql.PyMySQLAdapter.driver_keys == real - ENDPOINT - replaced


def test_aiomysql_keys_are_its_connect_arguments():
    real = set(inspect.signature(aiomysql.Connection.__init__).parameters) - {"self"}
    assert warmdb.aiomysql.AiomysqlAdapter.driver_keys == real - ENDPOINT


def test_mysql_connector_keys_are_its_connect_arguments():
    real = set(DEFAULT_CONFIGURATION)
    left_out = {"password1", "password2", "password3", "dsn"}
    left_out |= {"ssl_verify_cert", "ssl_verify_identity"}
    expected = real - ENDPOINT - left_out
    assert warmdb.mysql_connector.MySQLConnectorAdapter.driver_keys == expected


def test_private_details_warmdb_relies_on_still_exist():
    # PyMySQL: the socket, the forced close.
    assert "_sock" in inspect.getsource(pymysql.connections.Connection.__init__)
    assert callable(pymysql.connections.Connection._force_close)
    # mysql-connector: the network object and its socket, the transaction flag.
    source = inspect.getsource(MySQLConnection.__init__)
    assert "self._socket" in source
    assert callable(MySQLConnection.cmd_ping)
    # aiomysql: the login step the TLS check wraps, and what it reads.
    assert callable(aiomysql.Connection._request_authentication)
    source = inspect.getsource(aiomysql.Connection)
    assert "self._ssl_context" in source
    assert "self.server_capabilities" in source
    assert "self._writer" in source


@pytest.mark.parametrize(
    ("url", "engine_factory"),
    [
        ("mysql+pymysql://", "create_engine"),
        ("mysql+mysqlconnector://", "create_engine"),
        ("mysql+aiomysql://", "create_async_engine"),
    ],
)
def test_engines_refuse_a_token_without_tls_when_created(url, engine_factory):
    import warmdb.sqlalchemy

    factory = getattr(warmdb.sqlalchemy, engine_factory)
    with pytest.raises(ConfigurationError, match="clear text"):
        factory(f"{url}iam_user@{RDS_HOST}/app", ssl_mode="DISABLED")
    # Created without connecting: the dialect is the driver's.
    engine = factory(f"{url}iam_user@{RDS_HOST}/app")
    assert engine.dialect.name == "mysql"
    assert engine.dialect.driver == url.split("+")[1].rstrip(":/")


@pytest.mark.parametrize(
    ("url", "engine_factory"),
    [
        ("mysql+pymysql://", "create_engine"),
        ("mysql+mysqlconnector://", "create_engine"),
        ("mysql+aiomysql://", "create_async_engine"),
    ],
)
def test_engines_take_db_in_connect_args_as_the_database(url, engine_factory):
    import warmdb.sqlalchemy

    factory = getattr(warmdb.sqlalchemy, engine_factory)
    factory(f"{url}iam_user@{RDS_HOST}/", connect_args={"db": "app"})
    with pytest.raises(ConfigurationError, match="disagree"):
        factory(f"{url}iam_user@{RDS_HOST}/", connect_args={"db": "app", "database": "other"})
