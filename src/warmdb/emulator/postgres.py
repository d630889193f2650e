"""An embedded, throwaway PostgreSQL server: the emulator's upstream and the test suite's server.

:class:`EmbeddedPostgres` runs ``initdb`` into a data directory and starts ``postgres`` on it,
listening on a Unix socket in that directory and, when asked, on one loopback TCP port. It
needs no setup: :func:`find_bin_dir` takes the system's server binaries (Debian's
``postgresql`` package, ``pg_config``, ``PATH``) and falls back to the ``pgserver`` wheel's.

PostgreSQL refuses to run as root. When the current user is root, the server runs as an
unprivileged account (``$WARMDB_PG_USER``, else ``postgres``, else ``nobody``) that owns the
data directory.

The server dies with the process that started it, even one killed with SIGKILL, on Linux: the
server is started with a parent-death signal (``prctl(PR_SET_PDEATHSIG, SIGQUIT)``, PostgreSQL's
immediate shutdown). The kernel sends that signal when the *thread* that forked the child
ends, so every server is forked by one daemon thread that lives as long as the process (see
:class:`_Spawner`), whichever thread calls :meth:`EmbeddedPostgres.start`. Elsewhere a killed
owner leaves the server running, as before.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

from warmdb._processes import unprivileged_account
from warmdb.emulator.embedded import EmbeddedServer
from warmdb.errors import WarmdbError

logger = logging.getLogger(__name__)

__all__ = ["EmbeddedPostgres", "PostgresNotFoundError", "find_bin_dir", "free_port"]

_REQUIRED = ("initdb", "postgres")
# Debian's layout: one directory per major version.
_SYSTEM_ROOT = Path("/usr/lib/postgresql")


class PostgresNotFoundError(WarmdbError):
    """No PostgreSQL server binaries were found."""

    __module__ = "warmdb.emulator"


def _has_server(bin_dir: Path) -> bool:
    return all((bin_dir / name).is_file() for name in _REQUIRED)


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(p) for p in path.parent.name.split(".") if p.isdigit())


def find_bin_dir() -> Path:
    """Return a directory holding ``initdb`` and ``postgres``.

    Looks at ``$WARMDB_PG_BIN``, ``pg_config --bindir``, the newest
    ``/usr/lib/postgresql/*/bin``, ``postgres`` on ``PATH``, then the ``pgserver`` wheel.

    :raises PostgresNotFoundError: none of them has the server binaries.
    """
    candidates: list[Path] = []
    if os.environ.get("WARMDB_PG_BIN"):
        candidates.append(Path(os.environ["WARMDB_PG_BIN"]))
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            )
            candidates.append(Path(out.stdout.strip()))
    candidates += sorted(_SYSTEM_ROOT.glob("*/bin"), key=_version_key, reverse=True)
    on_path = shutil.which("postgres")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.submodule_search_locations:
        candidates.append(Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin")
    for candidate in candidates:
        if _has_server(candidate):
            return candidate
    raise PostgresNotFoundError(
        "no PostgreSQL server binaries found: install Debian's 'postgresql' package, "
        "the 'pgserver' wheel (pip install 'warmdb[emulator]'), or set WARMDB_PG_BIN"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on *host* a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _server_account() -> tuple[int, int] | None:
    """The (uid, gid) to run the server as, or ``None`` to run it as ourselves."""
    names = [os.environ.get("WARMDB_PG_USER"), "postgres", "nobody"]
    return unprivileged_account(
        names, error=PostgresNotFoundError, what="PostgreSQL", variable="WARMDB_PG_USER"
    )


def _cache_root() -> Path:
    configured = os.environ.get("WARMDB_CACHE_DIR")
    if configured:
        return Path(configured)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "warmdb"


def _template_dir(bin_dir: Path, superuser: str) -> Path | None:
    """Where the fresh cluster of these binaries and this superuser is kept, or ``None``."""
    import hashlib

    try:
        binary = (bin_dir / "postgres").stat()
    except OSError:
        return None
    # A new or rebuilt server changes the key: its clusters may not be compatible.
    key = f"{bin_dir.resolve()}|{binary.st_size}|{binary.st_mtime_ns}|{superuser}|UTF8|C"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return _cache_root() / f"initdb-{digest}"


def _store_template(data_dir: Path, template: Path) -> None:
    """Copy a fresh cluster into the cache; best effort (a read-only home just skips it)."""
    temporary = template.parent / f".{template.name}.{os.getpid()}.{threading.get_ident()}"
    try:
        template.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        template.parent.chmod(0o700)
        shutil.copytree(data_dir, temporary, symlinks=True)
        # Atomic: another process storing the same template at once loses the race, harmlessly.
        temporary.rename(template)
    except OSError as exc:
        logger.debug("initdb template not cached: %s", exc)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


class EmbeddedPostgres(EmbeddedServer):
    """A PostgreSQL server in a data directory of its own.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`::

        with EmbeddedPostgres(tcp_host="127.0.0.1") as pg:
            print(pg.port, pg.socket_dir)

    :param data_dir: keep data here (created and initialised when empty); a temporary
        directory, removed at stop, by default.
    :param tcp_host: the address to listen on, or ``None`` for the Unix socket only.
    :param port: the TCP port (also names the socket file); a free port by default.
    :param tls: ``(certificate_pem, key_pem)`` to enable TLS, or ``None``.
    :param hba: ``pg_hba.conf`` lines; trust over the Unix socket only by default, which is
        safe because the socket, its directory and the data directory are mode 0700: only
        the server's OS user (and root) can connect.
    :param settings: extra ``postgresql.conf`` settings (``-c name=value``).
    :param superuser: the bootstrap superuser's name.
    :param bin_dir: server binaries; :func:`find_bin_dir` by default.
    :param start_timeout: seconds to wait for the server to accept connections.
    :param cache_initdb: keep a copy of a fresh cluster in the user's cache directory
        (``$WARMDB_CACHE_DIR``, else ``$XDG_CACHE_HOME/warmdb``, else ``~/.cache/warmdb``;
        mode 0700) and copy it instead of running ``initdb`` again: startup drops from
        about two seconds to a few tenths. The copy holds no secret (a new cluster with
        trust authentication and no passwords).
    """

    name = "postgres"
    # PostgreSQL's "fast" shutdown: roll back sessions, then exit.
    stop_signal = signal.SIGINT

    def __init__(
        self,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        tcp_host: str | None = None,
        port: int | None = None,
        tls: tuple[bytes, bytes] | None = None,
        hba: list[str] | None = None,
        settings: dict[str, str] | None = None,
        superuser: str = "postgres",
        bin_dir: str | os.PathLike[str] | None = None,
        start_timeout: float = 30.0,
        cache_initdb: bool = True,
    ) -> None:
        self.bin_dir = Path(bin_dir) if bin_dir is not None else find_bin_dir()
        self.tcp_host = tcp_host
        self.port = port if port is not None else free_port(tcp_host or "127.0.0.1")
        self.superuser = superuser
        self.start_timeout = start_timeout
        self._cache_initdb = cache_initdb
        self._tls = tls
        self._hba = hba if hba is not None else ["local all all trust"]
        self._settings = dict(settings or {})
        self._keep_data = data_dir is not None
        self._base = Path(data_dir) if data_dir is not None else None
        self._account = _server_account()

    @property
    def data_dir(self) -> Path:
        """The PostgreSQL data directory (``PGDATA``)."""
        return self._require_base() / "data"

    @property
    def socket_dir(self) -> Path:
        """The directory holding the server's Unix socket (a libpq ``host``)."""
        return self._require_base() / "socket"

    @property
    def socket_path(self) -> str:
        """The server's Unix socket file (in :attr:`socket_dir`, named by the port)."""
        from warmdb.emulator.upstream import socket_path

        return socket_path(self.socket_dir, self.port)

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self._require_base() / "postgres.log"

    def _require_base(self) -> Path:
        if self._base is None:
            raise RuntimeError("the server has not been started")
        return self._base

    def version(self) -> str:
        """Return the server version, e.g. ``"15.18"``."""
        out = subprocess.run(
            [str(self.bin_dir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            check=True,
        )
        # "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)": the first dotted number.
        match = re.search(r"\d+(?:\.\d+)+", out.stdout)
        return match.group(0) if match else "unknown"

    def _chown(self, path: Path) -> None:
        if self._account is None:
            return
        for root, dirs, files in os.walk(path):
            for name in [*dirs, *files]:
                os.chown(Path(root) / name, *self._account)
        os.chown(path, *self._account)

    def _initdb(self) -> None:
        base = self._require_base()
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        # Private whatever umask or earlier runs left: the socket below is trusted, so no
        # other OS user may reach it, and the data files are nobody else's business.
        for path in (base, self.socket_dir):
            path.chmod(0o700)
        self._chown(base)
        if (self.data_dir / "PG_VERSION").exists():
            return
        template = _template_dir(self.bin_dir, self.superuser) if self._cache_initdb else None
        if template is not None and (template / "PG_VERSION").is_file():
            # A copy of a cluster initdb made before: a tenth of initdb's second or two.
            shutil.copytree(template, self.data_dir, symlinks=True, dirs_exist_ok=True)
            self.data_dir.chmod(0o700)
            self._chown(self.data_dir)
            return
        with open(base / "initdb.log", "wb") as log:
            process = self._run_as_server(
                [
                    str(self.bin_dir / "initdb"),
                    "--pgdata",
                    str(self.data_dir),
                    "--username",
                    self.superuser,
                    "--auth",
                    "trust",
                    "--encoding",
                    "UTF8",
                    "--no-sync",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "LC_ALL": "C"},
            )
            if process.wait() != 0:
                raise WarmdbError(f"initdb failed; see {base / 'initdb.log'}")
        if template is not None:
            _store_template(self.data_dir, template)

    def _write_config(self) -> None:
        (self.data_dir / "pg_hba.conf").write_text("\n".join(self._hba) + "\n")
        if self._tls is not None:
            cert, key = self._tls
            (self.data_dir / "server.crt").write_bytes(cert)
            key_path = self.data_dir / "server.key"
            key_path.write_bytes(key)
            key_path.chmod(0o600)
            self._settings.update(ssl="on", ssl_cert_file="server.crt", ssl_key_file="server.key")
        self._chown(self.data_dir)

    def start(self) -> EmbeddedPostgres:
        """Initialise the data directory if needed and start the server; wait until ready."""
        if self._process is not None:
            raise RuntimeError("the server is already running")
        if self._base is None:
            self._base = Path(tempfile.mkdtemp(prefix="warmdb-pg-"))
        self._base.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._initdb()
        self._write_config()
        settings = {
            "listen_addresses": self.tcp_host or "",
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            # The socket file itself too: owner only (PostgreSQL's default is 0777).
            "unix_socket_permissions": "0700",
            "fsync": "off",
            "full_page_writes": "off",
            "synchronous_commit": "off",
            **self._settings,
        }
        args = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)]
        for name, value in settings.items():
            args += ["-c", f"{name}={value}"]
        self._launch(args)
        return self

    def _is_ready(self) -> bool:
        # Line 8 of postmaster.pid is the postmaster's status; "ready" once it accepts
        # connections.
        lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        return len(lines) >= 8 and lines[7].strip() == "ready"

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove a temporary data directory."""
        self._stop_process()
        if self._base is not None and not self._keep_data:
            shutil.rmtree(self._base, ignore_errors=True)
            self._base = None

    def libpq_params(self, dbname: str = "postgres") -> dict[str, str]:
        """Connection parameters for the superuser over the Unix socket (trust)."""
        return {
            "host": str(self.socket_dir),
            "port": str(self.port),
            "user": self.superuser,
            "dbname": dbname,
        }
