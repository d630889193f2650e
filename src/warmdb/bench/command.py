"""``warmdb bench``: what a connect and a query cost, per driver and pattern, in one command.

With no ``--host`` it starts the embedded DSQL emulator and measures every installed driver
(see :mod:`warmdb.bench.server` for how each variant logs in). Options are checked before
anything starts: a bad one ends the command with one line on standard error and exit status 2.
"""

from __future__ import annotations

import argparse
import sys

from warmdb.bench.results import IN_PROCESS, PATTERNS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from warmdb.bench.results import RunResult
    from warmdb.bench.runner import RunOptions

__all__ = [
    "UsageError",
    "add_arguments",
    "add_endpoint_arguments",
    "endpoint_kwargs",
    "options_from_args",
    "positive_int",
    "prepare",
    "run",
]

EXAMPLES = """\
examples:
  warmdb bench                                  every installed driver, embedded emulator
  warmdb bench --iterations 100 --json out.json --plot out.png
  warmdb bench --drivers psycopg2,asyncpg --patterns raw,connect,warm
  warmdb bench --concurrency 100 --requests 1000 --hold 5          seed 002's workload
  warmdb bench --concurrency 100 --requests 1000 --hold 5 --via-sidecar
  warmdb bench --host abc123.dsql.us-east-1.on.aws --user admin     a real cluster
  warmdb bench --host db.example.com --auth rds --user app -o application_name=bench

The table: connect avg/p50/p95/p99 (for reuse patterns: the checkout), query avg/p50, total
and qps as in the seeds' Lambda handler (p95 = sorted(times)[int(n * 0.95)]), and connect
p50 as a ratio to the raw driver and to aurora-dsql-python-connector. docs/bench.md explains
how to read it.
"""

#: The seed's hold, and how much shorter the default run holds (5 s becomes 0.1 s).
DEFAULT_HOLD = 5.0
DEFAULT_HOLD_SCALE = 0.02


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one name")
    return names


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key.strip(), value


def one_line_errors(parser: argparse.ArgumentParser) -> None:
    """Make *parser* report a bad option as one line and exit 2 (no usage block)."""

    def error(message: str) -> NoReturn:
        parser.exit(2, f"{parser.prog}: error: {message}\n")

    parser.error = error  # type: ignore[method-assign]


def add_endpoint_arguments(parser: argparse.ArgumentParser) -> None:
    """The options naming a real endpoint, shared with ``warmdb probe``."""
    group = parser.add_argument_group(
        "endpoint (default: the embedded DSQL emulator, started for the run)"
    )
    add = group.add_argument
    add("--host", help="a DSQL endpoint or cluster id, an RDS endpoint, a host name")
    add("--port", type=int, help="TCP port (default 5432; 3306 for MySQL drivers)")
    add("--region", help="AWS region (default: from the host name or AWS_REGION)")
    add("--user", help="database user (default admin for DSQL)")
    add("--dbname", help="database (default postgres for DSQL)")
    add("--auth", choices=("dsql", "rds", "password"), help="default: guessed from the host")
    add("--profile", help="AWS profile to sign with (default: environment credentials)")
    add("--sslmode", help="libpq sslmode (default require with a token)")
    add("--sslrootcert", help="CA file for verify-full, or 'system'")
    add("--token-duration-secs", type=positive_int, help="token lifetime (default 900)")
    add(
        "-o",
        "--connect-arg",
        action="append",
        type=_key_value,
        default=[],
        metavar="KEY=VALUE",
        help="any other connect() argument, passed to every driver (repeatable)",
    )


def endpoint_kwargs(args: argparse.Namespace) -> dict[str, Any] | None:
    """warmdb's connect arguments from the endpoint options, or ``None`` for the emulator."""
    from warmdb.endpoint import ENDPOINT_KEYS

    # The options named after connect()'s endpoint arguments, in the order they were added.
    given = {k: v for k, v in vars(args).items() if k in ENDPOINT_KEYS and v is not None}
    if args.host is None:
        if given or args.connect_arg:
            name = f"--{next(iter(given)).replace('_', '-')}" if given else "--connect-arg"
            raise UsageError(f"{name} needs --host (without it the embedded emulator is used)")
        return None
    return {**given, **dict(args.connect_arg)}


class UsageError(Exception):
    """A bad combination of options, found after parsing: one line, exit status 2."""


