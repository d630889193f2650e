"""A real PgBouncer, supervised by the sidecar, in front of the DSQL emulator.

The emulator is named ``localhost`` (its certificate covers it) because PgBouncer sends SNI,
which DSQL and the emulator require, only in ``verify-full`` mode, and verifies the name.
Tokens are signed with the emulator's own credentials, passed to the sidecar directly.

PgBouncer must be installed (Debian: ``apt-get install pgbouncer``; CI installs it): these
tests fail, they do not skip, without it.
"""

from __future__ import annotations

import psycopg
import pytest

from tests.integration.emulator.conftest import emulator as fresh_emulator
from tests.integration.emulator.conftest import wait_for  # noqa: F401 (for the tests)
from warmdb.emulator.postgres import free_port
from warmdb.emulator.service import Emulator
from warmdb.errors import ConfigurationError
from warmdb.sidecar.process import find_pgbouncer
from warmdb.sidecar.supervisor import Sidecar

#: Emulator tokens expire this many times faster; the sidecar refreshes as much faster.
#: A 900-second token lasts 3 s and is replaced every 2 s.
TOKEN_SCALE = 300


@pytest.fixture(scope="session")
def pgbouncer_binary() -> str:
    try:
        return find_pgbouncer()
    except ConfigurationError as exc:
        pytest.fail(f"PgBouncer is required for the sidecar tests: {exc}")


def emulator(**options):
    """A fresh emulator named localhost (about half a second to start)."""
    return fresh_emulator(hostname="localhost", **options)


@pytest.fixture(scope="session")
def dsql():
    """A session emulator whose tokens expire :data:`TOKEN_SCALE` times faster."""
    with emulator(token_time_scale=TOKEN_SCALE) as started:
        yield started


def sidecar_for(dsql: Emulator, **options) -> Sidecar:
    """A sidecar (not started) in front of *dsql*, on a free port, signing with its keys."""
    defaults = {
        "host": "localhost",
        "port": dsql.port,
        "auth": "dsql",
        "region": dsql.region,
        "sslrootcert": str(dsql.ca_path),
        "listen_port": free_port(),
        "credentials": lambda: dsql.credentials,
        "time_scale": TOKEN_SCALE,
        "token_duration": 900,
    }
    return Sidecar(**{**defaults, **options})


@pytest.fixture
def sidecar(dsql, pgbouncer_binary):
    with sidecar_for(dsql, pgbouncer=pgbouncer_binary) as started:
        yield started


def client(sidecar: Sidecar, **kwargs) -> psycopg.Connection:
    """A psycopg connection through *sidecar*, as a client reads it from the state file."""
    state = sidecar.state
    return psycopg.connect(
        host=state.host,
        port=state.port,
        user=state.user,
        password=state.password(),
        dbname=state.dbname,
        connect_timeout=10,
        **kwargs,
    )


def process_gone(pid: int) -> bool:
    """Whether *pid* has exited (a zombie nobody reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return any(line.startswith("State:\tZ") for line in status)
    except FileNotFoundError:
        return True
