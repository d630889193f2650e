"""``warmdb probe``: where the time of one connect goes, phase by phase, and per driver.

With no ``--host`` it probes the embedded emulators (as ``warmdb bench`` does: DSQL for the
PostgreSQL drivers, RDS MySQL for the MySQL ones). For each database family the probe
resolves the endpoint as ``connect()`` would, then times, once each:

1. credential resolution (environment variables, or botocore's chain for a profile);
2. token signing (SigV4 presigning, no cache);
3. over a raw socket with the project's own wire code (:mod:`warmdb.bench.wire`): DNS, TCP,
   then for PostgreSQL the TLS handshake and the startup with authentication, for MySQL the
   server's greeting, the TLS handshake and the authentication; then the first query;

and then, for every installed driver, its whole ``connect()`` through warmdb (a token signed
afresh, as on a cold start) and its first query. A whole connect far above the sum of the
phases points at the driver or the client machine; one phase far above the others points at
that phase: DNS, a distant region (TCP and TLS each cost round trips), credentials from a
slow provider.
"""

from __future__ import annotations

import argparse
import sys
import time

from warmdb.bench.command import add_endpoint_arguments, endpoint_kwargs, positive_int, prepare

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from warmdb.bench.variants import Variant

__all__ = ["add_arguments", "run"]

EXAMPLES = """\
examples:
  warmdb probe                                   the embedded emulator, every driver
  warmdb probe --host abc123.dsql.us-east-1.on.aws --json
  warmdb probe --host db.example.com --auth rds --user app --drivers psycopg2
  warmdb probe --host db.example.com --port 3306 --auth rds --user app --drivers pymysql

docs/bench.md shows how to read the output.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``probe`` options to *parser*."""
    prepare(parser, EXAMPLES, query_help="the first query")
    add = parser.add_argument
    add(
        "--repeat",
        type=positive_int,
        default=3,
        help="rounds; medians are shown (3: the first round pays one-time costs such as "
        "loading name-service libraries; 1 shows a single cold connect)",
    )
    add("--json", action="store_true", help="print JSON instead of the table")
    add_endpoint_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Probe the endpoint; print the phases and the drivers' connects. Exit status 0, 1 or 2."""
    from warmdb.bench.command import UsageError
    from warmdb.bench.variants import select_variants
    from warmdb.errors import ConfigurationError

    try:
        kwargs = endpoint_kwargs(args)
        variants = select_variants(args.drivers)
    except (UsageError, ConfigurationError) as exc:
        print(f"warmdb probe: error: {exc}", file=sys.stderr)
        return 2
    report = probe(kwargs, variants, args.query, repeat=args.repeat)
    if args.json:
        import json

        print(json.dumps(report, indent=2))
    else:
        sys.stdout.write(render(report))
    failed = any(f["wire"].get("error") is not None for f in report["families"])
    return 1 if failed else 0


def probe(
    kwargs: dict[str, Any] | None, variants: list[Variant], query: str, *, repeat: int = 3
) -> dict[str, Any]:
    """Run the probe against *kwargs* (or the embedded emulators) and return its report.

    Each database family of *variants* (PostgreSQL when there are none) is probed on its own
    server (with no host: the DSQL emulator, or the RDS MySQL emulator) and reported in the
    same shape under ``families``.
    """
    from warmdb.bench.variants import by_family

    groups = by_family(tuple(variants)) or [("postgresql", ())]
    return {
        "query": query,
        "repeat": repeat,
        "families": [_probe_family(kwargs, f, group, query, repeat) for f, group in groups],
    }


def _probe_family(
    kwargs: dict[str, Any] | None,
    family: str,
    variants: tuple[Variant, ...],
    query: str,
    repeat: int,
) -> dict[str, Any]:
    """Each of *repeat* rounds runs the wire probe, then every driver of *family*; the
    report holds the median of each figure, and every round under ``rounds``."""
    from warmdb.bench.server import environment, open_server

    rounds: list[dict[str, Any]] = []
    server = open_server(kwargs, family=family)
    try:
        with environment(server.environment):
            for _ in range(repeat):
                wire = _wire_phases(server.kwargs, family, query)
                drivers = [_driver_connect(v, server.kwargs, query) for v in variants]
                rounds.append({"wire": wire, "drivers": drivers})
                if wire["error"] is not None:
                    break
    finally:
        server.close()
    return {
        "family": family,
        "endpoint": server.description,
        "repeat": len(rounds),
        "wire": _median_wire(rounds),
        "drivers": _median_drivers(rounds),
        "rounds": rounds,
    }


