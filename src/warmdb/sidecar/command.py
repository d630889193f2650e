"""``warmdb sidecar``: run PgBouncer with IAM tokens kept fresh; ``warmdb sidecar status``.

Every option also reads an environment variable (``WARMDB_SIDECAR_HOST`` for ``--host`` and so
on), so the Lambda launcher, which gets no arguments, is configured by the function's
environment. ``--state-file`` defaults to ``$WARMDB_SIDECAR``: the same variable tells the
sidecar where to write and the clients where to read.
"""

from __future__ import annotations

import argparse
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from warmdb.sidecar.supervisor import Sidecar

__all__ = ["add_arguments", "build", "run"]

_PREFIX = "WARMDB_SIDECAR_"


class _Stop(BaseException):
    """Raised in the main thread by SIGINT or SIGTERM."""


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(_PREFIX + name.upper().replace("-", "_"), default)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``sidecar`` options to *parser*."""
    parser.epilog = (
        "Each option's default comes from WARMDB_SIDECAR_<OPTION> when set (e.g. "
        "WARMDB_SIDECAR_HOST, WARMDB_SIDECAR_POOL_SIZE); --state-file from WARMDB_SIDECAR. "
        "Clients find the sidecar through WARMDB_SIDECAR=<state file>."
    )
    parser.add_argument(
        "action",
        nargs="?",
        choices=("run", "status"),
        default="run",
        help="run the sidecar (default), or show a running one's pools, stats and token age",
    )

    def add(flag: str, default: str | None = None, **options: Any) -> None:
        # argparse applies the option's type to a default read from the environment too.
        parser.add_argument(flag, default=_env(flag[2:], default), **options)

    add("--host", help="the database endpoint (DSQL or RDS host name)")
    add("--port", type=int, help="the database port (default 5432)")
    add("--region", help="AWS region (default: from host or AWS_REGION)")
    add("--user", help="database user (default admin for DSQL)")
    add("--dbname", help="database (default postgres)")
    add("--auth", choices=("dsql", "rds"), help="token kind (default: from the host)")
    add("--profile", help="AWS profile to sign with")
    add(
        "--sslmode",
        choices=("require", "verify-ca", "verify-full"),
        help="TLS to the server (DSQL: verify-full, the only mode PgBouncer sends SNI in; "
        "RDS: require)",
    )
    add("--sslrootcert", help="CA file for verify-* (or 'system')")
    add(
        "--token-duration",
        type=int,
        metavar="SECONDS",
        help="DSQL token lifetime (default 900, or 21600 on PgBouncer before 1.24)",
    )
    add(
        "--listen",
        "127.0.0.1:6432",
        metavar="HOST:PORT",
        help="where PgBouncer listens (default 127.0.0.1:6432)",
    )
    add("--pool-size", "20", type=int, help="server connections (default 20)")
    add("--client-user", "warmdb", help="user clients log in as (default warmdb)")
    add("--pgbouncer", metavar="PATH", help="the PgBouncer binary")
    parser.add_argument(
        "--state-file",
        default=os.environ.get("WARMDB_SIDECAR"),
        metavar="PATH",
        help="the state file clients read; its directory holds every file, mode 0700 "
        "(default $WARMDB_SIDECAR, else a temporary directory)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        dest="settings",
        help="a [pgbouncer] setting, replacing the default (repeatable; NAME= removes it)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON line once ready (status: JSON)"
    )
    parser.add_argument(
        "--lambda-extension",
        action="store_true",
        default=_env("lambda_extension") == "1",
        help="run as a Lambda extension (register, follow events, stop at SHUTDOWN)",
    )
    add(
        "--extension-name",
        "warmdb-sidecar",
        help="the extension's name: its launcher's file name (default warmdb-sidecar)",
    )
    add(
        "--time-scale",
        "1",
        type=float,
        metavar="K",
        help="divide the refresh interval by K (against `warmdb emulate --token-time-scale K`)",
    )
    add(
        "--shutdown-timeout",
        "1.5",
        type=float,
        metavar="SECONDS",
        help="safe shutdown time before PgBouncer is killed (default 1.5)",
    )
    add(
        "--log-level",
        "info",
        choices=("debug", "info", "warning", "error"),
        help="log level on standard error (default info)",
    )


def _listen(text: str) -> tuple[str, int]:
    from warmdb.errors import ConfigurationError

    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigurationError(f"--listen {text!r} must be HOST:PORT, e.g. 127.0.0.1:6432")
    return host.strip("[]"), int(port)


def _settings(pairs: list[str]) -> dict[str, object]:
    from warmdb.errors import ConfigurationError

    settings: dict[str, object] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ConfigurationError(f"--set {pair!r} must be NAME=VALUE")
        settings[name.strip()] = value.strip() or None
    return settings


def build(args: argparse.Namespace) -> Sidecar:
    """The :class:`~warmdb.sidecar.supervisor.Sidecar` the options describe, not started.

    :raises ConfigurationError: a missing or bad option.
    """
    from warmdb.endpoint import ENDPOINT_KEYS
    from warmdb.errors import ConfigurationError
    from warmdb.sidecar.supervisor import Sidecar

    if not args.host:
        raise ConfigurationError("--host is required (or WARMDB_SIDECAR_HOST)")
    listen_host, listen_port = _listen(args.listen)
    # The endpoint's options, then the sidecar's own, under the Sidecar's parameter names.
    passed = {k: v for k, v in vars(args).items() if k in ENDPOINT_KEYS or k in _SIDECAR_KEYS}
    return Sidecar(
        **passed,
        listen_host=listen_host,
        listen_port=listen_port,
        state_path=args.state_file,
        settings=_settings(args.settings),
    )


_SIDECAR_KEYS = frozenset(
    {"token_duration", "pool_size", "client_user", "pgbouncer", "time_scale", "shutdown_timeout"}
)


def _usage_error(message: str) -> int:
    print(f"warmdb sidecar: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Run the sidecar until SIGINT, SIGTERM or a Lambda SHUTDOWN; or print its status."""
    from warmdb.errors import ConfigurationError

    if args.action == "status":
        return _status(args)
    import logging

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    _stop_on_signals()
    if args.lambda_extension:
        from warmdb.sidecar.extension import run_extension

        try:
            # Built inside: a bad option must reach Lambda as an init error too.
            return run_extension(
                lambda: build(args).start(),
                os.environ,
                name=args.extension_name,
                started=lambda s: _announce(s, as_json=args.json),
            )
        except _Stop:
            return 0
    try:
        sidecar = build(args)
    except ConfigurationError as exc:
        return _usage_error(str(exc))
    try:
        sidecar.start()
        _announce(sidecar, as_json=args.json)
        import threading

        threading.Event().wait()  # until a signal raises _Stop
    except _Stop:
        pass
    finally:
        sidecar.stop()
    return 0


