"""An emulator run: upstream PostgreSQL, TLS material, token checks and the proxy, together.

:func:`serve` is the entry point for tests and scripts::

    with warmdb.emulator.serve(time_scale=60) as dsql:
        conn = psycopg.connect(**dsql.connection_params(user="admin"))
        print(dsql.stats.accepted)
"""

from __future__ import annotations

import dataclasses
import secrets
import shutil
import string
import tempfile
import time
from pathlib import Path
from typing import Any

from warmdb.auth.credentials import Credentials
from warmdb.auth.tokens import DSQL_SERVICE, TokenSpec, sign_token
from warmdb.emulator import tls, upstream
from warmdb.emulator.limits import Limits
from warmdb.emulator.postgres import EmbeddedPostgres
from warmdb.emulator.server import Server
from warmdb.emulator.token_check import HostRule, TokenVerifier
from warmdb.errors import ConfigurationError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import os
    from collections.abc import Iterable

    from warmdb.emulator.stats import StatsSnapshot

__all__ = ["Emulator", "random_credentials", "serve"]

DEFAULT_REGION = "us-east-1"
SUPERUSER = "postgres"
# DSQL's "admin" may create roles, schemas and tables; a superuser upstream is the simplest
# role that can do all of that in PostgreSQL 15+, where PUBLIC may not create in "public".
_CREATE_ADMIN = """
DO $$BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'admin') THEN
    CREATE ROLE admin LOGIN SUPERUSER;
  END IF;
END$$;
"""


def random_credentials() -> Credentials:
    """A fresh access key id and secret key, shaped like AWS's (``AKIA`` + 16, 40 chars)."""
    upper = string.ascii_uppercase + string.digits
    access_key = "AKIA" + "".join(secrets.choice(upper) for _ in range(16))
    secret_key = "".join(
        secrets.choice(string.ascii_letters + string.digits + "+/") for _ in range(40)
    )
    return Credentials(access_key, secret_key)


