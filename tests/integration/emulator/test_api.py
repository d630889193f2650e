"""The Python API beyond the basics: kept data, given TLS files, the pytest plugin's options."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import psycopg
import pytest
import trustme

from warmdb.emulator import Emulator, Limits, serve
from warmdb.emulator.upstream import socket_path as upstream_socket_path

from .conftest import login


@pytest.fixture
def reachable_dir():
    """A directory the server account can reach when tests run as root (pytest's are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="warmdb-test-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_data_dir_keeps_data(reachable_dir):
    data = reachable_dir / "data"
    with serve(data_dir=data) as dsql, psycopg.connect(**dsql.connection_params()) as conn:
        # One DDL per transaction, as DSQL wants.
        conn.execute("create table kept (id int)")
        conn.commit()
        conn.execute("insert into kept values (7)")
        conn.commit()
    with serve(data_dir=data) as dsql, psycopg.connect(**dsql.connection_params()) as conn:
        assert conn.execute("select id from kept").fetchone() == (7,)


def test_given_tls_files(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("db.example.test")
    cert_path, key_path, ca_path = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    ca.cert_pem.write_to_path(str(ca_path))
    with Emulator(hostname="db.example.test", tls_files=(cert_path, key_path)) as dsql:
        assert dsql.ca_path == cert_path
        params = dsql.connection_params()
        params["sslrootcert"] = str(ca_path)
        with psycopg.connect(**params) as conn:
            assert conn.execute("select 1").fetchone() == (1,)


def test_generated_key_is_private():
    with serve() as dsql:
        key = dsql.ca_path.parent / "server.key"
        assert key.stat().st_mode & 0o077 == 0
        workdir = dsql.ca_path.parent.parent
    assert not workdir.exists()


def test_limits_and_time_scale_options():
    with Emulator(limits=Limits(transaction_rows=10), time_scale=5) as dsql:
        assert dsql.limits.transaction_rows == 10
        assert dsql.limits.time_scale == 5
        assert dsql.limits.token_scale == 5
    with Emulator(limits=Limits(time_scale=5), token_time_scale=2) as dsql:
        assert (dsql.limits.time_scale, dsql.limits.token_scale) == (5, 2)


def test_pytest_plugin_fixture_and_options(tmp_path):
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(
            """
            import pytest

            @pytest.fixture(scope="session")
            def dsql_emulator_options():
                return {"region": "ap-south-1", "time_scale": 30, "token_time_scale": 1}

            @pytest.fixture(scope="session")
            def rds_postgres_emulator_options():
                return {"idle_client_timeout": 1800}
            """
        )
    )
    (tmp_path / "test_user_suite.py").write_text(
        textwrap.dedent(
            """
            import psycopg

            def test_connects(dsql_emulator):
                assert dsql_emulator.region == "ap-south-1"
                assert dsql_emulator.limits.time_scale == 30
                assert dsql_emulator.limits.token_scale == 1
                with psycopg.connect(**dsql_emulator.connection_params()) as conn:
                    assert conn.execute("select 1").fetchone() == (1,)
                assert dsql_emulator.stats.accepted == 1

            def test_rds_postgres(rds_postgres_emulator):
                rds = rds_postgres_emulator
                assert rds.engine.name == "rds-postgres"
                assert "Action=connect&DBUser=admin" in rds.token()
                with psycopg.connect(**rds.connection_params()) as conn:
                    assert conn.execute("select 1").fetchone() == (1,)
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_pgserver_wheel_binaries_as_upstream():
    """What a machine without a PostgreSQL server gets: the pgserver wheel's binaries."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the pgserver wheel is not installed")
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    with Emulator(bin_dir=bin_dir) as dsql, psycopg.connect(**dsql.connection_params()) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        assert dsql.postgres_version().startswith("16")


def test_listens_on_127_0_0_1_only_by_default():
    with serve() as dsql:
        assert dsql.host == "127.0.0.1"
        assert login(dsql, dsql.token()) == {}
        # 127.0.0.2 is loopback too: refused, so the socket is bound to 127.0.0.1 alone.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.2", dsql.port), timeout=5)


def test_stop_closes_open_connections():
    dsql = serve()
    conn = psycopg.connect(**dsql.connection_params(), autocommit=True)
    try:
        dsql.stop()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("select 1")
    finally:
        conn.close()
        dsql.stop()


def other_os_user() -> str:
    """An OS account that is neither us nor the account the upstream runs as."""
    import pwd

    from warmdb.emulator.postgres import _server_account  # the account the tests run servers as

    server = _server_account()
    for name in ("nobody", "daemon", "bin"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            if entry.pw_uid not in (os.geteuid(), server and server[0]):
                return name
    pytest.skip("no other OS account to try")


@pytest.mark.skipif(os.geteuid() != 0, reason="switching OS users needs root")
@pytest.mark.skipif(shutil.which("psql") is None, reason="psql not installed")
def test_data_dir_is_private_to_its_os_user(reachable_dir):
    data = reachable_dir / "data"
    with serve(data_dir=data) as dsql:
        pg = dsql.upstream
        socket_file = Path(upstream_socket_path(pg.socket_dir, pg.port))
        for path in (data, pg.socket_dir, pg.data_dir):
            assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
        assert stat.S_IMODE(socket_file.stat().st_mode) & 0o077 == 0
        # Another OS user runs psql against the trusted socket, as the superuser: refused.
        result = subprocess.run(
            [
                "runuser",
                "-u",
                other_os_user(),
                "--",
                "psql",
                "-h",
                str(pg.socket_dir),
                "-p",
                str(pg.port),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-w",
                "-At",
                "-c",
                "select 'in as ' || current_user",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            cwd="/",
        )
        assert result.returncode != 0
        assert "in as" not in result.stdout
        assert "Permission denied" in result.stderr
        # The emulator itself still gets through.
        with psycopg.connect(**dsql.connection_params()) as conn:
            assert conn.execute("select 1").fetchone() == (1,)


def test_existing_data_dir_is_made_private(reachable_dir):
    data = reachable_dir / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    with serve(data_dir=data):
        assert stat.S_IMODE(data.stat().st_mode) == 0o700


def test_listens_on_ipv6_loopback():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.create_server(("::1", 0), family=socket.AF_INET6):
            pass
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with serve(host="::1") as dsql:
        params = {**dsql.connection_params(), "hostaddr": "::1"}
        with psycopg.connect(**params) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
