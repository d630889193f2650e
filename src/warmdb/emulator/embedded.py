"""What the embedded upstream servers (PostgreSQL, MariaDB) share: a child process that runs
as the server account, dies with its owner, is waited for until ready and stopped with its
own shutdown signal.

:class:`EmbeddedServer` is their base; :class:`~warmdb.emulator.postgres.EmbeddedPostgres`
and :class:`~warmdb.emulator.mysql.mariadb.EmbeddedMariaDB` add the server: its files, its
options and how it says it is ready.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from typing import Any, TypeVar

from warmdb._processes import spawner, terminate
from warmdb.errors import WarmdbError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["EmbeddedServer"]

_ServerT = TypeVar("_ServerT", bound="EmbeddedServer")


class EmbeddedServer:
    """A server process of our own. Use it as a context manager, or :meth:`start` and
    :meth:`stop`.

    Subclasses set :attr:`name` (the program, for messages), :attr:`stop_signal` (its clean
    shutdown), :meth:`_is_ready`, ``start_timeout``, ``_account`` (from
    :func:`warmdb._processes.unprivileged_account`), :attr:`log_path` and :attr:`socket_path`.
    """

    name = "server"
    stop_signal = signal.SIGTERM
    #: Seconds between readiness checks at start.
    ready_interval = 0.02
    start_timeout: float
    _account: tuple[int, int] | None
    _process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        raise NotImplementedError

    @property
    def socket_path(self) -> str:
        """The server's Unix socket, which it trusts: only its owner can reach it."""
        raise NotImplementedError

    def start(self: _ServerT) -> _ServerT:
        """Start the server; return once it accepts connections."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the server."""
        raise NotImplementedError

    @property
    def is_running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def __enter__(self: _ServerT) -> _ServerT:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run_as_server(self, args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start *args* as the server account, set to die with this process."""
        return spawner.popen(args, account=self._account, **kwargs)

    def _launch(self, args: list[str]) -> None:
        """Start the server itself and return once :meth:`_is_ready`; stop it (and clean up)
        if it fails.

        It runs in a session of its own (a terminal's Ctrl-C is the owner's to handle), its
        output appended to :attr:`log_path`.
        """
        try:
            with open(self.log_path, "ab") as log:
                if self._account is not None:
                    # The server's own account may reopen it by name (MariaDB's --log-error).
                    os.fchown(log.fileno(), *self._account)
                self._process = self._run_as_server(
                    args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            self._await_ready()
        except BaseException:
            self.stop()
            raise

    def _is_ready(self) -> bool:
        """Whether the server accepts connections now (an ``OSError`` counts as not yet)."""
        raise NotImplementedError

    def _exited_message(self) -> str:
        """Why the server exited at start, for the error: where to look by default."""
        return f"{self.name} exited at start; see {self.log_path}"

    def _await_ready(self) -> None:
        """Poll :meth:`_is_ready` every :attr:`ready_interval` seconds.

        :raises WarmdbError: the server exited, or was not ready within ``start_timeout``.
        """
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise WarmdbError(self._exited_message())
            with contextlib.suppress(OSError):
                if self._is_ready():
                    return
            time.sleep(self.ready_interval)
        raise WarmdbError(
            f"{self.name} did not start within {self.start_timeout} s; see {self.log_path}"
        )

    def _stop_process(self) -> None:
        """Stop the server process, if it runs (killed if it will not stop)."""
        process, self._process = self._process, None
        if process is not None:
            terminate(process, self.stop_signal)