def _stop_on_signals() -> None:
    import signal

    def stop(signum: int, frame: object) -> None:
        raise _Stop

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)


def _announce(sidecar: Sidecar, *, as_json: bool) -> None:
    import json

    if as_json:
        print(json.dumps(sidecar.describe()), flush=True)
        return
    state = sidecar.state
    print(
        f"warmdb sidecar: PgBouncer {state.pgbouncer_version} (pid {sidecar.pgbouncer_pid}) "
        f"accepts connections on {state.host}:{state.port}, database {state.dbname!r}\n"
        f"  clients : WARMDB_SIDECAR={sidecar.state_path}\n"
        f"  login   : user {state.user!r}, password in {state.password_file}\n"
        "Stop with Ctrl-C or SIGTERM.",
        flush=True,
    )


def _status(args: argparse.Namespace) -> int:
    import json

    from warmdb.errors import ConfigurationError
    from warmdb.sidecar.admin import collect, format_status
    from warmdb.sidecar.state import read_state

    if not args.state_file:
        return _usage_error("status needs --state-file or WARMDB_SIDECAR")
    try:
        state = read_state(args.state_file)
    except ConfigurationError as exc:
        # No sidecar there (or its file is unreadable): a failure to report, not a usage
        # error, since the option itself was well formed.
        print(f"warmdb sidecar: error: {exc}", file=sys.stderr)
        return 1
    status = collect(state)
    print(json.dumps(status) if args.json else format_status(status), flush=True)
    return 0
