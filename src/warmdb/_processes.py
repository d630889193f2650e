"""Child servers that never outlive warmdb: the embedded PostgreSQL and MariaDB, PgBouncer, a
benchmark's emulator.

- :func:`unprivileged_account`: servers refuse to run as root (and should not); when warmdb
  runs as root (CI, containers), they run as an unprivileged account.
- :func:`die_with_owner`: a ``preexec_fn`` that sets the child's parent-death signal, so a
  SIGKILLed owner leaves no server behind.
- :data:`spawner`: starts children from one thread that lives as long as the process, since
  the parent-death signal fires when the *thread* that forked the child ends.
- :func:`terminate`: asks a child to shut down with its own signal, kills it if it will not.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from concurrent.futures import Future

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

__all__ = ["Spawner", "die_with_owner", "spawner", "terminate", "unprivileged_account"]

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def unprivileged_account(
    names: Iterable[str | None], *, error: Callable[[str], Exception], what: str, variable: str
) -> tuple[int, int] | None:
    """The (uid, gid) of the first existing non-root account among *names* to run a server
    as when we are root, or ``None`` when we are not root (it runs as ourselves).

    :param names: account names in order of preference (``None`` entries are skipped: an
        unset environment variable).
    :param error: builds the exception raised when no account fits.
    :param what: the server, for the message.
    :param variable: the environment variable that names an account, for the message.
    """
    if os.geteuid() != 0:
        return None
    import pwd

    for name in filter(None, names):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        if entry.pw_uid != 0:
            return entry.pw_uid, entry.pw_gid
    raise error(f"running as root and no unprivileged account to run {what} as: set {variable}")


def die_with_owner(
    sig: signal.Signals = signal.SIGQUIT,
) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get *sig* when this process (strictly: the
    forking thread) dies, or ``None`` where unsupported (not Linux).

    subprocess runs ``preexec_fn`` after its uid and gid switch (``user=``, ``group=``), which
    matters: the kernel clears the parent-death signal on any credential change.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    # prctl is variadic; PR_SET_PDEATHSIG reads its argument as an unsigned long.
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    owner = os.getpid()
    number = int(sig)

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, number)
        # The owner may have died between fork and prctl: then no signal will ever come.
        if os.getppid() != owner:
            os._exit(1)

    return hook


class Spawner:
    """Starts processes from one daemon thread that lives as long as this process.

    The parent-death signal fires when the thread that forked the child ends: started from a
    short-lived thread (a thread pool's worker, ``asyncio.to_thread``), the server would be
    killed with that thread. This thread only ends with the process.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: queue.SimpleQueue[
            tuple[Callable[[], subprocess.Popen[bytes]], Future[subprocess.Popen[bytes]]]
        ] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def popen(
        self,
        args: list[str],
        *,
        death_signal: signal.Signals = signal.SIGQUIT,
        account: tuple[int, int] | None = None,
        **kwargs: Any,
    ) -> subprocess.Popen[bytes]:
        """``subprocess.Popen(args, **kwargs)``, the child set to get *death_signal* when
        this process dies.

        :param account: ``(uid, gid)`` to run the child as (see :func:`unprivileged_account`),
            with no supplementary groups; ``None``: as ourselves.
        """
        if account is not None:
            kwargs.update(user=account[0], group=account[1], extra_groups=[])
        hook = die_with_owner(death_signal)
        if hook is None:
            return subprocess.Popen(args, **kwargs)
        # CPython warns that preexec_fn may deadlock in a threaded parent: the forked child
        # runs Python. This hook only calls prctl (resolved in the parent) and getppid.
        kwargs["preexec_fn"] = hook

        def start() -> subprocess.Popen[bytes]:
            return subprocess.Popen(args, **kwargs)

        future: Future[subprocess.Popen[bytes]] = Future()
        with self._lock:
            # A forked child of this process has the attribute but not the thread.
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._serve, name="warmdb-spawner", daemon=True
                )
                self._thread.start()
            self._requests.put((start, future))
        return future.result()

    def _serve(self) -> None:
        while True:
            start, future = self._requests.get()
            try:
                future.set_result(start())
            except BaseException as exc:  # handed to the caller, which re-raises it
                future.set_exception(exc)


def terminate(
    process: subprocess.Popen[bytes], sig: signal.Signals, *, timeout: float = 15.0
) -> None:
    """Stop *process* with *sig* (the server's own shutdown signal); kill it if it is still
    running after *timeout* seconds. Returns once it has exited."""
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


#: The process's one spawner.
spawner = Spawner()
