"""``warmdb emulate``: run a local endpoint that behaves like Aurora DSQL until interrupted.

Bad options end the command with one line on standard error and exit status 2, never a
traceback; other failures (the upstream server will not start) exit with 1.
"""

from __future__ import annotations

import argparse

from warmdb.emulator import commandline

TYPE_CHECKING = False
if TYPE_CHECKING:
    from warmdb.emulator.service import Emulator

__all__ = ["add_arguments", "build", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``emulate`` options to *parser*."""
    parser.epilog = (
        "Durations are seconds of DSQL time; --time-scale divides them all (and token "
        "lifetimes, unless --token-time-scale is given). Stop with Ctrl-C; statistics are "
        "printed on exit."
    )
    add = parser.add_argument
    add(
        "--engine",
        choices=("dsql", "rds-postgres", "mysql"),
        default="dsql",
        help="the service to emulate: dsql (default), rds-postgres (rds-db tokens, 200 new "
        "connections/s, no transaction limits), mysql (RDS MySQL with IAM, on MariaDB; "
        "see docs/emulator-mysql.md)",
    )
    commandline.add_endpoint_arguments(
        parser,
        hostname_help="the endpoint's host name (default local.dsql.REGION.on.aws); tokens for "
        "it, localhost, loopback addresses and names resolving to loopback are accepted",
    )
    add(
        "--session-token",
        action="store_true",
        help="issue temporary credentials (ASIA key id and AWS_SESSION_TOKEN), as Lambda "
        "gives; tokens must carry the session token",
    )
    add(
        "--data-dir",
        help="keep the database here, mode 0700 (default: a temporary directory)",
    )
    add("--time-scale", type=float, default=1.0, metavar="K", help="divide durations by K")
    add(
        "--token-time-scale",
        type=float,
        metavar="K",
        help="divide token lifetimes by K instead (default: --time-scale; 1 for real time)",
    )
    add(
        "--occ-conflict-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="fail this fraction of COMMITs with 40001 OC000 (default 0)",
    )
    add("--seed", type=int, help="seed for --occ-conflict-rate, for reproducible runs")
    add(
        "--connection-rate",
        type=float,
        help="new connections/s (default 100 for dsql, 200 for rds-postgres)",
    )
    add(
        "--connection-burst",
        type=int,
        help="connection burst (default 1000 for dsql, 200 for rds-postgres)",
    )
    add(
        "--max-connections",
        type=int,
        help="open connections (default 10000; mysql: MariaDB's max_connections, 151)",
    )
    add(
        "--wait-timeout",
        type=int,
        metavar="S",
        help="mysql only: MariaDB's own wait_timeout, whole seconds (default 28800)",
    )
    add(
        "--iam-connect-rate",
        type=float,
        metavar="N",
        help="mysql only: new IAM logins per second before refusals (default 200)",
    )
    add(
        "--upstream-connections",
        type=int,
        default=1000,
        help="client connections the embedded PostgreSQL is sized for (default 1000)",
    )
    add(
        "--idle-client-timeout",
        type=float,
        metavar="S",
        help="close client connections idle S seconds, as RDS Proxy (default: never)",
    )
    add(
        "--postgres-compatible",
        action="store_true",
        help="run any PostgreSQL statement: no DSQL SQL checks (tokens, TLS, limits and "
        "conflicts stay DSQL's); see docs/emulator-sql.md",
    )
    add(
        "--no-sni-check",
        dest="require_sni",
        action="store_false",
        default=None,
        help="accept TLS clients that send no server name (DSQL refuses them)",
    )
    add(
        "--connection-lifetime",
        type=float,
        help="seconds (default 3600 for dsql, none for rds-postgres)",
    )
    add("--transaction-age", type=float, help="seconds (default 300; dsql only)")
    add("--transaction-rows", type=int, help="modified rows (default 3000; dsql only)")
    add(
        "--transaction-bytes",
        type=int,
        help="bytes of statements and data per transaction (default 10 MiB; dsql only)",
    )


def build(args: argparse.Namespace) -> Emulator:
    """The :class:`~warmdb.emulator.Emulator` the parsed options describe, not yet started.

    :raises ConfigurationError: inconsistent options, or ``--credentials env`` without them.
    """
    import dataclasses

    from warmdb.emulator.engines import get_engine
    from warmdb.emulator.service import Emulator
    from warmdb.errors import ConfigurationError

    if args.credentials == "env" and args.session_token:
        raise ConfigurationError("--session-token issues random credentials: not with env")
    endpoint = commandline.endpoint_options(args, temporary=args.session_token)
    engine = get_engine(args.engine)
    # Options not given keep the engine's defaults.
    given = {
        name: getattr(args, name)
        for name in (
            "connection_rate",
            "connection_burst",
            "max_connections",
            "connection_lifetime",
            "transaction_age",
            "transaction_rows",
            "transaction_bytes",
            "time_scale",
            "token_time_scale",
        )
        if getattr(args, name) is not None
    }
    if args.postgres_compatible:
        given["sql_checks"] = False
    limits = dataclasses.replace(engine.limits, **given)
    # The engine's own options pass through under the emulator's keyword names.
    options = {name: getattr(args, name) for name in _EMULATOR_OPTIONS}
    return Emulator(engine=engine.name, **endpoint, limits=limits, **options)


_EMULATOR_OPTIONS = (
    "occ_conflict_rate",
    "upstream_connections",
    "idle_client_timeout",
    "require_sni",
    "data_dir",
    "seed",
)
# The MySQL engine's own options, and what they default to when not given.
_MYSQL_DEFAULTS = {"max_connections": 151, "wait_timeout": 28_800, "iam_connect_rate": 200.0}
# Options of the PostgreSQL engines only, with their defaults: given with --engine mysql,
# they are an error rather than silently ignored.
_POSTGRES_ONLY = {
    "session_token": False,
    "data_dir": None,
    "time_scale": 1.0,
    "token_time_scale": None,
    "occ_conflict_rate": 0.0,
    "seed": None,
    "connection_rate": None,
    "connection_burst": None,
    "upstream_connections": 1000,
    "postgres_compatible": False,
    "require_sni": None,
    "connection_lifetime": None,
    "transaction_age": None,
    "transaction_rows": None,
    "transaction_bytes": None,
}


def _mysql_arguments(args: argparse.Namespace) -> argparse.Namespace:
    """*args* as the MySQL engine's command takes them.

    :raises ConfigurationError: an option of the PostgreSQL engines was given, or a MySQL
        option without ``--engine mysql`` (checked by the caller).
    """
    from warmdb.errors import ConfigurationError

    for name, default in _POSTGRES_ONLY.items():
        if getattr(args, name) != default:
            flag = "--no-sni-check" if name == "require_sni" else "--" + name.replace("_", "-")
            raise ConfigurationError(f"{flag} does not apply to --engine mysql")
    values = vars(args).copy()
    for name, default in _MYSQL_DEFAULTS.items():
        if values.get(name) is None:
            values[name] = default
    if values["wait_timeout"] < 1 or values["iam_connect_rate"] <= 0:
        raise ConfigurationError("--wait-timeout and --iam-connect-rate must be positive")
    return argparse.Namespace(**values)


def run(args: argparse.Namespace) -> int:
    """Start the emulator, print how to connect, serve until SIGINT or SIGTERM.

    :raises ConfigurationError: bad options (``warmdb`` prints them as a usage error).
    """
    from warmdb.errors import ConfigurationError

    if args.engine == "mysql":
        from warmdb.emulator.mysql import command as mysql_command

        return mysql_command.run(_mysql_arguments(args))
    for name in ("wait_timeout", "iam_connect_rate"):
        if getattr(args, name) is not None:
            flag = "--" + name.replace("_", "-")
            raise ConfigurationError(f"{flag} applies to --engine mysql only")
    return commandline.serve(args, build(args), banner=_banner, title="warmdb emulate")


def _banner(emulator: Emulator, show_secret: bool) -> str:
    credentials = commandline.credentials_text(emulator.credentials, show_secret=show_secret)
    if show_secret:
        credentials += " (or --credentials env / your own AWS environment keys)"
    host, port, ca = emulator.hostname, emulator.port, emulator.ca_path
    if emulator.engine.iam_kind == "rds":
        token_command = f"warmdb token --auth rds --host {host} --port {port} --user admin"
    else:
        token_command = f"warmdb token --host {host}"
    try_line = (
        f'PGPASSWORD="$({token_command})" psql "host={host} hostaddr={emulator.host} '
        f'port={port} user=admin dbname=postgres sslmode=verify-full sslrootcert={ca}"'
    )
    return "\n".join(
        [
            f"{emulator.engine.description} on {emulator.host}:{port} "
            f"(embedded PostgreSQL {emulator.postgres_version()})",
            f"  host name   : {host} (also localhost, loopback addresses and names "
            "resolving to them; see --hostname)",
            f"  region      : {emulator.region}",
            f"  credentials : {credentials}",
            f"  TLS CA      : {ca}",
            f"  try         : {try_line}",
            "Press Ctrl-C to stop.",
        ]
    )
