"""Benchmark of the DSQL emulator: added round-trip latency and startup time.

Run: ``.venv/bin/python benchmarks/emulator.py [--queries 5000] [--rounds 5] [--json]``

* Startup: wall time from launching ``warmdb emulate --json`` to its ready line (median of
  ``--starts`` runs; the target is under 3 s).
* Latency: p50 round trip of ``SELECT 1`` (psycopg, autocommit) in the same run, interleaved
  round by round:

  - through the emulator (TLS, token login, framing and limit checks);
  - directly to the emulator's upstream over its Unix socket (the issue's baseline);
  - directly to a second PostgreSQL over TCP with TLS, which separates the cost of TLS over
    TCP (paid by any DSQL client) from the cost of the proxy hop itself.

  The emulator runs in its own process, as ``warmdb emulate`` does; the target is at most
  0.15 ms added at p50 over the Unix-socket baseline on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import time

import psycopg
import trustme

from warmdb.auth.credentials import Credentials
from warmdb.auth.tokens import TokenSpec, sign_token
from warmdb.emulator.postgres import EmbeddedPostgres


def launch() -> tuple[subprocess.Popen[str], dict, float]:
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "warmdb", "emulate", "--json", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()
    elapsed = time.perf_counter() - started
    if not line:
        raise SystemExit("warmdb emulate exited before it was ready")
    return process, json.loads(line), elapsed


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=30)


def p50_round_trip_us(conn: psycopg.Connection, queries: int) -> float:
    cursor = conn.cursor()
    for _ in range(200):  # warm up: caches, branch predictors, TLS session state
        cursor.execute("select 1")
        cursor.fetchone()
    times = []
    clock = time.perf_counter_ns
    for _ in range(queries):
        start = clock()
        cursor.execute("select 1")
        cursor.fetchone()
        times.append(clock() - start)
    return statistics.median(times) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=5000, help="queries per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--starts", type=int, default=3, help="startup measurements")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    startups = []
    for _ in range(args.starts - 1):
        process, _, elapsed = launch()
        startups.append(elapsed)
        stop(process)
    process, info, elapsed = launch()
    startups.append(elapsed)

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    tls_pg = EmbeddedPostgres(
        tcp_host="127.0.0.1",
        tls=(cert.cert_chain_pems[0].bytes(), cert.private_key_pem.bytes()),
        hba=["local all all trust", "hostssl all all 127.0.0.1/32 trust"],
    )
    tls_pg.start()
    try:
        keys = Credentials(info["access_key_id"], info["secret_access_key"])
        spec = TokenSpec(
            kind="dsql",
            host=info["hostname"],
            port=info["port"],
            region=info["region"],
            user="admin",
            expires_in=3600,
        )
        with ca.cert_pem.tempfile() as tls_ca:
            connections = {
                "emulator": psycopg.connect(
                    host=info["hostname"],
                    hostaddr=info["host"],
                    port=info["port"],
                    user="admin",
                    dbname="postgres",
                    sslmode="verify-full",
                    sslrootcert=info["ca_path"],
                    password=sign_token(spec, keys, time.time()),
                    autocommit=True,
                ),
                "direct_unix": psycopg.connect(
                    host=info["upstream_socket_dir"],
                    port=info["upstream_port"],
                    user="postgres",
                    dbname="postgres",
                    autocommit=True,
                ),
                "direct_tls_tcp": psycopg.connect(
                    host="127.0.0.1",
                    port=tls_pg.port,
                    user="postgres",
                    dbname="postgres",
                    sslmode="verify-full",
                    sslrootcert=tls_ca,
                    autocommit=True,
                ),
            }
        rounds: dict[str, list[float]] = {name: [] for name in connections}
        for _ in range(args.rounds):
            for name, conn in connections.items():
                rounds[name].append(p50_round_trip_us(conn, args.queries))
        for conn in connections.values():
            conn.close()
    finally:
        tls_pg.stop()
        stop(process)

    p50 = {name: statistics.median(values) for name, values in rounds.items()}
    results = {
        "postgres_version": info["postgres_version"],
        "queries_per_round": args.queries,
        "rounds": args.rounds,
        "p50_us": {k: round(v, 1) for k, v in p50.items()},
        "added_p50_us_vs_unix": round(p50["emulator"] - p50["direct_unix"], 1),
        "added_p50_us_vs_tls_tcp": round(p50["emulator"] - p50["direct_tls_tcp"], 1),
        "startup_s": [round(s, 2) for s in startups],
        "startup_median_s": round(statistics.median(startups), 2),
    }
    if args.json:
        print(json.dumps(results))
        return
    print(f"warmdb emulate benchmark (embedded PostgreSQL {results['postgres_version']})")
    print(f"  SELECT 1 p50, median of {args.rounds} rounds x {args.queries} queries:")
    for name, value in results["p50_us"].items():
        print(f"    {name:<15} {value:8.1f} us")
    print(f"  added by the emulator vs direct Unix socket : {results['added_p50_us_vs_unix']} us")
    print(
        f"  added by the emulator vs direct TLS over TCP: {results['added_p50_us_vs_tls_tcp']} us"
    )
    print(f"  startup to ready: median {results['startup_median_s']} s {results['startup_s']}")


if __name__ == "__main__":
    main()
