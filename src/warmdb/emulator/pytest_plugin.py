"""pytest fixtures for test suites that talk to Aurora DSQL: a local emulator, started once.

Installed with warmdb (an entry point in ``pytest11``), so a test only asks for it::

    def test_orders(dsql_emulator):
        conn = psycopg.connect(**dsql_emulator.connection_params(user="admin"))

Configure it by overriding ``dsql_emulator_options`` in a ``conftest.py``; it returns the
keyword arguments of :class:`warmdb.emulator.Emulator`::

    @pytest.fixture(scope="session")
    def dsql_emulator_options():
        return {"time_scale": 60, "occ_conflict_rate": 0.1, "seed": 7}

For RDS PostgreSQL (``rds-db`` tokens, no DSQL transaction rules), ask for
``rds_postgres_emulator`` instead, configured by ``rds_postgres_emulator_options``; e.g.
``{"idle_client_timeout": 1800, "time_scale": 1800}`` drops pooled connections idle one
second, as RDS Proxy does after 30 minutes.

For RDS MySQL (IAM tokens over TLS, on an embedded MariaDB), ask for ``mysql_emulator``,
configured by ``mysql_emulator_options`` (the arguments of
:class:`warmdb.emulator.mysql.MySQLEmulator`, e.g. ``{"idle_client_timeout": 2}``).

Nothing is imported or started unless a test uses a fixture.
"""

from __future__ import annotations

from typing import Any

import pytest

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

    from warmdb.emulator.mysql.service import MySQLEmulator
    from warmdb.emulator.service import Emulator

__all__ = [
    "dsql_emulator",
    "dsql_emulator_options",
    "mysql_emulator",
    "mysql_emulator_options",
    "rds_postgres_emulator",
    "rds_postgres_emulator_options",
]


@pytest.fixture(scope="session")
def dsql_emulator_options() -> dict[str, Any]:
    """Keyword arguments for the session's emulator; DSQL's defaults unless overridden."""
    return {}


@pytest.fixture(scope="session")
def dsql_emulator(dsql_emulator_options: dict[str, Any]) -> Iterator[Emulator]:
    """A running DSQL emulator, shared by the whole test session.

    It gives ``host``, ``port``, ``region``, ``hostname``, ``ca_path``, ``credentials``,
    live ``stats``, ``token(user)`` and ``connection_params(user)``.
    """
    from warmdb.emulator.service import Emulator

    with Emulator(**dsql_emulator_options) as emulator:
        yield emulator


@pytest.fixture(scope="session")
def rds_postgres_emulator_options() -> dict[str, Any]:
    """Keyword arguments for the session's RDS PostgreSQL emulator; RDS defaults."""
    return {}


@pytest.fixture(scope="session")
def rds_postgres_emulator(rds_postgres_emulator_options: dict[str, Any]) -> Iterator[Emulator]:
    """A running RDS PostgreSQL emulator (``engine="rds-postgres"``), shared by the session.

    Same interface as ``dsql_emulator``; ``token(user)`` signs ``rds-db`` tokens.
    """
    from warmdb.emulator.service import Emulator

    options = {**rds_postgres_emulator_options, "engine": "rds-postgres"}
    with Emulator(**options) as emulator:
        yield emulator


@pytest.fixture(scope="session")
def mysql_emulator_options() -> dict[str, Any]:
    """Keyword arguments for the session's RDS MySQL emulator
    (:class:`warmdb.emulator.mysql.MySQLEmulator`); RDS defaults unless overridden."""
    return {}


@pytest.fixture(scope="session")
def mysql_emulator(mysql_emulator_options: dict[str, Any]) -> Iterator[MySQLEmulator]:
    """A running RDS MySQL emulator on an embedded MariaDB, shared by the session.

    It gives ``host``, ``port``, ``region``, ``hostname``, ``ca_path``, ``credentials``, live
    ``stats``, ``token(user)`` (``rds-db`` tokens) and ``connection_params(user)``.
    """
    from warmdb.emulator.mysql.service import MySQLEmulator

    with MySQLEmulator(**mysql_emulator_options) as emulator:
        yield emulator
