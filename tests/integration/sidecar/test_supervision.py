"""Supervision: PgBouncer restarted when it dies; nothing left behind when the sidecar goes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from tests.integration.sidecar.conftest import (
    TOKEN_SCALE,
    client,
    process_gone,
    wait_for,
)
from warmdb.emulator.postgres import free_port
from warmdb.sidecar.state import read_state


def test_pgbouncer_killed_is_restarted_and_clients_recover(sidecar):
    with client(sidecar) as conn:
        conn.execute("SELECT 1")
    first = sidecar.pgbouncer_pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: sidecar.restarts == 1 and sidecar.pgbouncer_pid not in (None, first))
    # A client retrying as an application would: the outage is short.
    deadline = time.monotonic() + 10
    while True:
        try:
            with client(sidecar) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
            break
        except psycopg.OperationalError:
            assert time.monotonic() < deadline, "no recovery within 10 s"
            time.sleep(0.05)
    assert process_gone(first)


def test_stop_leaves_no_process_and_no_secret(sidecar):
    pid = sidecar.pgbouncer_pid
    directory = sidecar.directory
    sidecar.stop()
    assert process_gone(pid)
    assert not directory.exists()  # a temporary directory is removed whole


@pytest.fixture
def open_base():
    """A directory that PgBouncer's unprivileged account may traverse (tmp_path may not)."""
    base = Path(tempfile.mkdtemp(prefix="warmdb-sidecar-test-"))
    base.chmod(0o711)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_fixed_state_path_keeps_the_directory_private(dsql, pgbouncer_binary, open_base):
    from tests.integration.sidecar.conftest import sidecar_for

    state_path = open_base / "sidecar" / "state.json"
    with sidecar_for(dsql, pgbouncer=pgbouncer_binary, state_path=state_path) as sidecar:
        assert (state_path.parent.stat().st_mode & 0o777) == 0o700
        for name in ("state.json", "auth.txt", "client-password", "pgbouncer.ini", "hba.conf"):
            assert ((state_path.parent / name).stat().st_mode & 0o777) == 0o600, name
        assert read_state(state_path) == sidecar.state
    # Stopped: the secrets and the state file are gone; the logs stay.
    assert not state_path.exists()
    assert not (state_path.parent / "auth.txt").exists()
    assert not (state_path.parent / "client-password").exists()


def test_refuses_a_directory_others_can_read(dsql, pgbouncer_binary, open_base):
    from tests.integration.sidecar.conftest import sidecar_for
    from warmdb.errors import ConfigurationError

    shared = open_base / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    with pytest.raises(ConfigurationError, match="readable by others"):
        sidecar_for(dsql, pgbouncer=pgbouncer_binary, state_path=shared / "state.json").start()


def test_the_token_is_not_a_client_credential(sidecar):
    auth = (sidecar.directory / "auth.txt").read_text()
    token = auth.split('"')[3]
    state = sidecar.state
    with pytest.raises(psycopg.OperationalError, match="login rejected"):
        psycopg.connect(
            host=state.host, port=state.port, user="admin", password=token, dbname="postgres"
        ).close()


def start_cli(dsql, pgbouncer_binary, base: Path, *extra: str) -> tuple[subprocess.Popen, dict]:
    """``warmdb sidecar --json`` as its own process, configured by options and environment."""
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": dsql.credentials.access_key,
        "AWS_SECRET_ACCESS_KEY": dsql.credentials.secret_key,
        "AWS_REGION": dsql.region,
        "WARMDB_SIDECAR": str(base / "sidecar" / "state.json"),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "warmdb",
            "sidecar",
            "--host",
            "localhost",
            "--port",
            str(dsql.port),
            "--auth",
            "dsql",
            "--sslrootcert",
            str(dsql.ca_path),
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--pgbouncer",
            pgbouncer_binary,
            "--time-scale",
            str(TOKEN_SCALE),
            "--token-duration",
            "900",
            "--json",
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()
    if not line:
        process.wait(10)
        pytest.fail(f"the sidecar did not start: {process.stderr.read()}")
    return process, json.loads(line)


def test_cli_sigkill_leaves_no_pgbouncer(dsql, pgbouncer_binary, open_base):
    process, info = start_cli(dsql, pgbouncer_binary, open_base)
    try:
        assert info["listen"].startswith("127.0.0.1:")
        assert info["pgbouncer_version"]
        state = read_state(info["state_file"])
        with psycopg.connect(
            host=state.host,
            port=state.port,
            user=state.user,
            password=state.password(),
            dbname=state.dbname,
        ) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert not process_gone(info["pgbouncer_pid"])
        process.kill()
        process.wait(10)
        wait_for(lambda: process_gone(info["pgbouncer_pid"]), timeout=5)
    finally:
        process.kill()
        process.wait()


def test_cli_sigterm_stops_cleanly_and_quickly(dsql, pgbouncer_binary, open_base):
    process, info = start_cli(dsql, pgbouncer_binary, open_base)
    try:
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        assert time.monotonic() - started < 5
        assert process_gone(info["pgbouncer_pid"])
        assert not os.path.exists(info["state_file"])
        stderr = process.stderr.read()
        assert "Traceback" not in stderr
        # The token and the client password never reach the log.
        assert "X-Amz-Signature" not in stderr
    finally:
        process.kill()
        process.wait()


def test_cli_status_table_and_json(dsql, pgbouncer_binary, open_base):
    process, info = start_cli(dsql, pgbouncer_binary, open_base)
    try:
        state = read_state(info["state_file"])
        with psycopg.connect(
            host=state.host,
            port=state.port,
            user=state.user,
            password=state.password(),
            dbname=state.dbname,
        ) as conn:
            conn.execute("SELECT 1")
            env = {**os.environ, "WARMDB_SIDECAR": info["state_file"]}
            out = subprocess.run(
                [sys.executable, "-m", "warmdb", "sidecar", "status", "--json"],
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout
            status = json.loads(out)
            (pool,) = status["pools"]
            assert pool["database"] == "postgres"
            assert pool["clients_active"] >= 1
            assert pool["servers"] >= 1
            assert status["stats"]["postgres"]["queries"] >= 1
            assert 0 <= status["token_age"] <= 900 / TOKEN_SCALE + 1
            table = subprocess.run(
                [sys.executable, "-m", "warmdb", "sidecar", "status"],
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout
            assert "postgres/" in table
            assert "token: age" in table
    finally:
        process.kill()
        process.wait()


@pytest.mark.skipif(os.geteuid() != 0, reason="PgBouncer runs as another account only as root")
def test_refuses_a_directory_pgbouncer_cannot_reach(dsql, pgbouncer_binary, tmp_path):
    from tests.integration.sidecar.conftest import sidecar_for
    from warmdb.errors import ConfigurationError

    # pytest's tmp_path is inside a 0700 directory of root's.
    with pytest.raises(ConfigurationError, match="cannot enter"):
        sidecar_for(dsql, pgbouncer=pgbouncer_binary, state_path=tmp_path / "s" / "x.json").start()
