"""What ``warmdb bench`` and ``warmdb probe`` run against: the embedded emulator or a host.

With no ``--host``, :func:`open_server` starts the DSQL emulator (:mod:`warmdb.emulator`: TLS,
IAM tokens checked, DSQL's limits). For timings it runs in a process of its own
(``warmdb emulate --json``, :class:`EmulatorProcess`): in this process its relay threads would
compete with the client under test for the interpreter lock and slow every Python-heavy
connect path. The concurrency mode keeps it in process, for its live connection count. Its
credentials go into the process environment for the run, as Lambda does:
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` (temporary
credentials, so tokens are as long as on Lambda).
warmdb connects to ``localhost`` with ``auth="dsql"`` and ``sslmode=require``: by name, so
that the drivers send SNI, which DSQL and the emulator require (the emulator accepts tokens
signed for ``localhost``).

The baselines log in as they would in real life:

- the raw driver sends a *static* password: one token, signed before the run and sent
  unchanged on every connect (a token is the only password DSQL, and the emulator, accept);
- aurora-dsql-python-connector gets the endpoint's host name, which it needs to contain
  ``.dsql`` (it treats anything else as a cluster id), and ``hostaddr=127.0.0.1`` so libpq
  skips DNS. Drivers without ``hostaddr`` (asyncpg) cannot reach the emulator this way.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
from dataclasses import dataclass, field

from warmdb._processes import die_with_owner

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from typing import Any

    from warmdb.bench.variants import Variant
    from warmdb.emulator.mysql.service import MySQLEmulator
    from warmdb.emulator.service import Emulator

__all__ = ["BenchServer", "ConnectionMonitor", "open_server"]

#: The environment variables a run replaces, and restores afterwards.
_AWS_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")


@dataclass
class BenchServer:
    """An endpoint to measure, and how every variant reaches it.

    :ivar description: one line for the report (``embedded DSQL emulator 127.0.0.1:5432``).
    :ivar kwargs: warmdb's ``connect()`` arguments (also for ``warm()``, pools and engines).
    :ivar environment: variables set for the run and for cold-start processes.
    :ivar aurora_host: the host name to give aurora-dsql-python-connector.
    :ivar aurora_hostaddr: the address to give it as ``hostaddr``, or ``None`` for DNS.
    :ivar emulator: the embedded emulator, when there is one.
    :ivar notes: lines the report prints under its header.
    """

    description: str
    kwargs: dict[str, Any]
    environment: dict[str, str] = field(default_factory=dict)
    aurora_host: str | None = None
    aurora_hostaddr: str | None = None
    emulator: Emulator | MySQLEmulator | None = None
    process: EmulatorProcess | None = None
    notes: list[str] = field(default_factory=list)

    def aurora_kwargs(self, *, has_hostaddr: bool) -> tuple[dict[str, Any] | None, str]:
        """aurora-dsql-python-connector's ``connect()`` arguments, or ``None`` and why not."""
        if self.aurora_host is None or ".dsql" not in self.aurora_host:
            return None, "the connector needs a DSQL host name (it treats others as cluster ids)"
        if self.aurora_hostaddr is not None and not has_hostaddr:
            return None, (
                f"the driver has no hostaddr, and {self.aurora_host} only exists inside this run"
            )
        kwargs: dict[str, Any] = {
            "host": self.aurora_host,
            "user": self.kwargs.get("user", "admin"),
            "region": self.kwargs.get("region"),
        }
        if "port" in self.kwargs:
            kwargs["port"] = self.kwargs["port"]
        if self.aurora_hostaddr is not None:
            kwargs["hostaddr"] = self.aurora_hostaddr
        if "sslmode" in self.kwargs:
            kwargs["sslmode"] = self.kwargs["sslmode"]
        return {k: v for k, v in kwargs.items() if v is not None}, ""

    @contextlib.contextmanager
    def connection_monitor(self, variant: Variant) -> Iterator[ConnectionMonitor | None]:
        """Sample the server's open connections during the block; ``None`` when unknown.

        The embedded emulator counts them itself (sampled every 5 ms); a real endpoint is
        asked on a connection of its own (:mod:`warmdb.bench.activity`, every 50 ms). When it
        cannot be asked, a note says why and the block gets ``None``.
        """
        from warmdb.bench.activity import SAMPLE_INTERVAL, ActivitySampler, SamplerError

        emulator = self.emulator
        if emulator is not None:
            with ConnectionMonitor(lambda: emulator.stats.current) as monitor:
                yield monitor
            return
        try:
            sampler = ActivitySampler(variant, self.kwargs)
        except SamplerError as exc:
            note = f"peak server connections not measured: {exc}"
            if note not in self.notes:
                self.notes.append(note)
            yield None
            return
        try:
            with ConnectionMonitor(sampler, interval=SAMPLE_INTERVAL) as monitor:
                yield monitor
        finally:
            sampler.close()

    def close(self) -> None:
        """Stop the embedded emulator, if any (in process or a child)."""
        handles = (self.emulator, self.process)
        self.emulator = self.process = None
        for handle in handles:
            if handle is not None:
                handle.stop()


