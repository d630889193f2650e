"""The probe's wire client against real servers: phases, a refused token, SCRAM, no listener."""

from __future__ import annotations

import pytest

from warmdb.bench.wire import probe_connect
from warmdb.emulator.service import Emulator
from warmdb.errors import ConnectError


@pytest.fixture(scope="module")
def dsql():
    with Emulator() as started:
        yield started


def test_every_phase_is_timed_against_the_emulator(dsql):
    timings = probe_connect(
        host="localhost",
        port=dsql.port,
        user="admin",
        dbname="postgres",
        password=dsql.token("admin", host="localhost"),
        sslmode="verify-full",
        sslrootcert=str(dsql.ca_path),
        query="SELECT 1",
    )
    for phase in (timings.dns, timings.tcp, timings.tls, timings.startup, timings.query):
        assert phase is not None
        assert phase > 0
    assert timings.tls_version is not None
    assert timings.address == "127.0.0.1"


def test_a_refused_token_is_reported_without_the_token(dsql):
    forged = dsql.token("admin", host="localhost")[:-8] + "00000000"
    with pytest.raises(ConnectError) as refused:
        probe_connect(
            host="localhost",
            port=dsql.port,
            user="admin",
            dbname="postgres",
            password=forged,
            sslmode="require",
            sslrootcert=None,
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
            user=role,
            dbname="postgres",
            password="a-password",
            sslmode="verify-ca",
            sslrootcert=str(tls_server.ca_path),
            query="SELECT 1",
        )


def test_a_closed_port_is_a_tcp_error():
    # Nothing listens on port 9 (discard) here: the phase that failed is named.
    with pytest.raises(ConnectError, match=r"TCP: 127\.0\.0\.1:9"):
        probe_connect(
            host="127.0.0.1",
            port=9,
            user="u",
            dbname="d",
            password="never-sent",
            sslmode="require",
            sslrootcert=None,
            query="SELECT 1",
        )
