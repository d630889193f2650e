"""The ``warmdb`` command line.

Each subcommand lives in the module that implements it and exposes
``add_arguments(parser)`` and ``run(args) -> int``; this module only dispatches, importing the
chosen subcommand's module and nothing else.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from warmdb.errors import ConfigurationError, WarmdbError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["main"]

#: subcommand -> (implementing module, one-line help)
COMMANDS = {
    "token": ("warmdb.auth.command", "print an IAM token for psql and other clients"),
    "emulate": ("warmdb.emulator.command", "run a local Aurora DSQL-compatible endpoint"),
    "bench": ("warmdb.bench.command", "measure connects and queries per driver and pattern"),
    "probe": ("warmdb.bench.probe", "show where the time of one connect goes"),
    "sidecar": ("warmdb.sidecar.command", "run PgBouncer with IAM tokens kept fresh"),
}


def _build_parser(command: str | None) -> argparse.ArgumentParser:
    from warmdb import __version__

    parser = argparse.ArgumentParser(
        prog="warmdb", description="Fast, safe database connections from serverless Python."
    )
    parser.add_argument("--version", action="version", version=f"warmdb {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        subparser = subparsers.add_parser(name, help=help_text, description=help_text)
        # Only the chosen subcommand's module is imported: `warmdb token` must stay fast.
        if name == command:
            importlib.import_module(module_name).add_arguments(subparser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 success, 1 failure, 2 usage error:
    a bad option, or a :class:`~warmdb.ConfigurationError` from the subcommand)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in args_list if a in COMMANDS), None)
    parser = _build_parser(command)
    args = parser.parse_args(args_list)
    try:
        return int(importlib.import_module(COMMANDS[args.command][0]).run(args))
    except ConfigurationError as exc:
        # A bad option or argument: a usage error, as argparse's own (exit 2).
        print(f"warmdb {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except WarmdbError as exc:
        print(f"warmdb {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