def prepare(parser: argparse.ArgumentParser, examples: str, *, query_help: str) -> None:
    """What ``bench`` and ``probe`` share: the help's examples, one-line errors, ``--query``
    and ``--drivers`` (the endpoint options come last: :func:`add_endpoint_arguments`)."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = examples
    one_line_errors(parser)
    parser.add_argument("--query", default="SELECT 1", help=f"{query_help} ('SELECT 1')")
    parser.add_argument(
        "--drivers",
        type=_names,
        metavar="NAME,...",
        help="driver variants (psycopg, psycopg-async, psycopg2, asyncpg, pymysql...); "
        "default: all installed",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench`` options to *parser*."""
    prepare(parser, EXAMPLES, query_help="the SQL each iteration runs")
    add = parser.add_argument
    add("--iterations", type=positive_int, default=30, help="timed iterations per cell (30)")
    add(
        "--patterns",
        type=_names,
        metavar="NAME,...",
        help=f"patterns among {','.join(PATTERNS)}; default: all",
    )
    # One untimed process per variant first compiles the bytecode (docs/bench.md).
    add("--cold-samples", type=positive_int, default=3, help="processes per cold-start cell (3)")
    add("--json", metavar="FILE", help="write every figure as JSON to FILE ('-': stdout)")
    add("--plot", metavar="FILE", help="draw a PNG chart to FILE (needs warmdb[plot])")
    add("--no-progress", action="store_true", help="no progress bar, even on a terminal")
    group = parser.add_argument_group("concurrency mode (seed 002's workload)")
    group.add_argument(
        "--concurrency",
        type=positive_int,
        help="requests in flight at once; runs this mode instead of the matrix",
    )
    group.add_argument(
        "--requests", type=positive_int, help="requests in all (default 10 x --concurrency)"
    )
    group.add_argument(
        "--hold",
        type=_non_negative,
        default=DEFAULT_HOLD,
        help=f"seconds each request holds its connection between two queries ({DEFAULT_HOLD:g})",
    )
    group.add_argument(
        "--hold-scale",
        type=_non_negative,
        default=DEFAULT_HOLD_SCALE,
        help=f"multiplies --hold to keep the run short ({DEFAULT_HOLD_SCALE:g}; 1 for real time)",
    )
    group.add_argument(
        "--via-sidecar",
        action="store_true",
        help="also run the workload through `warmdb sidecar` (PgBouncer), side by side",
    )
    add_endpoint_arguments(parser)


def options_from_args(args: argparse.Namespace) -> RunOptions:
    """The checked :class:`~warmdb.bench.runner.RunOptions` of *args*.

    :raises UsageError: a bad combination of options (one line, exit status 2).
    :raises ConfigurationError: an unknown or missing driver.
    """
    from warmdb.bench.runner import RunOptions
    from warmdb.bench.variants import select_variants

    patterns = args.patterns or list(PATTERNS)
    unknown = [p for p in patterns if p not in PATTERNS]
    if unknown:
        raise UsageError(f"unknown pattern {unknown[0]!r}: choose from {', '.join(PATTERNS)}")
    if args.concurrency is None:
        for name in ("requests", "via_sidecar"):
            if getattr(args, name):
                raise UsageError(f"--{name.replace('_', '-')} needs --concurrency")
    if args.plot:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            raise UsageError("--plot needs matplotlib: pip install 'warmdb[plot]'")
    kwargs = endpoint_kwargs(args)
    variants = select_variants(args.drivers)
    if not variants:
        raise UsageError("no driver is installed: pip install 'warmdb[psycopg2]' (or another)")
    if args.concurrency is not None and args.drivers is None:
        # Seed 002 measured one simple driver; every driver would multiply a long run.
        variants = (
            variants[:1]
            if not any(v.name == "psycopg2" for v in variants)
            else [v for v in variants if v.name == "psycopg2"]
        )
    concurrency = args.concurrency
    return RunOptions(
        kwargs=kwargs,
        variants=tuple(variants),
        iterations=args.iterations,
        query=args.query,
        patterns=tuple(p for p in IN_PROCESS if p in patterns),
        cold="cold" in patterns,
        cold_samples=args.cold_samples,
        concurrency=concurrency,
        requests=args.requests or (10 * concurrency if concurrency else 0),
        hold=args.hold * args.hold_scale,
        via_sidecar=args.via_sidecar,
        progress=not args.no_progress,
    )


def run(args: argparse.Namespace) -> int:
    """Run the benchmark the options describe and print the report; exit status 0 or 2."""
    from warmdb.bench import runner
    from warmdb.errors import ConfigurationError

    try:
        options = options_from_args(args)
    except (UsageError, ConfigurationError) as exc:
        print(f"warmdb bench: error: {exc}", file=sys.stderr)
        return 2
    result = runner.run(options)
    from warmdb.bench.report import render

    if args.json == "-":
        _write_json(result, sys.stdout)
    else:
        sys.stdout.write(render(result))
    if args.json and args.json != "-":
        with open(args.json, "w", encoding="utf-8") as out:
            _write_json(result, out)
    if args.plot:
        from warmdb.bench.plot import plot

        plot(result, args.plot)
    return 0


def _write_json(result: RunResult, out: Any) -> None:
    import json

    json.dump(result.as_dict(), out, indent=2)
    out.write("\n")
