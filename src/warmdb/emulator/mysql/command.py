"""``warmdb emulate --engine mysql``: a local RDS for MySQL endpoint with IAM, until interrupted.

:func:`add_arguments` adds the engine's whole option set to a parser of its own; :func:`run`
serves until SIGINT or SIGTERM, then prints the statistics.
"""

from __future__ import annotations

import argparse

from warmdb.emulator import commandline

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
    commandline.add_endpoint_arguments(
        parser,
        hostname_help="the endpoint's host name (default "
        "local.emulator.REGION.rds.amazonaws.com); tokens for it, localhost, loopback "
        "addresses and names resolving to loopback are accepted, with the endpoint's port",
    )
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


def build(args: argparse.Namespace) -> MySQLEmulator:
    """The :class:`~warmdb.emulator.mysql.MySQLEmulator` the options describe, not started.

    :raises ConfigurationError: inconsistent options, or ``--credentials env`` without them.
    """
    from warmdb.emulator.mysql.limits import MySQLLimits
    from warmdb.emulator.mysql.service import MySQLEmulator

    endpoint = commandline.endpoint_options(args)
    limits = MySQLLimits(
        idle_client_timeout=args.idle_client_timeout,
        wait_timeout=args.wait_timeout,
        iam_connect_rate=args.iam_connect_rate,
        max_connections=args.max_connections,
    )
    return MySQLEmulator(**endpoint, limits=limits)


def run(args: argparse.Namespace) -> int:
    """Start the emulator, print how to connect, serve until SIGINT or SIGTERM.

    :raises ConfigurationError: bad options, before anything starts.
    """
    return commandline.serve(
        args, build(args), banner=_banner, title="warmdb emulate --engine mysql"
    )


def _banner(emulator: MySQLEmulator, show_secret: bool) -> str:
    credentials = commandline.credentials_text(emulator.credentials, show_secret=show_secret)
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
