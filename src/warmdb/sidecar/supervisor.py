"""The sidecar: PgBouncer started, fed fresh IAM tokens, restarted when it dies, stopped cleanly.

:class:`Sidecar` does everything ``warmdb sidecar`` does, for scripts and tests::

    with Sidecar(host="abc.dsql.us-east-1.on.aws") as sidecar:
        state = sidecar.state    # host, port, user, password_file... (see warmdb.sidecar.state)

:meth:`Sidecar.start` prepares a private directory (mode 0700), signs a token, writes
``pgbouncer.ini``, the auth file (the token), the HBA file and a generated client password,
starts PgBouncer and returns once it accepts connections. From then on one supervisor thread
owns PgBouncer: it starts it (so PgBouncer dies with that thread, see
:mod:`warmdb.sidecar.process`), refreshes the token on the :mod:`~warmdb.sidecar.schedule`,
restarts PgBouncer with backoff when it exits, and stops it when asked.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import stat
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path

from warmdb.errors import ConfigurationError, WarmdbError
from warmdb.sidecar import schedule
from warmdb.sidecar.pgbouncer import (
    Capabilities,
    check_password,
    default_settings,
    detect,
    render_auth_file,
    render_hba,
    render_ini,
)
from warmdb.sidecar.process import PgBouncerProcess, find_pgbouncer, run_as_account
from warmdb.sidecar.state import SidecarState, write_private_file, write_state

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import TypeVar

    from warmdb.auth.credentials import Credentials
    from warmdb.endpoint import Endpoint

    T = TypeVar("T")

__all__ = ["Sidecar"]

logger = logging.getLogger(__name__)

#: How often the supervisor looks at PgBouncer and the clock, seconds.
POLL_INTERVAL = 0.2
#: A PgBouncer that ran this long before exiting restarts without backoff.
STABLE_RUN = 10.0
#: System CA bundles for ``sslrootcert="system"``: Debian, then Amazon Linux / RHEL.
_SYSTEM_CA_FILES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")


class Sidecar:
    """A supervised PgBouncer in front of one IAM-authenticated PostgreSQL endpoint.

    The endpoint arguments are those of warmdb's ``connect()`` functions and are resolved the
    same way (:func:`warmdb.endpoint.resolve`), without the ``PG*`` variables, which describe
    the clients' side.

    :param host: the server's host name (DSQL endpoint or cluster id, RDS endpoint).
    :param port: the server's port, 5432 by default.
    :param region: the AWS region; from the host name or ``AWS_REGION`` by default.
    :param user: the database user, ``admin`` for DSQL by default.
    :param dbname: the server's database (and the name clients ask for), ``postgres`` by
        default.
    :param auth: ``"dsql"`` or ``"rds"``; detected from the host name by default.
    :param profile: the AWS profile to sign with; environment credentials by default.
    :param sslmode: ``require``, ``verify-ca`` or ``verify-full``. DSQL: ``verify-full``, the
        default and the only mode that works (PgBouncer sends SNI, which DSQL needs, only in
        it). RDS: ``require`` by default.
    :param sslrootcert: the CA file for ``verify-ca``/``verify-full``, or ``"system"``.
    :param token_duration: DSQL token lifetime, seconds; see :func:`.schedule.plan_refresh`.
    :param listen_host: where PgBouncer listens, ``127.0.0.1`` by default.
    :param listen_port: its TCP port, 6432 by default.
    :param pool_size: server connections at most, 20 by default.
    :param client_user: the user name clients log in as, ``warmdb`` by default.
    :param pgbouncer: the PgBouncer binary; :func:`.process.find_pgbouncer` by default.
    :param state_path: where to write the state file; its directory becomes the private
        directory (created 0700, or checked to be ours and 0700). A temporary directory by
        default, removed at stop.
    :param settings: ``[pgbouncer]`` settings that replace the defaults
        (:func:`.default_settings`); ``None`` values remove one.
    :param time_scale: divides the refresh interval (tests against an emulator whose tokens
        expire faster).
    :param start_timeout: seconds PgBouncer has to start listening, 10 by default.
    :param shutdown_timeout: seconds a safe shutdown may take before SIGKILL, 1.5 by default
        (Lambda gives extensions about 2 seconds at SHUTDOWN).
    :param credentials: returns the AWS credentials to sign with;
        :func:`warmdb.auth.credentials.credentials_source` by default.
    :param clock: returns the Unix time; :func:`time.time` unless a test moves it.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int | None = None,
        region: str | None = None,
        user: str | None = None,
        dbname: str | None = None,
        auth: str | None = None,
        profile: str | None = None,
        sslmode: str | None = None,
        sslrootcert: str | None = None,
        token_duration: int | None = None,
        listen_host: str = "127.0.0.1",
        listen_port: int = 6432,
        pool_size: int = 20,
        client_user: str = "warmdb",
        pgbouncer: str | None = None,
        state_path: str | os.PathLike[str] | None = None,
        settings: Mapping[str, object] | None = None,
        time_scale: float = 1.0,
        start_timeout: float = 10.0,
        shutdown_timeout: float = 1.5,
        credentials: Callable[[], Credentials] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.endpoint = _resolve_endpoint(
            host=host,
            port=port,
            region=region,
            user=user,
            dbname=dbname,
            auth=auth,
            profile=profile,
            sslmode=sslmode,
            sslrootcert=sslrootcert,
        )
        if not 1 <= pool_size <= 10_000:
            raise ConfigurationError(f"pool_size={pool_size!r} must be between 1 and 10000")
        if not 1 <= listen_port <= 65535:
            raise ConfigurationError(f"listen_port={listen_port!r} must be between 1 and 65535")
        for name, value in (("start_timeout", start_timeout), ("time_scale", time_scale)):
            if not value > 0:
                raise ConfigurationError(f"{name}={value!r} must be greater than 0")
        if shutdown_timeout < 0:
            raise ConfigurationError(f"shutdown_timeout={shutdown_timeout!r} must be >= 0")
        if client_user == self.endpoint.user:
            raise ConfigurationError(
                f"client_user={client_user!r} must differ from the database user: the auth "
                "file holds the token under the database user's name"
            )
        #: The database clients ask for and PgBouncer logs in to: PostgreSQL's own
        #: ``postgres`` unless given (libpq would default to the user name, which an RDS
        #: IAM user rarely has as a database).
        self.dbname = self.endpoint.dbname or "postgres"
        self.binary = find_pgbouncer(pgbouncer)
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.pool_size = pool_size
        self.client_user = client_user
        self.token_duration = token_duration
        self.time_scale = time_scale
        self.start_timeout = start_timeout
        self.shutdown_timeout = shutdown_timeout
        self._overrides = dict(settings or {})
        self._state_path = Path(state_path) if state_path is not None else None
        self._credentials = credentials
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._process: PgBouncerProcess | None = None
        self._directory: Path | None = None
        self._made_directory = False
        self._account: tuple[int, int] | None = None
        self._state: SidecarState | None = None
        self._next_refresh = 0.0
        self._client_password = ""
        self._token_issued_at: float | None = None
        self._token_expires_at: float | None = None
        self.caps: Capabilities | None = None
        self.plan: schedule.RefreshPlan | None = None
        #: Tokens written after the first one.
        self.refreshes = 0
        #: Times PgBouncer was started again after it exited.
        self.restarts = 0

    # Lifecycle ---------------------------------------------------------------------------

    def start(self) -> Sidecar:
        """Write the files, start PgBouncer and return once it accepts connections.

        :raises ConfigurationError: bad settings, or a token PgBouncer cannot take.
        :raises CredentialsError: no AWS credentials to sign with.
        :raises PgBouncerError: PgBouncer did not start.
        """
        if self._thread is not None:
            raise RuntimeError("the sidecar is already running")
        try:
            self._prepare()
            ready: Future[None] = Future()
            self._stopping.clear()
            self._thread = threading.Thread(
                target=self._supervise, args=(ready,), name="warmdb-sidecar", daemon=True
            )
            self._thread.start()
            ready.result()
        except BaseException:
            self.stop()
            raise
        self._write_state()
        return self

    def stop(self) -> None:
        """Stop PgBouncer (bounded by ``shutdown_timeout``) and remove the secrets from disk.

        The state file, auth file and client password are removed; a temporary directory is
        removed whole. Idempotent.
        """
        self._stopping.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(self.shutdown_timeout + 5)
        directory = self._directory
        if directory is None:
            return
        if self._made_directory:
            shutil.rmtree(directory, ignore_errors=True)
        else:
            for name in (self.state_path.name, "auth.txt", "client-password"):
                with contextlib.suppress(FileNotFoundError):
                    (directory / name).unlink()
        self._directory = None
        self._state = None

    def __enter__(self) -> Sidecar:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # What clients and operators need -----------------------------------------------------

    @property
    def directory(self) -> Path:
        """The private directory (0700) holding every file of this sidecar."""
        return _running(self._directory)

    @property
    def state_path(self) -> Path:
        """The state file: what ``WARMDB_SIDECAR`` should name."""
        return self._state_path or self.directory / "state.json"

    @property
    def state(self) -> SidecarState:
        """What clients read from the state file."""
        return _running(self._state)

    @property
    def pgbouncer_pid(self) -> int | None:
        """PgBouncer's process id, or ``None`` while it is not running."""
        with self._lock:
            process = self._process
        return None if process is None or process.poll() is not None else process.pid

    def describe(self) -> dict[str, object]:
        """The running sidecar as JSON-ready data: what ``warmdb sidecar --json`` prints."""
        state = self.state
        return {
            "listen": f"{state.host}:{state.port}",
            "dbname": state.dbname,
            "user": state.user,
            "pid": state.pid,
            "pgbouncer_pid": self.pgbouncer_pid,
            "pgbouncer_version": state.pgbouncer_version,
            "prepared_statements": state.prepared_statements,
            "state_file": str(self.state_path),
            "password_file": state.password_file,
            "directory": str(self.directory),
            "unix_socket_dir": state.unix_socket_dir,
            "token_duration": self.plan.token_duration if self.plan else None,
            "refresh_interval": self.plan.refresh_interval if self.plan else None,
        }

    def request_refresh(self, *, force: bool = False) -> None:
        """Have the supervisor look at the token now (a thawed Lambda's first INVOKE).

        :param force: sign a new token even if the current one is not due.
        """
        if force:
            self._next_refresh = 0.0
        self._wake.set()

    # Preparation -------------------------------------------------------------------------

    def _prepare(self) -> None:
        self._account = run_as_account()
        self._directory = self._private_directory()
        caps = self.caps = detect(self.binary)
        self.plan = schedule.plan_refresh(
            self.endpoint.auth, caps, token_duration=self.token_duration, time_scale=self.time_scale
        )
        if self.plan.note:
            logger.warning("%s", self.plan.note)
        directory = str(self._directory)
        settings = default_settings(
            caps,
            listen_host=self.listen_host,
            listen_port=self.listen_port,
            directory=directory,
            pool_size=self.pool_size,
            client_user=self.client_user,
            sslmode=self.endpoint.sslmode or "require",
            ca_file=self._copy_ca_file(),
        )
        for name, value in self._overrides.items():
            if value is None:
                settings.pop(name, None)
            else:
                settings[name] = value
        assert self.endpoint.user is not None  # resolve() requires it for IAM
        ini = render_ini(
            dbname=self.dbname,
            server_host=self.endpoint.host,
            server_port=self.endpoint.port,
            server_dbname=self.dbname,
            server_user=self.endpoint.user,
            settings=settings,
        )
        self._client_password = secrets.token_urlsafe(24)
        self._write("client-password", self._client_password + "\n")
        self._write("hba.conf", render_hba(self.client_user))
        self._write("pgbouncer.ini", ini)
        self._refresh_token()

    def _private_directory(self) -> Path:
        if self._state_path is None:
            self._made_directory = True
            directory = Path(tempfile.mkdtemp(prefix="warmdb-sidecar-"))
        else:
            directory = self._state_path.parent
            try:
                directory.mkdir(mode=0o700, parents=True)
                self._made_directory = False
            except FileExistsError:
                info = directory.lstat()
                if not stat.S_ISDIR(info.st_mode) or info.st_uid not in (
                    os.geteuid(),
                    *(self._account or ())[:1],
                ):
                    raise ConfigurationError(
                        f"{str(directory)!r} exists and is not a directory of this user"
                    ) from None
                if info.st_mode & 0o077:
                    raise ConfigurationError(
                        f"{str(directory)!r} is readable by others (mode "
                        f"{stat.S_IMODE(info.st_mode):o}): it holds secrets; use a 0700 directory"
                    ) from None
        if self._account is not None:
            _check_reachable(directory.resolve().parent, self._account)
            os.chown(directory, *self._account)
        directory.chmod(0o700)
        return directory

    def _copy_ca_file(self) -> str | None:
        # A copy in the private directory: PgBouncer may run as another account than ours,
        # which could not read a CA file in our own private places.
        source = _ca_file(self.endpoint)
        if source is None:
            return None
        try:
            text = Path(source).read_text()
        except OSError as exc:
            raise ConfigurationError(
                f"sslrootcert={source!r} cannot be read: {exc.strerror}"
            ) from None
        self._write("server-ca.pem", text)
        return str(self.directory / "server-ca.pem")

    def _write(self, name: str, text: str) -> None:
        write_private_file(self.directory / name, text, owner=self._account)

    def _refresh_token(self) -> None:
        """Sign a new token, check it fits, write the auth file. Raises on failure."""
        from warmdb.auth.credentials import credentials_source
        from warmdb.auth.tokens import sign_token

        assert self.caps is not None
        assert self.plan is not None
        endpoint = self.endpoint
        spec = endpoint.token_spec(expires_in=self.plan.token_duration)
        source = self._credentials or credentials_source(profile=endpoint.profile)
        now = self._clock()
        token = sign_token(spec, source(), now)
        check_password(token, self.caps)
        self._write(
            "auth.txt",
            render_auth_file({spec.user: token, self.client_user: self._client_password}),
        )
        # X-Amz-Date has whole seconds: the server counts the lifetime from there.
        self._token_issued_at = float(int(now))
        self._token_expires_at = self._token_issued_at + self.plan.token_duration / self.time_scale
        # Counted from the dated second too, so the old token always keeps a third of its
        # lifetime when the new one is written.
        self._next_refresh = self._token_issued_at + self.plan.refresh_interval

    def _write_state(self) -> None:
        assert self.caps is not None
        state = SidecarState(
            host=self.listen_host,
            port=self.listen_port,
            dbname=self.dbname,
            user=self.client_user,
            password_file=str(self.directory / "client-password"),
            pgbouncer_version=self.caps.version_text,
            prepared_statements=self.caps.prepared_statements,
            pid=os.getpid(),
            unix_socket_dir=str(self.directory),
            token_issued_at=self._token_issued_at,
            token_expires_at=self._token_expires_at,
        )
        with self._lock:
            write_state(self.state_path, state, owner=self._account)
            self._state = state

    # Supervision (the supervisor thread) -------------------------------------------------

    def _supervise(self, ready: Future[None]) -> None:
        failures = 0
        try:
            while not self._stopping.is_set():
                process = PgBouncerProcess(
                    self.binary,
                    self.directory / "pgbouncer.ini",
                    self.directory / "pgbouncer.log",
                    self._account,
                )
                try:
                    process.start()
                    with self._lock:
                        self._process = process
                    process.wait_ready(self.listen_host, self.listen_port, self.start_timeout)
                except WarmdbError as exc:
                    process.stop(0)
                    if not ready.done():
                        ready.set_exception(exc)
                        return
                    failures += 1
                    logger.warning("PgBouncer did not restart: %s", exc)
                    self._stopping.wait(schedule.restart_delay(failures))
                    continue
                if not ready.done():
                    ready.set_result(None)
                started = time.monotonic()
                self._watch(process)
                if self._stopping.is_set():
                    break
                ran = time.monotonic() - started
                failures = failures + 1 if ran < STABLE_RUN else 1
                self.restarts += 1
                delay = schedule.restart_delay(failures)
                logger.warning(
                    "PgBouncer exited with status %s after %.1f s; restarting in %.1f s",
                    process.poll(),
                    ran,
                    delay,
                )
                self._stopping.wait(delay)
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            else:
                logger.exception("the sidecar's supervisor failed")
            raise
        finally:
            with self._lock:
                running, self._process = self._process, None
            if running is not None:
                running.stop(self.shutdown_timeout)

    def _watch(self, process: PgBouncerProcess) -> None:
        """Refresh tokens on schedule while *process* runs; return when it exits or at stop."""
        while not self._stopping.is_set() and process.poll() is None:
            now = self._clock()
            if now >= self._next_refresh:
                self._refresh(process)
            self._wake.wait(max(0.0, min(POLL_INTERVAL, self._next_refresh - self._clock())))
            self._wake.clear()

    def _refresh(self, process: PgBouncerProcess) -> None:
        assert self.plan is not None
        try:
            self._refresh_token()
        except WarmdbError as exc:
            # The current token still has a third of its lifetime: try again soon.
            retry = self.plan.refresh_interval / 20
            logger.warning("token refresh failed (%s); trying again in %.1f s", exc, retry)
            self._next_refresh = self._clock() + retry
            return
        process.reload()
        self._write_state()
        self.refreshes += 1
        logger.info("new token written; PgBouncer reloaded (refresh %d)", self.refreshes)


