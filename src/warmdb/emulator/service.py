"""An emulator run: upstream PostgreSQL, TLS material, token checks and the proxy, together.

:func:`serve` is the entry point for tests and scripts::

    with warmdb.emulator.serve(time_scale=60) as dsql:
        conn = psycopg.connect(**dsql.connection_params(user="admin"))
        print(dsql.stats.accepted)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from warmdb.emulator import upstream
from warmdb.emulator.engines import get_engine
from warmdb.emulator.lifecycle import DEFAULT_REGION, BaseEmulator, random_credentials
from warmdb.emulator.limits import Limits
from warmdb.emulator.postgres import EmbeddedPostgres
from warmdb.emulator.server import Server
from warmdb.emulator.stats import StatsSnapshot
from warmdb.errors import ConfigurationError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import os
    from collections.abc import Iterable

    from warmdb.auth.credentials import Credentials
    from warmdb.emulator.listener import Front

__all__ = ["Emulator", "random_credentials", "serve"]

SUPERUSER = "postgres"
#: Client connections the upstream is sized for by default (see docs/emulator.md for the
#: memory each one costs).
DEFAULT_UPSTREAM_CONNECTIONS = 1_000
# Backends of closed clients take a moment to exit: room for them beyond the admitted count.
_UPSTREAM_HEADROOM = 20
# DSQL's "admin" may create roles, schemas and tables; a superuser upstream is the simplest
# role that can do all of that in PostgreSQL 15+, where PUBLIC may not create in "public".
_CREATE_ADMIN = """
DO $$BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'admin') THEN
    CREATE ROLE admin LOGIN SUPERUSER;
  END IF;