class Emulator:
    """A local endpoint that behaves like Aurora DSQL. Start it, or use it as a context manager.

    :param host: the address to listen on, ``127.0.0.1`` by default.
    :param port: the TCP port; a free port by default (0).
    :param region: the region tokens must be signed for, ``us-east-1`` by default.
    :param hostname: the endpoint's host name, ``local.dsql.REGION.on.aws`` by default. Tokens
        for it, ``localhost``, loopback addresses and names resolving to loopback are accepted.
    :param credentials: the key pair clients sign with; a random one by default.
    :param accept: more credentials to accept (e.g. the caller's own AWS environment keys).
    :param limits: DSQL's limits by default; ``limits.time_scale`` also scales token expiry
        unless ``limits.token_time_scale`` is set.
    :param time_scale: replaces ``limits.time_scale`` when given: every duration (connection
        lifetime, transaction age, token expiry) is divided by it.
    :param token_time_scale: replaces ``limits.token_time_scale`` when given: token expiry is
        divided by it instead of ``time_scale`` (1 keeps tokens on real time).
    :param occ_conflict_rate: the fraction (0 to 1) of COMMITs failed with 40001 OC000.
    :param data_dir: keep the upstream's data here; a temporary directory by default.
    :param tls_files: ``(certificate_chain_path, key_path)`` to use instead of generating them.
    :param startup_timeout: seconds a client has to finish logging in, 10 by default.
    :param seed: seeds the simulated conflicts, for reproducible runs.
    :param bin_dir: the PostgreSQL server binaries; found automatically by default.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        region: str = DEFAULT_REGION,
        hostname: str | None = None,
        credentials: Credentials | None = None,
        accept: Iterable[Credentials] = (),
        limits: Limits | None = None,
        time_scale: float | None = None,
        token_time_scale: float | None = None,
        occ_conflict_rate: float = 0.0,
        data_dir: str | os.PathLike[str] | None = None,
        tls_files: tuple[str | os.PathLike[str], str | os.PathLike[str]] | None = None,
        startup_timeout: float = 10.0,
        seed: int | None = None,
        bin_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if not 0 <= occ_conflict_rate <= 1:
            raise ConfigurationError(
                f"occ_conflict_rate={occ_conflict_rate!r} must be between 0 and 1"
            )
        if not 0 <= port <= 65535:
            raise ConfigurationError(f"port={port!r} must be between 0 and 65535")
        if startup_timeout <= 0:
            raise ConfigurationError(f"startup_timeout={startup_timeout!r} must be positive")
        self.host = host
        self.region = region
        self.hostname = (hostname or f"local.dsql.{region}.on.aws").lower()
        self.credentials = credentials or random_credentials()
        self.limits = limits or Limits()
        if time_scale is not None:
            self.limits = dataclasses.replace(self.limits, time_scale=time_scale)
        if token_time_scale is not None:
            self.limits = dataclasses.replace(self.limits, token_time_scale=token_time_scale)
        self._accept = [self.credentials, *accept]
        self._port = port
        self._occ_conflict_rate = occ_conflict_rate
        self._data_dir = data_dir
        self._tls_files = tls_files
        self._startup_timeout = startup_timeout
        self._seed = seed
        self._bin_dir = bin_dir
        self._workdir: Path | None = None
        self._postgres: EmbeddedPostgres | None = None
        self._server: Server | None = None
        self._ca_path: Path | None = None

    # Lifecycle ---------------------------------------------------------------------------

    def start(self) -> Emulator:
        """Start the upstream server and the endpoint; return once both accept connections."""
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        import random

        try:
            self._workdir = Path(tempfile.mkdtemp(prefix="warmdb-emulate-"))
            files = self._tls()
            self._ca_path = files.ca_path
            self._postgres = EmbeddedPostgres(
                data_dir=self._data_dir, superuser=SUPERUSER, bin_dir=self._bin_dir
            ).start()
            path = upstream.socket_path(self._postgres.socket_dir, self._postgres.port)
            upstream.run_sql(path, SUPERUSER, _CREATE_ADMIN)
            verifier = TokenVerifier(
                self._accept,
                region=self.region,
                hosts=HostRule([self.hostname]),
                time_scale=self.limits.token_scale,
            )
            server = Server(
                host=self.host,
                port=self._port,
                upstream_path=path,
                tls_context=tls.server_context(files),
                verifier=verifier,
                limits=self.limits,
                occ_conflict_rate=self._occ_conflict_rate,
                startup_timeout=self._startup_timeout,
                rng=random.Random(self._seed),  # noqa: S311 - simulated conflicts only
            )
            server.start()
            self._server = server
        except BaseException:
            self.stop()
            raise
        return self

    def _tls(self) -> tls.TlsFiles:
        assert self._workdir is not None
        if self._tls_files is None:
            return tls.generate(self._workdir / "tls", [self.hostname])
        cert, key = (Path(p) for p in self._tls_files)
        return tls.TlsFiles(ca_path=cert, cert_path=cert, key_path=key)

    def stop(self) -> None:
        """Close every connection, stop the upstream server and remove temporary files."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()
        postgres, self._postgres = self._postgres, None
        if postgres is not None:
            postgres.stop()
        workdir, self._workdir = self._workdir, None
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)

    def __enter__(self) -> Emulator:
        # serve() hands out a started emulator; entering it must not start it twice.
        return self if self._server is not None else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # What clients need -------------------------------------------------------------------

    def _require_server(self) -> Server:
        if self._server is None:
            raise RuntimeError("the emulator is not running")
        return self._server

    @property
    def port(self) -> int:
        """The TCP port clients connect to."""
        return self._require_server().port

    @property
    def ca_path(self) -> Path:
        """The CA certificate to pass as ``sslrootcert`` for ``sslmode=verify-full``."""
        if self._ca_path is None:
            raise RuntimeError("the emulator is not running")
        return self._ca_path

    @property
    def stats(self) -> StatsSnapshot:
        """The live statistics, as of now."""
        return self._require_server().stats.snapshot()

    @property
    def upstream(self) -> EmbeddedPostgres:
        """The upstream PostgreSQL server (for direct access in tests and benchmarks)."""
        if self._postgres is None:
            raise RuntimeError("the emulator is not running")
        return self._postgres

    def postgres_version(self) -> str:
        """The upstream server's version, e.g. ``"15.18"``."""
        return self.upstream.version()

    def token(self, user: str = "admin", *, expires_in: int = 900, host: str | None = None) -> str:
        """Sign a token for *user* with the emulator's credentials, as a client would."""
        spec = TokenSpec(
            kind=DSQL_SERVICE,
            host=host or self.hostname,
            port=self.port,
            region=self.region,
            user=user,
            expires_in=expires_in,
        )
        return sign_token(spec, self.credentials, time.time())

    def connection_params(self, user: str = "admin", *, token: bool = True) -> dict[str, str]:
        """libpq parameters (psycopg, psycopg2) for *user*: verified TLS and a fresh token."""
        params = {
            "host": self.hostname,
            "hostaddr": self.host,
            "port": str(self.port),
            "user": user,
            "dbname": "postgres",
            "sslmode": "verify-full",
            "sslrootcert": str(self.ca_path),
        }
        if token:
            params["password"] = self.token(user)
        return params

    def describe(self) -> dict[str, object]:
        """The endpoint as JSON-ready data: what ``warmdb emulate --json`` prints."""
        return {
            "host": self.host,
            "port": self.port,
            "region": self.region,
            "hostname": self.hostname,
            "ca_path": str(self.ca_path),
            "access_key_id": self.credentials.access_key,
            "secret_access_key": self.credentials.secret_key,
            "postgres_version": self.postgres_version(),
            # The upstream trusts its Unix socket: for benchmarks and debugging by the same user.
            "upstream_socket_dir": str(self.upstream.socket_dir),
            "upstream_port": self.upstream.port,
        }


def serve(**options: Any) -> Emulator:
    """Start an :class:`Emulator` with *options* (its keyword arguments) and return it.

    Use the result as a context manager, which stops it.
    """
    return Emulator(**options).start()
