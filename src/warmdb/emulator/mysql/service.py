"""A MySQL emulator run: embedded MariaDB, TLS material, RDS token checks and the front, together.

:func:`serve` is the entry point for tests and scripts::

    with warmdb.emulator.mysql.serve(idle_client_timeout=2) as rds:
        conn = pymysql.connect(**rds.connection_params(user="admin"))
        print(rds.stats.accepted)
"""

from __future__ import annotations

import dataclasses
import shutil
import socket
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any

from warmdb.auth.tokens import TokenSpec, sign_token
from warmdb.emulator import tls
from warmdb.emulator.mysql import upstream
from warmdb.emulator.mysql.limits import MySQLLimits
from warmdb.emulator.mysql.mariadb import EmbeddedMariaDB
from warmdb.emulator.mysql.server import MySQLServer
from warmdb.emulator.service import DEFAULT_REGION, random_credentials
from warmdb.emulator.token_check import HostRule, TokenVerifier
from warmdb.errors import ConfigurationError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Iterable

    from warmdb.auth.credentials import Credentials
    from warmdb.emulator.mysql.limits import MySQLStatsSnapshot

__all__ = ["MASTER_USER", "MySQLEmulator", "serve"]

#: The RDS master user's usual name; created with every privilege, as RDS creates it.
MASTER_USER = "admin"
_SUPERUSER = "root"