END$$;
"""


def _check_data_dir(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise ConfigurationError(f"data_dir={str(path)!r} exists and is not a directory")
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"data_dir={str(path)!r} cannot be created: {exc.strerror}"
        ) from None


class Emulator(BaseEmulator[Server, EmbeddedPostgres, StatsSnapshot]):
    """A local endpoint that behaves like Aurora DSQL. Start it, or use it as a context manager.

    :param engine: the emulated service: ``"dsql"`` (default) or ``"rds-postgres"`` (RDS
        IAM tokens, 200 new connections/s, no transaction limits); see
        :mod:`warmdb.emulator.engines`.
    :param host: the address to listen on, ``127.0.0.1`` by default.
    :param port: the TCP port; a free port by default (0).
    :param region: the region tokens must be signed for, ``us-east-1`` by default.
    :param hostname: the endpoint's host name, ``local.dsql.REGION.on.aws`` by default (the
        engine's). Tokens for it, ``localhost``, loopback addresses and names resolving to
        loopback are accepted.
    :param credentials: the key pair clients sign with; a random one by default.
    :param temporary_credentials: make the random key pair temporary credentials with a
        session token, as Lambda's (``--session-token``); tokens must then carry it.
    :param accept: more credentials to accept (e.g. the caller's own AWS environment keys).
    :param limits: DSQL's limits by default; ``limits.time_scale`` also scales token expiry
        unless ``limits.token_time_scale`` is set.
    :param time_scale: replaces ``limits.time_scale`` when given: every duration (connection
        lifetime, transaction age, token expiry) is divided by it.
    :param token_time_scale: replaces ``limits.token_time_scale`` when given: token expiry is
        divided by it instead of ``time_scale`` (1 keeps tokens on real time).
    :param occ_conflict_rate: the fraction (0 to 1) of COMMITs failed with 40001 OC000.
    :param upstream_connections: client connections the upstream PostgreSQL is sized for,
        1,000 by default; clients beyond it (or ``limits.max_connections``) are refused with
        the engine's "too many connections".
    :param idle_client_timeout: close client connections idle this long (seconds, scaled by
        ``time_scale``), as RDS Proxy's ``IdleClientTimeout`` does; ``None`` (default): never.
    :param require_sni: refuse TLS clients that send no server name; the engine's default
        (DSQL: yes, RDS: no) when ``None``.
    :param data_dir: keep the upstream's data here; a temporary directory by default.
    :param tls_files: ``(certificate_chain_path, key_path)`` to use instead of generating them.
    :param startup_timeout: seconds a client has to finish logging in, 10 by default.
    :param seed: seeds the simulated conflicts, for reproducible runs.
    :param bin_dir: the PostgreSQL server binaries; found automatically by default.
    """

    def __init__(
        self,
        *,
        engine: str = "dsql",
        host: str = "127.0.0.1",
        port: int = 0,
        region: str = DEFAULT_REGION,
        hostname: str | None = None,
        credentials: Credentials | None = None,
        temporary_credentials: bool = False,
        accept: Iterable[Credentials] = (),
        limits: Limits | None = None,
        time_scale: float | None = None,
        token_time_scale: float | None = None,
        occ_conflict_rate: float = 0.0,
        upstream_connections: int = DEFAULT_UPSTREAM_CONNECTIONS,
        idle_client_timeout: float | None = None,
        require_sni: bool | None = None,
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
        if startup_timeout <= 0:
            raise ConfigurationError(f"startup_timeout={startup_timeout!r} must be positive")
        if upstream_connections < 1:
            raise ConfigurationError(
                f"upstream_connections={upstream_connections!r} must be at least 1"
            )
        if idle_client_timeout is not None and not idle_client_timeout > 0:
            raise ConfigurationError(
                f"idle_client_timeout={idle_client_timeout!r} must be greater than 0"
            )
        self.engine = get_engine(engine)
        super().__init__(
            engine=self.engine.name,
            iam_kind=self.engine.iam_kind,
            host=host,
            port=port,
            region=region,
            hostname=hostname or self.engine.hostname.format(region=region),
            credentials=credentials or random_credentials(temporary=temporary_credentials),
            accept=accept,
            tls_files=tls_files,
        )
        self.limits = limits or self.engine.limits
        if time_scale is not None:
            self.limits = dataclasses.replace(self.limits, time_scale=time_scale)
        if token_time_scale is not None:
            self.limits = dataclasses.replace(self.limits, token_time_scale=token_time_scale)
        self._occ_conflict_rate = occ_conflict_rate
        self._upstream_connections = upstream_connections
        self._idle_client_timeout = idle_client_timeout
        self._require_sni = self.engine.require_sni if require_sni is None else require_sni
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._startup_timeout = startup_timeout
        self._seed = seed
        self._bin_dir = bin_dir

    # The engine's parts -----------------------------------------------------------------

    @property
    def token_time_scale(self) -> float:
        return self.limits.token_scale

    def _start_upstream(self) -> EmbeddedPostgres:
        if self._data_dir is not None:
            _check_data_dir(self._data_dir)
        postgres = EmbeddedPostgres(
            data_dir=self._data_dir,
            superuser=SUPERUSER,
            bin_dir=self._bin_dir,
            settings=self._upstream_settings(),
        )
        # Owned by the emulator as soon as it exists: a failing start is stopped with it.
        self._upstream = postgres
        postgres.start()
        upstream.run_sql(postgres.socket_path, SUPERUSER, _CREATE_ADMIN)
        return postgres

    def _new_server(self, front: Front) -> Server:
        import random

        return Server(
            front,
            limits=self.limits,
            engine=dataclasses.replace(self.engine, require_sni=self._require_sni),
            upstream_connections=self._upstream_connections,
            idle_client_timeout=self._idle_client_timeout,
            occ_conflict_rate=self._occ_conflict_rate,
            startup_timeout=self._startup_timeout,
            rng=random.Random(self._seed),  # noqa: S311 - simulated conflicts only
        )

    def _upstream_settings(self) -> dict[str, str]:
        settings = {
            "max_connections": str(self._upstream_connections + _UPSTREAM_HEADROOM),
            # The emulator's clients log in as superusers ("admin"): no slots held back.
            "superuser_reserved_connections": "0",
            # A backend whose client vanished mid-statement notices within a second even
            # if the session could not cancel it.
            "client_connection_check_interval": "1s",
        }
        return settings

    # What clients need -------------------------------------------------------------------

    def postgres_version(self) -> str:
        """The upstream server's version, e.g. ``"15.18"``."""
        return self.upstream.version()

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
            **super().describe(),
            "postgres_version": self.postgres_version(),
            # The upstream trusts its Unix socket, which only this OS user (and root) can
            # reach: for benchmarks and debugging by the same user.
            "upstream_socket_dir": str(self.upstream.socket_dir),
            "upstream_port": self.upstream.port,
        }


def serve(**options: Any) -> Emulator:
    """Start an :class:`Emulator` with *options* (its keyword arguments) and return it.

    Use the result as a context manager, which stops it.
    """
    return Emulator(**options).start()