def remote(kwargs: Mapping[str, Any]) -> BenchServer:
    """A :class:`BenchServer` for a real endpoint; credentials come from the caller's setup."""
    host = str(kwargs.get("host"))
    port = kwargs.get("port")
    where = f"{host}:{port}" if port else host
    return BenchServer(description=where, kwargs=dict(kwargs), aurora_host=host)


def embedded(family: str, info: Mapping[str, Any], where: str, **handle: Any) -> BenchServer:
    """A :class:`BenchServer` for a running emulator of *family*.

    :param info: the emulator's ``describe()``, which is also the first line a child
        ``warmdb emulate --json`` prints.
    :param where: ``in process`` or ``own process``, for the description.
    :param handle: ``emulator=`` (in process) or ``process=`` (a child), closed with it.
    """
    port = info["port"]
    variables = {
        "AWS_ACCESS_KEY_ID": str(info["access_key_id"]),
        "AWS_SECRET_ACCESS_KEY": str(info["secret_access_key"]),
    }
    if info.get("session_token"):
        variables["AWS_SESSION_TOKEN"] = str(info["session_token"])
    if family == "mysql":
        return BenchServer(
            description=f"embedded RDS MySQL emulator on 127.0.0.1:{port} (TLS, IAM tokens; "
            f"{where})",
            kwargs={
                "host": "127.0.0.1",
                "port": port,
                "auth": "rds",
                "region": info["region"],
                "user": info["master_user"],
            },
            environment=variables,
            **handle,
        )
    return BenchServer(
        description=f"embedded DSQL emulator on localhost:{port} (TLS, IAM tokens; {where})",
        kwargs={
            "host": "localhost",
            "port": port,
            "auth": "dsql",
            "region": info["region"],
            "user": "admin",
            "dbname": "postgres",
            "sslmode": "require",
        },
        environment=variables,
        aurora_host=str(info["hostname"]),
        aurora_hostaddr="127.0.0.1",
        **handle,
    )


def open_server(
    kwargs: Mapping[str, Any] | None,
    *,
    family: str = "postgresql",
    in_process: bool = False,
    **emulator_options: Any,
) -> BenchServer:
    """The server of a run: *kwargs* (warmdb's, with ``host``) or a new embedded emulator.

    :param family: the drivers' database family: the DSQL emulator for ``postgresql``, the
        RDS MySQL emulator for ``mysql``.
    :param in_process: run the emulator in this process (its statistics are then live);
        otherwise in a child process (DSQL's with temporary credentials).
    :param emulator_options: the emulator's options, in process.
    """
    if kwargs:
        return remote(kwargs)
    if in_process:
        emulator: Emulator | MySQLEmulator
        if family == "mysql":
            from warmdb.emulator.mysql.service import serve as serve_mysql

            emulator = serve_mysql(**emulator_options)
        else:
            from warmdb.emulator.service import serve

            emulator = serve(**emulator_options)
        return embedded(family, emulator.describe(), "in process", emulator=emulator)
    process = EmulatorProcess(MYSQL_CHILD if family == "mysql" else DSQL_CHILD).start()
    return embedded(family, process.info, "own process", process=process)


