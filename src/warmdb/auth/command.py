"""``warmdb token``: print an IAM token, for psql and other clients that take a password."""

from __future__ import annotations

import argparse
import re
import sys

from warmdb.errors import ConfigurationError

__all__ = ["add_arguments", "run"]

# generate_token's messages name its keyword arguments (region='us-east-1'); the command
# line's name its flags (--region us-east-1).
_KEYWORD = re.compile(r"\b(auth|region|user|port|profile|host)=(?:'([^']*)'|(\S+))")
_FLAG_FOR = {"token_duration_secs": "--expires"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``token`` options to *parser*."""
    parser.epilog = (
        'example: PGPASSWORD="$(warmdb token --host abc123.dsql.us-east-1.on.aws)" '
        'psql "host=abc123.dsql.us-east-1.on.aws user=admin dbname=postgres sslmode=require"'
    )
    parser.add_argument("--host", required=True, help="endpoint host name or DSQL cluster id")
    parser.add_argument("--region", help="AWS region (default: from the host, then AWS_REGION)")
    parser.add_argument("--user", help="database user (default for DSQL: admin)")
    parser.add_argument("--port", type=int, help="port, signed into RDS tokens (default 5432)")
    parser.add_argument(
        "--expires",
        type=int,
        metavar="SECONDS",
        help="token lifetime for DSQL, 1 to 604800 (default 900; RDS tokens always last 900)",
    )
    parser.add_argument(
        "--auth",
        choices=("dsql", "rds"),
        help="token kind (default: from the host name)",
    )
    parser.add_argument("--profile", help="AWS profile to take credentials from")


def run(args: argparse.Namespace) -> int:
    """Print one token on standard output."""
    from warmdb import generate_token

    options = {
        "host": args.host,
        "region": args.region,
        "user": args.user,
        "port": args.port,
        "token_duration_secs": args.expires,
        "auth": args.auth,
        "profile": args.profile,
    }
    try:
        token = generate_token(**{k: v for k, v in options.items() if v is not None})
    except ConfigurationError as exc:
        raise ConfigurationError(in_flags(str(exc))) from exc
    sys.stdout.write(token + "\n")
    return 0


def in_flags(message: str) -> str:
    """*message* with Python keyword arguments written as this command's flags."""
    message = _KEYWORD.sub(lambda m: f"--{m.group(1)} {m.group(2) or m.group(3)}", message)
    for keyword, flag in _FLAG_FOR.items():
        message = message.replace(keyword, flag)
    return message
