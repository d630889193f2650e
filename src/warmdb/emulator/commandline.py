"""What ``warmdb emulate`` shares between engines: the endpoint options, the credentials the
emulator signs with, and serving until SIGINT or SIGTERM with the statistics printed at exit.

:mod:`warmdb.emulator.command` (DSQL, RDS PostgreSQL) and :mod:`warmdb.emulator.mysql.command`
(RDS MySQL) add their engine's options, how they build the emulator and its banner.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from typing import Any, TypeVar

    from warmdb.auth.credentials import Credentials
    from warmdb.emulator.lifecycle import BaseEmulator

    EmulatorT = TypeVar("EmulatorT", bound=BaseEmulator[Any, Any, Any])

__all__ = ["add_endpoint_arguments", "credentials_text", "endpoint_options", "serve"]


def add_endpoint_arguments(parser: argparse.ArgumentParser, *, hostname_help: str) -> None:
    """Add the options every engine has (address, region, credentials, TLS, output)."""
    add = parser.add_argument
    add("--port", type=int, default=0, help="TCP port (default: a free port, printed)")
    add("--listen", default="127.0.0.1", metavar="ADDRESS", help="address (default 127.0.0.1)")
    add("--region", default="us-east-1", help="region tokens must name (default us-east-1)")
    add("--hostname", help=hostname_help)
    add(
        "--credentials",
        choices=("random", "env"),
        default="random",
        help="the key pair clients sign with: a new random pair, printed (default), or "
        "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY[/AWS_SESSION_TOKEN] from the environment, "
        "which are accepted in addition to a random pair in any case",
    )
    add("--json", action="store_true", help="print the endpoint as one JSON line once ready")
    add("--tls-cert", help="server certificate chain (PEM) instead of a generated one")
    add("--tls-key", help="the key of --tls-cert (PEM)")
    add(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="log level on standard error (default info: refusals are logged with reasons)",
    )


def endpoint_options(args: argparse.Namespace, *, temporary: bool = False) -> dict[str, Any]:
    """The emulator's keyword arguments for the options :func:`add_endpoint_arguments` added.

    :param temporary: issue random temporary credentials (with a session token).
    :raises ConfigurationError: ``--tls-cert`` without ``--tls-key`` (or the reverse), or
        ``--credentials env`` without them in the environment.
    """
    from warmdb.auth.credentials import from_environment
    from warmdb.emulator.lifecycle import random_credentials
    from warmdb.errors import ConfigurationError

    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigurationError("--tls-cert and --tls-key go together")
    environment = from_environment()
    if args.credentials == "env" and environment is None:
        raise ConfigurationError(
            "--credentials env: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set"
        )
    primary: Credentials | None = (
        environment if args.credentials == "env" else random_credentials(temporary=temporary)
    )
    assert primary is not None
    return {
        "host": args.listen,
        "port": args.port,
        "region": args.region,
        "hostname": args.hostname,
        "credentials": primary,
        # The environment's keys are accepted too: a developer's own AWS setup just works.
        "accept": [environment] if environment is not None and environment != primary else [],
        "tls_files": (args.tls_cert, args.tls_key) if args.tls_cert else None,
    }


def credentials_text(keys: Credentials, *, show_secret: bool) -> str:
    """The banner's credentials: the whole random key pair, or only the user's key id."""
    if not show_secret:
        return f"your AWS environment keys (AWS_ACCESS_KEY_ID={keys.access_key})"
    text = f"AWS_ACCESS_KEY_ID={keys.access_key} AWS_SECRET_ACCESS_KEY={keys.secret_key}"
    if keys.token is not None:
        text += f" AWS_SESSION_TOKEN={keys.token}"
    return text


def serve(
    args: argparse.Namespace,
    emulator: EmulatorT,
    *,
    banner: Callable[[EmulatorT, bool], str],
    title: str,
) -> int:
    """Start *emulator*, print how to connect (*banner*, or JSON with ``--json``), serve until
    SIGINT or SIGTERM, then print the statistics under *title*."""
    import json
    import logging
    import signal
    import threading

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
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
                info["session_token"] = None
            print(json.dumps(info), flush=True)
        else:
            print(banner(emulator, show_secret), flush=True)
        stop.wait()
    finally:
        stats = emulator.stats.as_dict()
        emulator.stop()
    if args.json:
        print(json.dumps({"stats": stats}), flush=True)
    else:
        width = max(map(len, stats)) + 1
        lines = [f"{title}: statistics"]
        lines += [f"  {name:<{width}}: {value}" for name, value in stats.items()]
        print("\n".join(lines), flush=True)
    return 0