def _check_reachable(directory: Path, account: tuple[int, int]) -> None:
    """Refuse a private directory inside a directory PgBouncer's account cannot enter."""
    uid, gid = account
    for parent in (directory, *directory.parents):
        info = parent.stat()
        if info.st_uid == uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid == gid:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            raise ConfigurationError(
                f"PgBouncer runs as uid {uid}, which cannot enter {str(parent)!r}: choose a "
                "state file path under a directory others may traverse (e.g. /tmp)"
            )


def _running(value: T | None) -> T:
    """*value*, which exists while the sidecar runs."""
    if value is None:
        raise RuntimeError("the sidecar is not running")
    return value


def _resolve_endpoint(**kwargs: object) -> Endpoint:
    from warmdb.endpoint import resolve

    # Only AWS_* settings: PG* variables and WARMDB_SIDECAR describe the clients' side.
    environ = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    endpoint, _, extra = resolve(
        None, {k: v for k, v in kwargs.items() if v is not None}, environ=environ
    )
    assert not extra
    if not endpoint.uses_token:
        raise ConfigurationError(
            f"host {endpoint.host!r} does not use IAM authentication: pass auth='dsql' or "
            "auth='rds' (--auth)"
        )
    if endpoint.auth == "dsql" and kwargs.get("sslmode") is None:
        # DSQL refuses a TLS handshake without SNI, and PgBouncer (every release up to 1.25)
        # sends SNI only in verify-full mode (sbuf_tls_connect in src/sbuf.c).
        return resolve(None, {**kwargs, "sslmode": "verify-full"}, environ=environ)[0]
    if endpoint.auth == "dsql" and endpoint.sslmode != "verify-full":
        raise ConfigurationError(
            f"sslmode={endpoint.sslmode!r}: DSQL needs SNI, which PgBouncer sends only with "
            "sslmode='verify-full' (the default; the system CA bundle verifies DSQL)"
        )
    if endpoint.sslmode not in ("require", "verify-ca", "verify-full"):
        raise ConfigurationError(
            f"sslmode={endpoint.sslmode!r}: tokens are sent only over TLS "
            "(require, verify-ca or verify-full)"
        )
    return endpoint


def _ca_file(endpoint: Endpoint) -> str | None:
    if endpoint.sslmode == "require":
        return None
    if endpoint.sslrootcert not in (None, "system"):
        return endpoint.sslrootcert
    for path in _SYSTEM_CA_FILES:
        if os.path.isfile(path):
            return path
    raise ConfigurationError(
        f"sslmode={endpoint.sslmode!r} needs a CA file: pass sslrootcert (--sslrootcert)"
    )
