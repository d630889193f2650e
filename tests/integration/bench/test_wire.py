"""The probe's wire clients against real servers: phases, a refused token, unsupported logins,
no listener. PostgreSQL against the DSQL emulator and the suite's SCRAM server; MySQL against
the RDS MySQL emulator (its MariaDB behind it)."""

from __future__ import annotations

import pytest

from warmdb.bench.wire import PHASES, WireLogin, probe_connect
from warmdb.emulator.service import Emulator
from warmdb.errors import ConnectError


@pytest.fixture(scope="module")
def dsql():
    with Emulator() as started:
        yield started


def login(password, *, user="admin", dbname=None, sslmode="require", sslrootcert=None, **extra):
    return WireLogin(
        user=user,
        dbname=dbname,
        password=password,
        sslmode=sslmode,
        sslrootcert=sslrootcert,
        **extra,
    )


def test_every_phase_is_timed_against_the_emulator(dsql):
    timings = probe_connect(
        host="localhost",
        port=dsql.port,
        login=login(
            dsql.token("admin", host="localhost"),
            dbname="postgres",
            sslmode="verify-full",
            sslrootcert=str(dsql.ca_path),
        ),
        query="SELECT 1",
    )
    assert list(timings.phases) == list(PHASES["postgresql"])
    for name, seconds in timings.phases.items():
        assert seconds is not None, name
        assert seconds > 0, name
    assert timings.tls_version is not None
    assert timings.address == "127.0.0.1"


def test_a_refused_token_is_reported_without_the_token(dsql):
    forged = dsql.token("admin", host="localhost")[:-8] + "00000000"
    with pytest.raises(ConnectError) as refused:
        probe_connect(
            host="localhost",
            port=dsql.port,
            login=login(forged, dbname="postgres"),
            query="SELECT 1",
        )
    text = str(refused.value)
    assert "IAM authentication failed" in text
    assert refused.value.sqlstate == "28000"
    assert "X-Amz" not in text
    assert forged not in text


def test_a_scram_server_is_named_not_crashed_on(tls_server, make_role):
    role = make_role("a-password")
    with pytest.raises(ConnectError, match="asked for SCRAM"):
        probe_connect(
            host=tls_server.host,
            port=tls_server.port,
            login=login(
                "a-password",
                user=role,
                dbname="postgres",
                sslmode="verify-ca",
                sslrootcert=str(tls_server.ca_path),
            ),
            query="SELECT 1",
        )


@pytest.mark.parametrize("family", ["postgresql", "mysql"])
def test_a_closed_port_is_a_tcp_error(family):
    # Nothing listens on port 9 (discard) here: the phase that failed is named.
    with pytest.raises(ConnectError, match=r"TCP: 127\.0\.0\.1:9"):
        probe_connect(
            family=family, host="127.0.0.1", port=9, login=login("never-sent"), query="SELECT 1"
        )


def test_every_mysql_phase_is_timed_against_the_emulator(mysql_emulator):
    token = mysql_emulator.token("admin")
    timings = probe_connect(
        family="mysql",
        host="127.0.0.1",
        port=mysql_emulator.port,
        login=login(
            token,
            sslmode="verify-ca",
            sslrootcert=str(mysql_emulator.ca_path),
            clear_password=True,
        ),
        query="SELECT 1, 'two'",
    )
    assert list(timings.phases) == list(PHASES["mysql"])
    for name, seconds in timings.phases.items():
        assert seconds is not None, name
        assert seconds > 0, name
    assert timings.tls_version is not None
    assert timings.server_version


def test_the_mysql_auth_switch_is_followed(mysql_emulator):
    # Without clear_password the probe answers the greeting's plugin (native); the emulator
    # switches it to mysql_clear_password, as RDS does for an IAM user.
    timings = probe_connect(
        family="mysql",
        host="127.0.0.1",
        port=mysql_emulator.port,
        login=login(mysql_emulator.token("admin"), dbname="mysql"),
        query="SELECT user FROM user LIMIT 3",
    )
    assert timings.phases["authentication"] is not None
    assert timings.phases["first query"] is not None


def test_a_refused_mysql_token_is_reported_without_the_token(mysql_emulator):
    forged = mysql_emulator.token("admin")[:-8] + "00000000"
    with pytest.raises(ConnectError) as refused:
        probe_connect(
            family="mysql",
            host="127.0.0.1",
            port=mysql_emulator.port,
            login=login(forged, clear_password=True),
            query="SELECT 1",
        )
    text = str(refused.value)
    assert "error 1045" in text
    assert forged not in text
    assert "X-Amz" not in text


def test_a_mysql_query_error_names_the_error(mysql_emulator):
    with pytest.raises(ConnectError, match="error 1146"):
        probe_connect(
            family="mysql",
            host="127.0.0.1",
            port=mysql_emulator.port,
            login=login(mysql_emulator.token("admin"), clear_password=True, dbname="mysql"),
            query="SELECT * FROM no_such_table",
        )
