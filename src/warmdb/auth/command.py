"""``warmdb token``: print an IAM token, for psql and other clients that take a password."""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_arguments", "run"]


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
    token = generate_token(**{k: v for k, v in options.items() if v is not None})
    sys.stdout.write(token + "\n")
    return 0