def _median(values: list[float | None]) -> float | None:
    import statistics

    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def _median_wire(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    last = rounds[-1]["wire"]
    merged = {k: v for k, v in last.items() if k != "phases"}
    names = list(rounds[0]["wire"]["phases"])
    merged["phases"] = {
        name: _median([r["wire"]["phases"].get(name) for r in rounds]) for name in names
    }
    return merged


def _median_drivers(rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    merged = []
    for index, first in enumerate(rounds[0]["drivers"]):
        entries = [r["drivers"][index] for r in rounds]
        entry: dict[str, Any] = {
            "driver": first["driver"],
            "connect_ms": _median([e["connect_ms"] for e in entries]),
            "query_ms": _median([e["query_ms"] for e in entries]),
        }
        errors = [e["error"] for e in entries if e.get("error")]
        if errors:
            entry["error"] = errors[-1]
        merged.append(entry)
    return merged


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _wire_phases(kwargs: dict[str, Any], family: str, query: str) -> dict[str, Any]:
    """Credentials, signing and the raw-socket phases, in ms; ``error`` when one failed."""
    from warmdb.auth.credentials import credentials_source
    from warmdb.auth.tokens import sign_token
    from warmdb.bench.wire import WireLogin, probe_connect
    from warmdb.endpoint import FAMILIES, resolve
    from warmdb.errors import WarmdbError

    phases: dict[str, float | None] = {}
    result: dict[str, Any] = {"phases": phases, "error": None}
    try:
        endpoint, password, _ = resolve(None, kwargs, family=FAMILIES[family])
        result["host"] = f"{endpoint.host}:{endpoint.port}"
        result["auth"] = endpoint.auth
        if endpoint.uses_token:
            started = time.perf_counter()
            credentials = credentials_source(profile=endpoint.profile)()
            phases["credentials"] = _ms(time.perf_counter() - started)
            spec = endpoint.token_spec()
            started = time.perf_counter()
            secret: str | None = sign_token(spec, credentials, time.time())
            phases["token signing"] = _ms(time.perf_counter() - started)
        else:
            secret = password() if callable(password) else password  # type: ignore[assignment]
        if family == "mysql":
            import getpass

            from warmdb._mysql import tls_mode

            # The MySQL drivers' defaults: the login name of the OS user; TLS as resolved.
            user, sslmode = endpoint.user or getpass.getuser(), tls_mode(endpoint)
        else:
            user, sslmode = endpoint.user or "postgres", endpoint.sslmode
        login = WireLogin(
            user=user,
            dbname=endpoint.dbname,
            password=secret,
            sslmode=sslmode or "prefer",
            sslrootcert=endpoint.sslrootcert,
            clear_password=endpoint.uses_token,
        )
        timings = probe_connect(
            family=family, host=endpoint.host, port=endpoint.port, login=login, query=query
        )
    except WarmdbError as exc:
        result["error"] = str(exc)
        return result
    phases.update((name, _ms(seconds)) for name, seconds in timings.phases.items())
    result["address"] = timings.address
    result["tls_version"] = timings.tls_version
    result["server_version"] = timings.server_version
    return result


def _driver_connect(variant: Variant, kwargs: dict[str, Any], query: str) -> dict[str, Any]:
    """One whole connect and first query through warmdb for *variant*, in ms."""
    import functools

    from warmdb._steps import run, run_async
    from warmdb.auth.tokens import TOKEN_CACHE
    from warmdb.bench.matrix import every_connect

    entry: dict[str, Any] = {"driver": variant.name, "connect_ms": None, "query_ms": None}
    try:
        adapter = variant.adapter()  # imports the driver before the clock starts
        connect = functools.partial(variant.front("connect"), **kwargs)
    except Exception as exc:  # a driver that cannot load is reported, not fatal
        entry["error"] = _one_line(exc)
        return entry
    TOKEN_CACHE.clear()  # the whole connect signs its token, as on a cold start
    steps = every_connect(connect, adapter, query)
    try:
        if variant.is_async:
            import asyncio

            connect_s, query_s = asyncio.run(run_async(steps))
        else:
            connect_s, query_s = run(steps)
    except Exception as exc:  # reported per driver: the others still run
        entry["error"] = _one_line(exc)
        return entry
    entry["connect_ms"] = _ms(connect_s)
    entry["query_ms"] = _ms(query_s)
    return entry


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def render(report: dict[str, Any]) -> str:
    """The probe's report as text: per family, one table of phases and one of drivers."""
    lines = [
        f"warmdb probe: first query {report['query']!r}; medians of {report['repeat']} rounds, ms"
    ]
    for family in report["families"]:
        lines += ["", *_render_family(family, report["repeat"])]
    return "\n".join(lines) + "\n"


def _render_family(family: dict[str, Any], repeat: int) -> list[str]:
    from warmdb.bench.report import table

    wire = family["wire"]
    lines = [f"{family['family']}: {family['endpoint']}"]
    if family["repeat"] < repeat:
        lines[0] += f" (stopped after {family['repeat']} of {repeat} rounds)"
    if wire.get("address"):
        details = [f"{wire.get('auth')} auth", wire.get("tls_version") or "no TLS"]
        if wire.get("server_version"):
            details.append(f"server {wire['server_version']}")
        lines.append(
            f"connected to {wire['address']} ({', '.join(details)}) with warmdb's own wire client"
        )
    phases: dict[str, float | None] = wire["phases"]
    total = sum(v for v in phases.values() if v is not None)
    rows = [
        [name, "-" if ms is None else f"{ms:.3f}", "-" if ms is None else f"{ms / total:.0%}"]
        for name, ms in phases.items()
        if total > 0
    ]
    if rows:
        rows.append(["sum of the phases", f"{total:.3f}", "100%"])
        lines += ["", table(["phase", "ms", "share"], rows)]
    if wire.get("error"):
        lines.append(f"error: {wire['error']}")
    # A driver's whole connect ends before its first query: compare it with the phases up to
    # and including authentication.
    connect_total = total - (phases.get("first query") or 0.0)
    driver_rows = []
    for entry in family["drivers"]:
        connect = entry["connect_ms"]
        if connect is None:
            driver_rows.append([entry["driver"], "-", "-", "-"])
            continue
        versus = f"{connect / connect_total:.2f}x" if connect_total > 0 else "-"
        driver_rows.append([entry["driver"], f"{connect:.3f}", f"{entry['query_ms']:.3f}", versus])
    if driver_rows:
        headers = ["driver (warmdb connect)", "whole connect", "first query", "vs phases to auth"]
        lines += ["", table(headers, driver_rows)]
    lines += [f"error: {e['driver']}: {e['error']}" for e in family["drivers"] if e.get("error")]
    return lines