#: ``warmdb emulate --json`` for DSQL, with temporary credentials.
DSQL_CHILD = ("-m", "warmdb", "emulate", "--json", "--session-token", "--log-level", "warning")
#: ``warmdb emulate --engine mysql --json``, the RDS MySQL emulator the same way.
MYSQL_CHILD = ("-m", "warmdb", "emulate", "--engine", "mysql", "--json", "--log-level", "warning")


class EmulatorProcess:
    """An emulator in a child process: by default ``warmdb emulate --json --session-token``.

    The child's first line on stdout describes the endpoint, credentials included (read
    through a pipe, written nowhere); SIGTERM stops it (``warmdb emulate`` then prints its
    statistics). It gets SIGTERM too when this process dies.

    :param arguments: the interpreter's arguments that start the child.
    :param startup_timeout: seconds the emulator has to start.
    """

    def __init__(
        self, arguments: tuple[str, ...] = DSQL_CHILD, *, startup_timeout: float = 60.0
    ) -> None:
        self.arguments = arguments
        self.startup_timeout = startup_timeout
        self.info: dict[str, Any] = {}
        self.final_stats: dict[str, Any] | None = None
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> EmulatorProcess:
        """Start the child; return once it accepts connections.

        :raises WarmdbError: it did not start (the message is its last error line); the
            command exits with status 1.
        """
        import select
        import sys
        import tempfile

        from warmdb.errors import WarmdbError

        with tempfile.TemporaryFile(mode="w+") as errors:
            self._process = subprocess.Popen(
                [sys.executable, *self.arguments],
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
                preexec_fn=die_with_owner(signal.SIGTERM),
            )
            assert self._process.stdout is not None
            ready, _, _ = select.select([self._process.stdout], [], [], self.startup_timeout)
            line = self._process.stdout.readline() if ready else ""
            if not line:
                self.stop()
                errors.seek(0)
                lines = errors.read().strip().splitlines()
                why = lines[-1] if lines else f"no answer in {self.startup_timeout:g} s"
                raise WarmdbError(f"the embedded emulator did not start: {why}")
        self.info = json.loads(line)
        return self

    def stop(self) -> None:
        """Stop the child and keep its final statistics in :attr:`final_stats`."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
        try:
            out, _ = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            out, _ = process.communicate()
        for line in (out or "").splitlines():
            with contextlib.suppress(ValueError):
                data = json.loads(line)
                if isinstance(data, dict) and "stats" in data:
                    self.final_stats = data["stats"]


class environment:
    """Set *variables* in ``os.environ`` (removing the other AWS ones) and restore them."""

    def __init__(self, variables: Mapping[str, str]) -> None:
        self._variables = dict(variables)
        self._saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        if not self._variables:
            return
        names = set(_AWS_VARIABLES) | set(self._variables)
        self._saved = {name: os.environ.get(name) for name in names}
        for name in names:
            os.environ.pop(name, None)
        os.environ.update(self._variables)

    def __exit__(self, *exc_info: object) -> None:
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved = {}


class ConnectionMonitor:
    """Samples a server's open connections in a thread; :attr:`peak` is the most seen.

    :param count: returns the number of open connections now.
    :param interval: seconds between samples.
    """

    def __init__(self, count: Callable[[], int], *, interval: float = 0.005) -> None:
        self._count = count
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.peak = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            # A failed sample (a connection being torn down) must not end the run.
            with contextlib.suppress(Exception):
                self.peak = max(self.peak, self._count())
            self._stop.wait(self._interval)

    def __enter__(self) -> ConnectionMonitor:
        self._thread = threading.Thread(target=self._run, name="warmdb-bench-monitor", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
