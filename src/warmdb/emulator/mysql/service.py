"""A MySQL emulator run: embedded MariaDB, TLS material, RDS token checks and the front, together.

:func:`serve` is the entry point for tests and scripts::

    with warmdb.emulator.mysql.serve(idle_client_timeout=2) as rds:   # RDS Proxy's, scaled
        conn = pymysql.connect(**rds.connection_params())   # verified TLS, a fresh token
        time.sleep(3)   # idle past the proxy's timeout: the next query fails with 2013
        assert rds.stats.idle_closed == 1
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from warmdb.emulator.lifecycle import DEFAULT_REGION, BaseEmulator, random_credentials
from warmdb.emulator.mysql import upstream
from warmdb.emulator.mysql.limits import MySQLLimits, MySQLStatsSnapshot
from warmdb.emulator.mysql.mariadb import EmbeddedMariaDB
from warmdb.emulator.mysql.server import MySQLServer

TYPE_CHECKING = False
if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Iterable

    from warmdb.auth.credentials import Credentials
    from warmdb.emulator.listener import Front
    from warmdb.emulator.mysql.packets import Greeting

__all__ = ["MASTER_USER", "MySQLEmulator", "serve"]

#: The RDS master user's usual name; created with every privilege, as RDS creates it.
MASTER_USER = "admin"
_SUPERUSER = "root"


class MySQLEmulator(BaseEmulator[MySQLServer, EmbeddedMariaDB, MySQLStatsSnapshot]):
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
        overrides: dict[str, Any] = {
            "idle_client_timeout": idle_client_timeout,
            "wait_timeout": wait_timeout,
            "iam_connect_rate": iam_connect_rate,
            "max_connections": max_connections,
        }
        self.limits = dataclasses.replace(
            limits or MySQLLimits(), **{k: v for k, v in overrides.items() if v is not None}
        )
        super().__init__(
            engine="mysql",
            iam_kind="rds",
            host=host,
            port=port,
            region=region,
            hostname=hostname or f"local.emulator.{region}.rds.amazonaws.com",
            credentials=credentials or random_credentials(),
            accept=accept,
            tls_files=tls_files,
            clock=clock,
        )
        self._greeting: Greeting | None = None

    # The engine's parts -----------------------------------------------------------------

    workdir_prefix = "warmdb-emulate-mysql-"

    def _start_upstream(self) -> EmbeddedMariaDB:
        settings = {
            "wait_timeout": str(int(self.limits.wait_timeout)),
            "max_connections": str(self.limits.max_connections),
        }
        mariadb = EmbeddedMariaDB(settings=settings)
        # Owned by the emulator as soon as it exists: a failing start is stopped with it.
        self._upstream = mariadb
        mariadb.start()
        upstream.run_sql(
            mariadb.socket_path,
            _SUPERUSER,
            [
                f"CREATE USER '{MASTER_USER}'@'localhost'",
                f"GRANT ALL ON *.* TO '{MASTER_USER}'@'localhost' WITH GRANT OPTION",
            ],
        )
        self._greeting = upstream.probe(mariadb.socket_path)
        return mariadb

    def _new_server(self, front: Front) -> MySQLServer:
        assert self._greeting is not None
        return MySQLServer(front, upstream_greeting=self._greeting, limits=self.limits)

    # What clients need -------------------------------------------------------------------

    @property
    def server_version(self) -> str:
        """The version string clients see, MariaDB's own (e.g. ``5.5.5-10.11.19-MariaDB``)."""
        return self._require_server().upstream_greeting.server_version

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
            **super().describe(),
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
