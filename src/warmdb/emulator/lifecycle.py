"""What every emulator run shares: the private work directory, TLS material, the listening
socket, the upstream server, the token verifier and the front end, started and stopped
together.

:class:`BaseEmulator` holds that lifecycle and what clients need from any engine (the port,
the CA, the statistics, a signed token); :class:`warmdb.emulator.Emulator` (DSQL and RDS
PostgreSQL) and :class:`warmdb.emulator.mysql.MySQLEmulator` add the upstream server, the
front end and their connection parameters.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import secrets
import shutil
import ssl
import string
import tempfile
import time
from pathlib import Path
from typing import Any, Generic, TypeVar

from warmdb.auth.credentials import Credentials
from warmdb.auth.tokens import TokenSpec, sign_token
from warmdb.emulator import tls
from warmdb.emulator.embedded import EmbeddedServer
from warmdb.emulator.listener import Front, Listener, bind
from warmdb.emulator.token_check import HostRule, TokenVerifier
from warmdb.errors import ConfigurationError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import os
    import socket
    from collections.abc import Callable, Iterable

__all__ = ["DEFAULT_REGION", "BaseEmulator", "random_credentials"]

#: The region tokens must name unless told otherwise.
DEFAULT_REGION = "us-east-1"

_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")

ServerT = TypeVar("ServerT", bound=Listener)
UpstreamT = TypeVar("UpstreamT", bound=EmbeddedServer)
SnapshotT = TypeVar("SnapshotT")
_T = TypeVar("_T")
_EmulatorT = TypeVar("_EmulatorT", bound="BaseEmulator[Any, Any, Any]")


def random_credentials(*, temporary: bool = False) -> Credentials:
    """A fresh access key id and secret key, shaped like AWS's (``AKIA`` + 16, 40 chars).

    :param temporary: issue temporary credentials instead, as Lambda gives a function: an
        ``ASIA`` key id and a session token (random base64, about as long as STS's), which
        every token must then carry.
    """
    upper = string.ascii_uppercase + string.digits
    prefix = "ASIA" if temporary else "AKIA"
    access_key = prefix + "".join(secrets.choice(upper) for _ in range(16))
    secret_key = "".join(
        secrets.choice(string.ascii_letters + string.digits + "+/") for _ in range(40)
    )
    session_token = base64.b64encode(secrets.token_bytes(600)).decode() if temporary else None
    return Credentials(access_key, secret_key, session_token)


def _running(part: _T | None) -> _T:
    """*part* of a running emulator, which is ``None`` unless it runs."""
    if part is None:
        raise RuntimeError("the emulator is not running")
    return part


def _check_region(region: str) -> None:
    if not _REGION.fullmatch(region):
        raise ConfigurationError(f"region={region!r} is not an AWS region name (e.g. us-east-1)")


def _check_host(host: str) -> None:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ConfigurationError(
                f"host={host!r} must be an IP address to listen on (e.g. 127.0.0.1)"
            ) from None


class BaseEmulator(Generic[ServerT, UpstreamT, SnapshotT]):
    """A local endpoint: start it, or use it as a context manager.

    Subclasses implement :meth:`_start_upstream` and :meth:`_new_server`.

    :param engine: the engine's name, as :meth:`describe` reports it.
    :param iam_kind: the tokens the endpoint takes (``"dsql"`` or ``"rds"``).
    :param host: the address to listen on.
    :param port: the TCP port; 0 for a free one.
    :param region: the region tokens must be signed for.
    :param hostname: the endpoint's host name (tokens for it are accepted).
    :param credentials: the key pair clients sign with.
    :param accept: more credentials to accept.
    :param tls_files: ``(certificate_chain_path, key_path)`` instead of generated ones.
    :param clock: the front end's monotonic clock (limits, timeouts).
    """

    #: The prefix of the private work directory's name.
    workdir_prefix = "warmdb-emulate-"

    def __init__(
        self,
        *,
        engine: str,
        iam_kind: str,
        host: str,
        port: int,
        region: str,
        hostname: str,
        credentials: Credentials,
        accept: Iterable[Credentials],
        tls_files: tuple[str | os.PathLike[str], str | os.PathLike[str]] | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ConfigurationError(f"port={port!r} must be between 0 and 65535")
        _check_region(region)
        _check_host(host)
        if tls_files is not None:
            for path in tls_files:
                if not Path(path).is_file():
                    raise ConfigurationError(f"TLS file {str(path)!r} does not exist")
        self.engine_name = engine
        self.iam_kind = iam_kind
        self.host = host
        self.region = region
        self.hostname = hostname.lower()
        self.credentials = credentials
        self._accept = [credentials, *accept]
        self._port = port
        self._tls_files = tls_files
        self.clock = clock
        self._workdir: Path | None = None
        self._upstream: UpstreamT | None = None
        self._server: ServerT | None = None
        self._ca_path: Path | None = None

    # What an engine adds -------------------------------------------------------------------

    def _start_upstream(self) -> UpstreamT:
        """Start the upstream server, ready for clients."""
        raise NotImplementedError

    def _new_server(self, front: Front) -> ServerT:
        """The front end on *front* (whose listening socket it now owns), not started."""
        raise NotImplementedError

    @property
    def token_time_scale(self) -> float:
        """What token lifetimes are divided by; 1 (real time) unless the engine scales them."""
        return 1.0

    # Lifecycle -----------------------------------------------------------------------------

    def start(self: _EmulatorT) -> _EmulatorT:
        """Start the upstream server and the endpoint; return once both accept connections."""
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        listener: socket.socket | None = None
        try:
            # mkdtemp makes it 0700: keys and sockets below it are the owner's alone.
            self._workdir = Path(tempfile.mkdtemp(prefix=self.workdir_prefix))
            files = self._tls()
            self._ca_path = files.ca_path
            try:
                tls_context = tls.server_context(files)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigurationError(f"TLS certificate or key unusable: {exc}") from None
            try:
                listener = bind(self.host, self._port)
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot listen on {self.host} port {self._port}: {exc.strerror or exc}"
                ) from None
            self._upstream = self._start_upstream()
            verifier = TokenVerifier(
                self._accept,
                region=self.region,
                hosts=HostRule([self.hostname]),
                kind=self.iam_kind,
                # RDS tokens name the port: known only once bound when it was 0.
                port=int(listener.getsockname()[1]),
                time_scale=self.token_time_scale,
            )
            self._server = self._new_server(
                Front(
                    listener=listener,
                    upstream_path=self._upstream.socket_path,
                    tls_context=tls_context,
                    verifier=verifier,
                    clock=self.clock,
                )
            )
            listener = None
            self._server.start()
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
        """Close every connection, stop the upstream server and remove temporary files."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()
        upstream, self._upstream = self._upstream, None
        if upstream is not None:
            upstream.stop()
        self._ca_path = None
        workdir, self._workdir = self._workdir, None
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)

    def __enter__(self: _EmulatorT) -> _EmulatorT:
        # serve() hands out a started emulator; entering it must not start it twice.
        return self if self._server is not None else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # What clients need ---------------------------------------------------------------------

    def _require_server(self) -> ServerT:
        return _running(self._server)

    @property
    def port(self) -> int:
        """The TCP port clients connect to."""
        return self._require_server().port

    @property
    def ca_path(self) -> Path:
        """The CA certificate clients verify the endpoint with."""
        return _running(self._ca_path)

    @property
    def stats(self) -> SnapshotT:
        """The live statistics, as of now."""
        snapshot: SnapshotT = self._require_server().stats.snapshot()
        return snapshot

    @property
    def upstream(self) -> UpstreamT:
        """The upstream server (for direct access in tests and benchmarks)."""
        return _running(self._upstream)

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context that verifies the emulator's certificate (the ``ssl=`` of
        aiomysql or asyncpg)."""
        return ssl.create_default_context(cafile=str(self.ca_path))

    def token(self, user: str = "admin", *, expires_in: int = 900, host: str | None = None) -> str:
        """Sign a token for *user* with the emulator's credentials, as a client would: a DSQL
        token for the ``dsql`` engine, an ``rds-db`` token (host and port) for the RDS ones."""
        spec = TokenSpec(
            kind=self.iam_kind,
            host=host or self.hostname,
            port=self.port,
            region=self.region,
            user=user,
            expires_in=expires_in,
        )
        return sign_token(spec, self.credentials, time.time())

    def describe(self) -> dict[str, object]:
        """The endpoint as JSON-ready data: what ``warmdb emulate --json`` prints."""
        return {
            "engine": self.engine_name,
            "host": self.host,
            "port": self.port,
            "region": self.region,
            "hostname": self.hostname,
            "ca_path": str(self.ca_path),
            "access_key_id": self.credentials.access_key,
            "secret_access_key": self.credentials.secret_key,
            "session_token": self.credentials.token,
        }
