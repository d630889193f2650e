"""An embedded, throwaway MariaDB server: the MySQL emulator's upstream.

:class:`EmbeddedMariaDB` runs ``mariadb-install-db`` into a private directory and starts
``mariadbd`` on it, listening on a Unix socket in that directory only (no TCP). It uses
Debian's ``mariadb-server`` binaries (``/usr/sbin/mariadbd``, ``mariadb-install-db``), found
on ``PATH`` or named by ``$WARMDB_MARIADB_BIN`` (a directory holding both).

When the current user is root, both run as an unprivileged account (``$WARMDB_MARIADB_USER``,
else ``mysql``, else ``nobody``) that owns the directory, mode 0700: started as that user
rather than with ``mariadbd --user``, because the kernel clears the parent-death signal when a
process changes its own credentials. Like :class:`~warmdb.emulator.postgres.EmbeddedPostgres`
the server dies with the process that started it (``PR_SET_PDEATHSIG``; MariaDB shuts down on
the SIGQUIT).

Startup is kept short: no test database, no anonymous users, no binary log, a small buffer
pool and redo log, and no durability (``innodb_flush_log_at_trx_commit=0``,
``innodb_doublewrite=0``): the data is thrown away anyway.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

from warmdb._processes import unprivileged_account
from warmdb.emulator.embedded import EmbeddedServer
from warmdb.errors import WarmdbError

__all__ = ["EmbeddedMariaDB", "MariaDBNotFoundError", "find_binaries"]

_SERVER = "mariadbd"
_INSTALL = "mariadb-install-db"
_SBIN = Path("/usr/sbin")


class MariaDBNotFoundError(WarmdbError):
    """No MariaDB server binaries were found."""

    __module__ = "warmdb.emulator"


def find_binaries() -> tuple[Path, Path]:
    """Return the paths of ``mariadbd`` and ``mariadb-install-db``.

    Looks in ``$WARMDB_MARIADB_BIN``, then ``PATH``, then ``/usr/sbin`` and ``/usr/bin``.

    :raises MariaDBNotFoundError: either is missing.
    """
    directories = [os.environ.get("WARMDB_MARIADB_BIN")]
    found: list[Path] = []
    for name in (_SERVER, _INSTALL):
        candidates = [Path(d) / name for d in directories if d]
        on_path = shutil.which(name)
        if on_path:
            candidates.append(Path(on_path))
        candidates += [_SBIN / name, Path("/usr/bin") / name]
        path = next((c for c in candidates if c.is_file() and os.access(c, os.X_OK)), None)
        if path is None:
            raise MariaDBNotFoundError(
                f"{name} not found: install Debian's 'mariadb-server' package "
                "or set WARMDB_MARIADB_BIN"
            )
        found.append(path)
    return found[0], found[1]


def _server_account() -> tuple[int, int] | None:
    """The (uid, gid) to run the server as, or ``None`` to run it as ourselves."""
    names = [os.environ.get("WARMDB_MARIADB_USER"), "mysql", "nobody"]
    return unprivileged_account(
        names, error=MariaDBNotFoundError, what="MariaDB", variable="WARMDB_MARIADB_USER"
    )


# The SQL mariadb-install-db feeds to "mariadbd --bootstrap", without the help tables (2.4 MB)
# and the sys schema (0.6 MB): most of the install time, and nothing the emulator needs.
_BOOTSTRAP_SQL = (
    "mysql_system_tables.sql",
    "mysql_system_tables_data.sql",
    "maria_add_gis_sp_bootstrap.sql",
)
# The script's own preamble; a NULL socket user gives root@localhost an empty password.
_BOOTSTRAP_PREFIX = (
    b"create database if not exists mysql;\nuse mysql;\nSET @auth_root_socket=NULL;\n"
)

# Initialised data directories by (server binary, account), for the life of the process.
_templates: dict[tuple[Path, tuple[int, int] | None], Path] = {}
_templates_lock = threading.Lock()


def _remove_templates() -> None:
    for template in _templates.values():
        shutil.rmtree(template, ignore_errors=True)


def _bootstrap_sql_dir(server_path: Path) -> Path | None:
    """Where the system tables' SQL is (Debian: /usr/share/mysql); ``None`` if not found."""
    prefix = server_path.parent.parent / "share"
    for directory in (prefix / "mysql", prefix / "mariadb", Path("/usr/share/mysql")):
        if all((directory / name).is_file() for name in _BOOTSTRAP_SQL):
            return directory
    return None


