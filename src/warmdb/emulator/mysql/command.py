"""``warmdb emulate --engine mysql``: a local RDS for MySQL endpoint with IAM, until interrupted.

:func:`add_arguments` adds the engine's whole option set to a parser of its own; :func:`run`
serves until SIGINT or SIGTERM, then prints the statistics.
"""

from __future__ import annotations

import argparse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from warmdb.emulator.mysql.service import MySQLEmulator

__all__ = ["add_arguments", "build", "run"]


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the MySQL engine's options to *parser*."""
    parser.epilog = (
        "Clients log in with an RDS IAM token (rds-db) as password over TLS, with the "
        "mysql_clear_password plugin. Stop with Ctrl-C; statistics are printed on exit."
    )
    add = parser.add_argument
    add("--port", type=int, default=0, help="TCP port (default: a free port, printed)")
    add("--listen", default="127.0.0.1", metavar="ADDRESS", help="address (default 127.0.0.1)")
    add("--region", default="us-east-1", help="region tokens must name (default us-east-1)")
    add(
        "--hostname",
        help="the endpoint's host name (default local.emulator.REGION.rds.amazonaws.com); "
        "tokens for it, localhost, loopback addresses and names resolving to loopback are "
        "accepted, with the endpoint's port",
    )
    add(
        "--credentials",
        choices=("random", "env"),
        default="random",
        help="the key pair clients sign with: a new random pair, printed (default), or "
        "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY[/AWS_SESSION_TOKEN] from the environment, "
        "which are accepted in addition to a random pair in any case",
    )
    add("--json", action="store_true", help="print the endpoint as one JSON line once ready")
    add(
        "--idle-client-timeout",
        type=_seconds,
        metavar="S",
        help="close client connections idle S seconds, as RDS Proxy does (its default is "
        "1800; default here: none, as a direct RDS endpoint)",
    )
    add(
        "--wait-timeout",
        type=int,
        default=28_800,
        metavar="S",
        help="MariaDB's own wait_timeout, whole seconds (default 28800)",
    )
    add(
        "--iam-connect-rate",
        type=_seconds,
        default=200.0,
        metavar="N",
        help="new IAM logins per second before 1045 refusals; reused tokens are free (default 200)",
    )
    add(
        "--max-connections",
        type=int,
        default=151,
        help="MariaDB's max_connections; more logins get 1040 (default 151)",
    )
    add("--tls-cert", help="server certificate chain (PEM) instead of a generated one")
    add("--tls-key", help="the key of --tls-cert (PEM)")
    add(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="log level on standard error (default info: refusals are logged with reasons)",
    )


def build(args: argparse.Namespace) -> MySQLEmulator:
    """The :class:`~warmdb.emulator.mysql.MySQLEmulator` the options describe, not started.

    :raises ConfigurationError: inconsistent options, or ``--credentials env`` without them.
    """
    from warmdb.auth.credentials import from_environment
    from warmdb.emulator.mysql.limits import MySQLLimits
    from warmdb.emulator.mysql.service import MySQLEmulator
    from warmdb.emulator.service import random_credentials
    from warmdb.errors import ConfigurationError

    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigurationError("--tls-cert and --tls-key go together")
    environment = from_environment()
    if args.credentials == "env" and environment is None:
        raise ConfigurationError(
            "--credentials env: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set"
        )
    primary = environment if args.credentials == "env" else random_credentials()
    assert primary is not None
    accept = [environment] if environment is not None and environment != primary else []
    limits = MySQLLimits(
        idle_client_timeout=args.idle_client_timeout,
        wait_timeout=args.wait_timeout,
        iam_connect_rate=args.iam_connect_rate,
        max_connections=args.max_connections,
    )
    return MySQLEmulator(
        host=args.listen,
        port=args.port,
        region=args.region,
        hostname=args.hostname,
        credentials=primary,
        accept=accept,
        limits=limits,
        tls_files=(args.tls_cert, args.tls_key) if args.tls_cert else None,
    )


def run(args: argparse.Namespace) -> int:
    """Start the emulator, print how to connect, serve until SIGINT or SIGTERM."""
    import json
    import logging
    import signal
    import threading

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    emulator = build(args)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    emulator.start()
    try:
        # The user's own secret key is never printed; a random one is the point of printing.
        show_secret = args.credentials == "random"
        if args.json:
            info = emulator.describe()
            if not show_secret:
                info["secret_access_key"] = None
            print(json.dumps(info), flush=True)
        else:
            print(_banner(emulator, show_secret=show_secret), flush=True)
        stop.wait()
    finally:
        stats = emulator.stats
        emulator.stop()
    if args.json:
        print(json.dumps({"stats": stats.as_dict()}), flush=True)
    else:
        lines = ["warmdb emulate --engine mysql: statistics"]
        lines += [f"  {name:<16}: {value}" for name, value in stats.as_dict().items()]
        print("\n".join(lines), flush=True)
    return 0


def _banner(emulator: MySQLEmulator, *, show_secret: bool) -> str:
    keys = emulator.credentials
    if show_secret:
        credentials = f"AWS_ACCESS_KEY_ID={keys.access_key} AWS_SECRET_ACCESS_KEY={keys.secret_key}"
    else:
        credentials = f"your AWS environment keys (AWS_ACCESS_KEY_ID={keys.access_key})"
    host, port, ca = emulator.hostname, emulator.port, emulator.ca_path
    limits = emulator.limits
    idle = "none" if limits.idle_client_timeout is None else f"{limits.idle_client_timeout:g} s"
    try_line = (
        f"mariadb -h {emulator.host} -P {port} -u admin --ssl-ca={ca} "
        f'--password="$(warmdb token --auth rds --host {host} --port {port} --user admin)"'
    )
    return "\n".join(
        [
            f"RDS for MySQL-compatible endpoint on {emulator.host}:{port} "
            f"(embedded MariaDB {emulator.upstream.version()})",
            f"  host name   : {host} (also localhost and loopback addresses; see --hostname)",
            f"  region      : {emulator.region}",
            f"  credentials : {credentials}",
            "  master user : admin (create others: CREATE USER 'app'@'localhost')",
            f"  TLS CA      : {ca}",
            f"  timeouts    : idle client {idle}, wait_timeout {limits.wait_timeout:g} s",
            f"  try         : {try_line}",
            "Press Ctrl-C to stop.",
        ]
    )
