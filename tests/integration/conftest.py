"""A real PostgreSQL server with TLS, started once for the integration tests.

The server listens on 127.0.0.1 with a certificate from a throwaway CA, accepts TCP logins
only over TLS with SCRAM-SHA-256 (a plaintext TCP login is rejected), and trusts the Unix
socket in its own directory, which the tests use to create roles.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import trustme
from psycopg import sql

from tests.integration.lifecycle import scaled_dsql, scaled_dsql_kwargs  # noqa: F401 (fixtures)
from warmdb.emulator.postgres import EmbeddedPostgres

#: Members of this group log in over TLS without a password: for tests of what happens around
#: the password exchange (imports, timings), not of the password itself.
TRUSTED_GROUP = "trusted"


@dataclass
class TLSServer:
    """What tests need to know about the server."""

    postgres: EmbeddedPostgres
    host: str
    port: int
    ca_path: Path

    def admin(self) -> psycopg.Connection:
        """A superuser connection over the Unix socket."""
        return psycopg.connect(**self.postgres.libpq_params(), autocommit=True)


@pytest.fixture(scope="session")
def tls_server(tmp_path_factory) -> TLSServer:
    ca = trustme.CA()
    server_cert = ca.issue_cert("localhost", "127.0.0.1")
    ca_path = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    hba = [
        "local all all trust",
        f"hostssl all +{TRUSTED_GROUP} 127.0.0.1/32 trust",
        "hostssl all all 127.0.0.1/32 scram-sha-256",
        "host all all 127.0.0.1/32 reject",
    ]
    postgres = EmbeddedPostgres(
        tcp_host="127.0.0.1",
        tls=(server_cert.cert_chain_pems[0].bytes(), server_cert.private_key_pem.bytes()),
        hba=hba,
        settings={"password_encryption": "scram-sha-256", "max_connections": "100"},
    )
    postgres.start()
    server = TLSServer(postgres, "127.0.0.1", postgres.port, ca_path)
    try:
        with server.admin() as conn:
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(TRUSTED_GROUP)))
        yield server
    finally:
        postgres.stop()


_role_numbers = itertools.count()


@pytest.fixture
def make_role(tls_server):
    """Create a login role: ``make(password, name=None, trusted=False) -> name``.

    A trusted role belongs to :data:`TRUSTED_GROUP`. Roles are dropped after the test.
    """
    created: list[str] = []

    def make(password: str | None, name: str | None = None, *, trusted: bool = False) -> str:
        name = name or f"role_{next(_role_numbers)}"
        with tls_server.admin() as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(name), sql.Literal(password)
                )
            )
            if trusted:
                conn.execute(
                    sql.SQL("GRANT {} TO {}").format(
                        sql.Identifier(TRUSTED_GROUP), sql.Identifier(name)
                    )
                )
        created.append(name)
        return name

    yield make
    with tls_server.admin() as conn:
        for name in created:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
