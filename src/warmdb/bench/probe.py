"""``warmdb probe``: where the time of one connect goes, phase by phase, and per driver.

With no ``--host`` it probes the embedded DSQL emulator (as ``warmdb bench`` does). The probe
resolves the endpoint as ``connect()`` would, then times, once each:

1. credential resolution (environment variables, or botocore's chain for a profile);
2. token signing (SigV4 presigning, no cache);
3. DNS, TCP, the TLS handshake, PostgreSQL's startup and authentication and the first query,
   over a raw socket with the project's own wire code (:mod:`warmdb.bench.wire`);

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

from warmdb.bench.command import add_endpoint_arguments, endpoint_kwargs, one_line_errors

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

docs/bench.md shows how to read the output.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``probe`` options to *parser*."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EXAMPLES
    one_line_errors(parser)
    add = parser.add_argument
    add("--query", default="SELECT 1", help="the first query ('SELECT 1')")
    add(
        "--drivers",
        type=lambda text: [n.strip() for n in text.split(",") if n.strip()],
        metavar="NAME,...",
        help="driver variants to connect with (default: all installed)",
    )
    add(
        "--repeat",
        type=int,
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
        if args.repeat < 1:
            raise UsageError(f"--repeat {args.repeat} must be at least 1")
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
    return 0 if report["wire"].get("error") is None else 1


def probe(
    kwargs: dict[str, Any] | None, variants: list[Variant], query: str, *, repeat: int = 3
) -> dict[str, Any]:
    """Run the probe against *kwargs* (or the embedded emulator) and return its report.

    Each of *repeat* rounds runs the wire probe, then every driver; the report holds the
    median of each figure, and every round under ``rounds``. The wire probe speaks
    PostgreSQL: MySQL drivers (against the RDS MySQL emulator when there is no host) get
    their whole connects timed only.
    """
    from warmdb.bench.server import environment, open_server
    from warmdb.bench.variants import by_family

    rounds: list[dict[str, Any]] = []
    endpoints = []
    for family, group in by_family(tuple(variants)) or [("postgresql", ())]:
        server = open_server(kwargs, family=family)
        endpoints.append(server.description)
        try:
            with environment(server.environment):
                for number in range(repeat):
                    if family == "postgresql":
                        wire = _wire_phases(server.kwargs, query)
                    else:
                        wire = {"phases": {}, "error": None}
                    drivers = [_driver_connect(v, server.kwargs, query) for v in group]
                    if len(rounds) <= number:
                        rounds.append({"wire": {"phases": {}, "error": None}, "drivers": []})
                    if family == "postgresql":
                        rounds[number]["wire"] = wire
                    rounds[number]["drivers"].extend(drivers)
                    if wire["error"] is not None:
                        break
        finally:
            server.close()
    return {
        "endpoint": "; ".join(endpoints),
        "query": query,
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


def _wire_phases(kwargs: dict[str, Any], query: str) -> dict[str, Any]:
    """Credentials, signing and the raw-socket phases, in ms; ``error`` when one failed."""
    from warmdb.auth.credentials import credentials_source
    from warmdb.auth.tokens import TokenSpec, sign_token
    from warmdb.bench.wire import probe_connect
    from warmdb.endpoint import resolve
    from warmdb.errors import WarmdbError

    phases: dict[str, float | None] = {}
    result: dict[str, Any] = {"phases": phases, "error": None}
    try:
        endpoint, password, _ = resolve(None, kwargs)
        result["host"] = f"{endpoint.host}:{endpoint.port}"
        result["auth"] = endpoint.auth
        if endpoint.uses_token:
            assert endpoint.user is not None
            assert endpoint.region is not None
            started = time.perf_counter()
            credentials = credentials_source(profile=endpoint.profile)()
            phases["credentials"] = _ms(time.perf_counter() - started)
            spec = TokenSpec(
                kind=endpoint.auth,
                host=endpoint.host,
                port=endpoint.port,
                region=endpoint.region,
                user=endpoint.user,
                expires_in=endpoint.token_duration,
            )
            started = time.perf_counter()
            secret: str | None = sign_token(spec, credentials, time.time())
            phases["token signing"] = _ms(time.perf_counter() - started)
        else:
            secret = password() if callable(password) else password  # type: ignore[assignment]
        timings = probe_connect(
            host=endpoint.host,
            port=endpoint.port,
            user=endpoint.user or "postgres",
            dbname=endpoint.dbname or endpoint.user or "postgres",
            password=secret,
            sslmode=endpoint.sslmode or "prefer",
            sslrootcert=endpoint.sslrootcert,
            query=query,
        )
    except WarmdbError as exc:
        result["error"] = str(exc)
        return result
    phases["DNS"] = _ms(timings.dns)
    phases["TCP connect"] = _ms(timings.tcp)
    phases["TLS handshake"] = _ms(timings.tls)
    phases["startup + authentication"] = _ms(timings.startup)
    phases["first query"] = _ms(timings.query)
    result["address"] = timings.address
    result["tls_version"] = timings.tls_version
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
    """The probe's report as text: one table of phases, one of drivers."""
    from warmdb.bench.report import table

    wire = report["wire"]
    lines = [
        f"warmdb probe: {report['endpoint']}; first query {report['query']!r}; "
        f"medians of {report['repeat']} rounds, ms"
    ]
    if wire.get("address"):
        lines.append(
            f"connected to {wire['address']} ({wire.get('auth')} auth, "
            f"{wire.get('tls_version') or 'no TLS'}) with warmdb's own wire client"
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
    for entry in report["drivers"]:
        connect = entry["connect_ms"]
        if connect is None:
            driver_rows.append([entry["driver"], "-", "-", "-"])
            continue
        versus = f"{connect / connect_total:.2f}x" if connect_total > 0 else "-"
        driver_rows.append([entry["driver"], f"{connect:.3f}", f"{entry['query_ms']:.3f}", versus])
    if driver_rows:
        headers = ["driver (warmdb connect)", "whole connect", "first query", "vs phases to auth"]
        lines += ["", table(headers, driver_rows)]
    lines += [f"error: {e['driver']}: {e['error']}" for e in report["drivers"] if e.get("error")]
    return "\n".join(lines) + "\n"