def _tail(path: Path, lines: int = 3) -> str:
    """The last lines of a log, for an error message (the directory is removed on failure)."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return " | ".join(text[-lines:]) or "empty log"


class EmbeddedMariaDB(EmbeddedServer):
    """A MariaDB server in a private temporary directory, reachable on a Unix socket.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`::

        with EmbeddedMariaDB(settings={"wait_timeout": "28800"}) as db:
            print(db.socket_path)

    :param settings: extra server options (``--name=value``), e.g. ``wait_timeout``.
    :param start_timeout: seconds to wait for the server to accept connections.
    """

    # SIGTERM (the default stop signal) is MariaDB's normal shutdown.
    name = "mariadbd"
    ready_interval = 0.01

    def __init__(
        self, *, settings: dict[str, str] | None = None, start_timeout: float = 30.0
    ) -> None:
        self.server_path, self.install_path = find_binaries()
        self.start_timeout = start_timeout
        self._settings = dict(settings or {})
        self._account = _server_account()
        self._base: Path | None = None

    # Paths --------------------------------------------------------------------------------

    def _require_base(self) -> Path:
        if self._base is None:
            raise RuntimeError("the server has not been started")
        return self._base

    @property
    def data_dir(self) -> Path:
        """The server's data directory."""
        return self._require_base() / "data"

    @property
    def socket_path(self) -> str:
        """The server's Unix socket."""
        return str(self._require_base() / "mysqld.sock")

    @property
    def log_path(self) -> Path:
        """The server's error log."""
        return self._require_base() / "mariadb.log"

    # Lifecycle ----------------------------------------------------------------------------

    def _options(self, base: Path) -> list[str]:
        # --no-defaults must come first: no /etc/mysql/my.cnf, no ~/.my.cnf.
        return [
            "--no-defaults",
            f"--datadir={base / 'data'}",
            f"--tmpdir={base / 'tmp'}",
            f"--basedir={self.server_path.parent.parent}",
            "--innodb-buffer-pool-size=16M",
            "--innodb-log-file-size=8M",
            "--innodb-temp-data-file-path=ibtmp1:1M:autoextend",
            "--innodb-flush-log-at-trx-commit=0",
            "--innodb-doublewrite=0",
            "--skip-log-bin",
            "--skip-name-resolve",
        ]

    def _make_base(self, prefix: str) -> Path:
        # mkdtemp creates the directory 0700; the server account must own it.
        base = Path(tempfile.mkdtemp(prefix=prefix))
        (base / "tmp").mkdir(mode=0o700)
        if self._account is not None:
            for path in (base, base / "tmp"):
                os.chown(path, *self._account)
        return base

    def _install(self, base: Path) -> None:
        """Create the system tables in ``base/data``."""
        sql_dir = _bootstrap_sql_dir(self.server_path)
        log_path = base / "install.log"
        with open(log_path, "wb") as log:
            if sql_dir is None:
                args = [
                    str(self.install_path),
                    *self._options(base),
                    "--skip-test-db",
                    # root@localhost without a password, on a socket only we can reach:
                    # the emulator logs in with it to create the RDS master user.
                    "--auth-root-authentication-method=normal",
                ]
                script = None
            else:
                # What mariadb-install-db does, minus its shell and the help and sys tables.
                (base / "data").mkdir(mode=0o700)
                if self._account is not None:
                    os.chown(base / "data", *self._account)
                args = [
                    str(self.server_path),
                    *self._options(base),
                    "--bootstrap",
                    "--log-warnings=0",
                    "--enforce-storage-engine=",
                    "--max-allowed-packet=8M",
                    "--net-buffer-length=16K",
                ]
                script = _BOOTSTRAP_PREFIX + b"".join(
                    (sql_dir / name).read_bytes() for name in _BOOTSTRAP_SQL
                )
            process = self._run_as_server(
                args,
                stdin=subprocess.PIPE if script is not None else subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "LC_ALL": "C"},
            )
            process.communicate(script)
            if process.returncode != 0:
                raise WarmdbError(f"MariaDB's system tables not created: {_tail(log_path)}")

    def _populate(self, base: Path) -> None:
        """Fill ``base/data`` from this process's template, made on first use."""
        key = (self.server_path, self._account)
        with _templates_lock:
            template = _templates.get(key)
            if template is None:
                template = self._make_base("warmdb-mariadb-template-")
                try:
                    self._install(template)
                except BaseException:
                    shutil.rmtree(template, ignore_errors=True)
                    raise
                if not _templates:
                    atexit.register(_remove_templates)
                _templates[key] = template
        shutil.copytree(template / "data", base / "data", symlinks=True)
        if self._account is not None:
            for root, dirs, files in os.walk(base / "data"):
                for name in [*dirs, *files]:
                    os.chown(Path(root) / name, *self._account, follow_symlinks=False)
            os.chown(base / "data", *self._account)

    def start(self) -> EmbeddedMariaDB:
        """Create the data directory, start the server and wait until it accepts logins."""
        if self._process is not None:
            raise RuntimeError("the server is already running")
        self._base = self._make_base("warmdb-mariadb-")
        try:
            self._populate(self._base)
        except BaseException:
            self.stop()
            raise
        args = [
            str(self.server_path),
            *self._options(self._base),
            "--skip-networking",
            f"--socket={self.socket_path}",
            f"--pid-file={self._base / 'mariadbd.pid'}",
            f"--log-error={self.log_path}",
            "--innodb-buffer-pool-load-at-startup=0",
            "--innodb-buffer-pool-dump-at-shutdown=0",
            *(f"--{name.replace('_', '-')}={value}" for name, value in self._settings.items()),
        ]
        self._launch(args)
        return self

    def _is_ready(self) -> bool:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(1.0)
            sock.connect(self.socket_path)
            # The greeting comes once the server is ready to authenticate.
            return bool(sock.recv(1))

    def _exited_message(self) -> str:
        # The directory, log included, is removed on failure: its last lines go in the error.
        return f"mariadbd exited at start: {_tail(self.log_path)}"

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        # With no durability there is little to do at shutdown.
        self._stop_process()
        base, self._base = self._base, None
        if base is not None:
            shutil.rmtree(base, ignore_errors=True)

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._process.pid if self._process is not None else None

    def version(self) -> str:
        """The server version, e.g. ``"10.11.19"``."""
        out = subprocess.run(
            [str(self.server_path), "--version"], capture_output=True, text=True, check=True
        )
        # "mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu": after "Ver".
        match = re.search(r"Ver\s+(\d+(?:\.\d+)+)", out.stdout)
        return match.group(1) if match else "unknown"