class MySQLEmulator:
    """A local endpoint that behaves like RDS for MySQL with IAM authentication.

    Start it, or use it as a context manager. Users are MariaDB users without a password
    (``CREATE USER 'app'@'localhost'``, run as ``admin``); the token is their password.

    :param host: the address to listen on, ``127.0.0.1`` by default.
    :param port: the TCP port; a free port by default (0).
    :param region: the region tokens must be signed for, ``us-east-1`` by default.
    :param hostname: the endpoint's host name, ``local.emulator.REGION.rds.amazonaws.com``
        by default. Tokens for it, ``localhost``, loopback addresses and names resolving to
        loopback are accepted; tokens must name the port as well.
    :param credentials: the key pair clients sign with; a random one by default.
    :param accept: more credentials to accept (e.g. the caller's own AWS environment keys).
    :param limits: the options; RDS's defaults. The keywords below replace single fields.
    :param idle_client_timeout: see :class:`MySQLLimits` (RDS Proxy's idle client timeout).
    :param wait_timeout: MariaDB's ``wait_timeout``, seconds.
    :param iam_connect_rate: new IAM logins per second.
    :param max_connections: MariaDB's ``max_connections``.
    :param tls_files: ``(certificate_chain_path, key_path)`` to use instead of generating them.
    :param clock: the monotonic clock of the connect ceiling and the idle timeout;
        :func:`time.monotonic` unless a test freezes it.
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
        limits: MySQLLimits | None = None,
        idle_client_timeout: float | None = None,
        wait_timeout: float | None = None,
        iam_connect_rate: float | None = None,
        max_connections: int | None = None,
        tls_files: tuple[str | os.PathLike[str], str | os.PathLike[str]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ConfigurationError(f"port={port!r} must be between 0 and 65535")
        overrides: dict[str, Any] = {
            "idle_client_timeout": idle_client_timeout,
            "wait_timeout": wait_timeout,
            "iam_connect_rate": iam_connect_rate,
            "max_connections": max_connections,
        }
        self.limits = dataclasses.replace(
            limits or MySQLLimits(), **{k: v for k, v in overrides.items() if v is not None}
        )
        self.host = host
        self.region = region
        self.hostname = (hostname or f"local.emulator.{region}.rds.amazonaws.com").lower()
        self.credentials = credentials or random_credentials()
        self._accept = [self.credentials, *accept]
        self._port = port
        self._tls_files = tls_files
        self._clock = clock
        self._workdir: Path | None = None
        self._mariadb: EmbeddedMariaDB | None = None
        self._server: MySQLServer | None = None
        self._ca_path: Path | None = None
        self._version = ""

    # Lifecycle ---------------------------------------------------------------------------

    def start(self) -> MySQLEmulator:
        """Start MariaDB and the endpoint; return once both accept connections."""
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        listener: socket.socket | None = None
        try:
            self._workdir = Path(tempfile.mkdtemp(prefix="warmdb-emulate-mysql-"))
            files = self._tls()
            self._ca_path = files.ca_path
            settings = {
                "wait_timeout": str(int(self.limits.wait_timeout)),
                "max_connections": str(self.limits.max_connections),
            }
            self._mariadb = EmbeddedMariaDB(settings=settings).start()
            path = self._mariadb.socket_path
            upstream.run_sql(
                path,
                _SUPERUSER,
                [
                    f"CREATE USER '{MASTER_USER}'@'localhost'",
                    f"GRANT ALL ON *.* TO '{MASTER_USER}'@'localhost' WITH GRANT OPTION",
                ],
            )
            greeting = upstream.probe(path)
            self._version = greeting.server_version
            listener = socket.create_server((self.host, self._port), backlog=4096)
            port = int(listener.getsockname()[1])
            verifier = TokenVerifier(
                self._accept,
                region=self.region,
                hosts=HostRule([self.hostname]),
                kind="rds",
                port=port,
            )
            server = MySQLServer(
                listener=listener,
                upstream_path=path,
                upstream_greeting=greeting,
                tls_context=tls.server_context(files),
                verifier=verifier,
                limits=self.limits,
                clock=self._clock,
            )
            listener = None
            server.start()
            self._server = server
        except BaseException:
            if listener is not None:
                listener.close()
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
        """Close every connection, stop MariaDB and remove temporary files."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()
        mariadb, self._mariadb = self._mariadb, None
        if mariadb is not None:
            mariadb.stop()
        self._ca_path = None
        workdir, self._workdir = self._workdir, None
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)

    def __enter__(self) -> MySQLEmulator:
        return self if self._server is not None else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # What clients need -------------------------------------------------------------------

    def _require_server(self) -> MySQLServer:
        if self._server is None:
            raise RuntimeError("the emulator is not running")
        return self._server

    @property
    def port(self) -> int:
        """The TCP port clients connect to."""
        return self._require_server().port

    @property
    def ca_path(self) -> Path:
        """The CA certificate clients verify the server with (``ssl={"ca": ...}``)."""
        if self._ca_path is None:
            raise RuntimeError("the emulator is not running")
        return self._ca_path

    @property
    def stats(self) -> MySQLStatsSnapshot:
        """The live statistics, as of now."""
        return self._require_server().stats.snapshot()

    @property
    def upstream(self) -> EmbeddedMariaDB:
        """The upstream MariaDB (its Unix socket trusts ``root``: for tests and benchmarks)."""
        if self._mariadb is None:
            raise RuntimeError("the emulator is not running")
        return self._mariadb

    @property
    def server_version(self) -> str:
        """The version string clients see, MariaDB's own (e.g. ``5.5.5-10.11.19-MariaDB``)."""
        self._require_server()
        return self._version

    def token(self, user: str = MASTER_USER, *, host: str | None = None) -> str:
        """Sign an RDS IAM token for *user* with the emulator's credentials, as a client would."""
        spec = TokenSpec(
            kind="rds",
            host=host or self.hostname,
            port=self.port,
            region=self.region,
            user=user,
            expires_in=900,
        )
        return sign_token(spec, self.credentials, time.time())

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context that verifies the emulator (aiomysql's ``ssl=``)."""
        return ssl.create_default_context(cafile=str(self.ca_path))

    def connection_params(self, user: str = MASTER_USER, *, token: bool = True) -> dict[str, Any]:
        """PyMySQL's keyword arguments for *user*: verified TLS and a fresh token.

        aiomysql takes the same with ``ssl=`` :meth:`ssl_context`; mysql-connector-python
        takes ``ssl_ca=str(ca_path)`` and ``auth_plugin="mysql_clear_password"`` instead.
        """
        params: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": user,
            "ssl": {"ca": str(self.ca_path)},
        }
        if token:
            params["password"] = self.token(user)
        return params

    def describe(self) -> dict[str, object]:
        """The endpoint as JSON-ready data: what ``warmdb emulate --engine mysql --json`` prints."""
        return {
            "engine": "mysql",
            "host": self.host,
            "port": self.port,
            "region": self.region,
            "hostname": self.hostname,
            "ca_path": str(self.ca_path),
            "access_key_id": self.credentials.access_key,
            "secret_access_key": self.credentials.secret_key,
            "server_version": self.server_version,
            "master_user": MASTER_USER,
            "limits": dataclasses.asdict(self.limits),
            # Root without a password on this socket: for benchmarks and debugging as root.
            "upstream_socket": self.upstream.socket_path,
        }


def serve(**options: Any) -> MySQLEmulator:
    """Start a :class:`MySQLEmulator` with *options* (its keyword arguments) and return it.

    Use the result as a context manager, which stops it.
    """
    return MySQLEmulator(**options).start()
