"""Finding, starting, signalling and stopping one PgBouncer process.

PgBouncer refuses to run as root: when the sidecar is root, PgBouncer runs as an unprivileged
account (``$WARMDB_PGBOUNCER_USER``, else ``pgbouncer``, ``postgres``, ``nobody``) that owns the
sidecar's private directory.

PgBouncer dies with the thread that started it, on Linux, even when the sidecar is killed with
SIGKILL: it is started with a parent-death signal (``prctl(PR_SET_PDEATHSIG, SIGKILL)``). The
kernel sends it when the *thread* that forked the child ends, so the supervisor starts every
PgBouncer from its own thread, which lives exactly as long as the supervision (see
:mod:`warmdb.sidecar.supervisor`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from warmdb._processes import die_with_owner, unprivileged_account
from warmdb.errors import ConfigurationError
from warmdb.sidecar.pgbouncer import PgBouncerError

TYPE_CHECKING = False
if TYPE_CHECKING:
    pass

__all__ = ["PgBouncerProcess", "find_pgbouncer", "run_as_account"]

#: Where PgBouncer is looked for after $WARMDB_PGBOUNCER and PATH: Debian's package, and a
#: Lambda layer's ``bin/`` (layers are unpacked under /opt).
_KNOWN_PATHS = ("/usr/sbin/pgbouncer", "/opt/bin/pgbouncer")
_ACCOUNTS = ("pgbouncer", "postgres", "nobody")


def find_pgbouncer(path: str | None = None) -> str:
    """The PgBouncer binary: *path*, ``$WARMDB_PGBOUNCER``, ``pgbouncer`` on PATH, or a known place.

    :raises ConfigurationError: none of them is an executable file.
    """
    if path is not None:
        if not os.access(path, os.X_OK) or not os.path.isfile(path):
            raise ConfigurationError(f"pgbouncer={path!r} is not an executable file")
        return path
    candidates = [os.environ.get("WARMDB_PGBOUNCER"), shutil.which("pgbouncer"), *_KNOWN_PATHS]
    for candidate in filter(None, candidates):
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise ConfigurationError(
        "PgBouncer not found: install it (Debian: apt-get install pgbouncer), put it on PATH, "
        "set WARMDB_PGBOUNCER, or pass --pgbouncer PATH (in a Lambda layer: /opt/bin/pgbouncer)"
    )


def run_as_account() -> tuple[int, int] | None:
    """The (uid, gid) to run PgBouncer as, or ``None`` to run it as ourselves (not root).

    :raises ConfigurationError: running as root and no unprivileged account exists.
    """
    names = [os.environ.get("WARMDB_PGBOUNCER_USER"), *_ACCOUNTS]
    return unprivileged_account(
        names, error=ConfigurationError, what="PgBouncer", variable="WARMDB_PGBOUNCER_USER"
    )


class PgBouncerProcess:
    """One running PgBouncer, started in the foreground with a configuration file.

    :param binary: the PgBouncer executable.
    :param ini_path: its ``pgbouncer.ini``.
    :param log_path: where its standard output and error go: its log.
    :param account: ``(uid, gid)`` to run as, or ``None``.
    """

    def __init__(
        self,
        binary: str,
        ini_path: Path,
        log_path: Path,
        account: tuple[int, int] | None,
    ) -> None:
        self.binary = binary
        self.ini_path = ini_path
        self.log_path = log_path
        self.account = account
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The process id, or ``None`` before :meth:`start`."""
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        """Start PgBouncer (from the calling thread, which it dies with)."""
        kwargs: dict[str, object] = {}
        if self.account is not None:
            kwargs.update(user=self.account[0], group=self.account[1], extra_groups=[])
        # SIGKILL, not a shutdown signal: an orphaned PgBouncer has nobody to wait for. The
        # sidecar's supervisor thread starts it and lives as long as the sidecar.
        hook = die_with_owner(signal.SIGKILL)
        if hook is not None:
            # CPython warns that preexec_fn may deadlock in a threaded parent: the forked
            # child runs Python. This hook only calls prctl (resolved in the parent) and
            # getppid.
            kwargs["preexec_fn"] = hook
        with open(self.log_path, "ab") as log:
            try:
                self._process = subprocess.Popen(  # type: ignore[call-overload]
                    [self.binary, str(self.ini_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    **kwargs,
                )
            except OSError as exc:
                raise PgBouncerError(f"cannot start {self.binary!r}: {exc.strerror}") from exc

    def wait_ready(self, host: str, port: int, timeout: float) -> None:
        """Wait until PgBouncer accepts TCP connections on *host*:*port*.

        :raises PgBouncerError: it exited, or was not listening within *timeout* seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            code = self.poll()
            if code is not None:
                raise PgBouncerError(
                    f"PgBouncer exited at start (status {code}); see {self.log_path}"
                )
            with contextlib.suppress(OSError), socket.create_connection((host, port), 0.5):
                return
            if time.monotonic() > deadline:
                raise PgBouncerError(
                    f"PgBouncer did not listen on {host}:{port} within {timeout:g} s; "
                    f"see {self.log_path}"
                )
            time.sleep(0.02)

    def poll(self) -> int | None:
        """The exit status, or ``None`` while it runs (or before it started)."""
        return None if self._process is None else self._process.poll()

    def reload(self) -> None:
        """Ask PgBouncer to re-read its configuration and auth file (SIGHUP)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGHUP)

    def stop(self, timeout: float) -> None:
        """Stop PgBouncer within *timeout* seconds: safe shutdown (SIGINT), then SIGKILL.

        SIGINT lets transactions in flight finish (every version); SIGTERM means different
        things across versions (immediate before 1.23, waiting for clients after), so it is
        not used.
        """
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
