"""Benchmark of the DSQL emulator: latency, throughput, capacity, large messages, startup.

Run: ``.venv/bin/python benchmarks/emulator.py [--queries 5000] [--rounds 5] [--json]``

Everything is measured in one run, the emulator next to its own upstream, and reported as
differences and ratios (absolute times depend on the machine).

* Startup: wall time from launching ``warmdb emulate --json`` to its ready line (median of
  ``--starts`` runs; the target is under 3 s).
* Latency: p50 round trip of ``SELECT 1`` (psycopg, autocommit) in the same run, interleaved
  round by round:

  - through the emulator (TLS, token login, framing and limit checks);
  - directly to the emulator's upstream over its Unix socket (the issue's baseline);
  - directly to a second PostgreSQL over TCP with TLS, which separates the cost of TLS over
    TCP (paid by any DSQL client) from the cost of the proxy hop itself.

  The emulator runs in its own process, as ``warmdb emulate`` does; the target is at most
  0.15 ms added at p50 over the Unix-socket baseline on a 2-core machine. p99 is reported
  too (over every query of every round).
* Throughput: ``pgbench -S`` (select only, ``-n``: no VACUUM, which DSQL refuses) with 1, 10
  and 50 clients, through the emulator (``sslmode=require``, a token as PGPASSWORD) and
  directly to its upstream's Unix socket, one after the other for each client count; the
  ratio is emulator tps / direct tps.
* Seed 002's shape: ``--burst`` (100) clients at once, each connects, queries, holds
  ``--hold`` seconds, queries again and disconnects; errors are counted (target: zero).
* One large message: a ``--large-mib`` (32) MiB query through the emulator and directly
  (ratio, target at most 2), while another client's ``SELECT 1`` through the emulator is
  timed (its worst and p99 round trip during the large query).
* Memory per idle client connection: ``--idle`` (200) connections opened and left idle;
  the emulator process's RSS growth and the new upstream backends' PSS (proportional set
  size: shared pages divided among their users), each divided by the count.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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


PGBENCH = Path("/usr/lib/postgresql/15/bin/pgbench")


def round_trips_us(conn: psycopg.Connection, queries: int) -> list[float]:
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
        times.append((clock() - start) / 1000)
    return times


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Endpoint:
    """How to reach the running emulator and its upstream."""

    def __init__(self, info: dict) -> None:
        self.info = info
        self.keys = Credentials(info["access_key_id"], info["secret_access_key"])

    def token(self, user: str = "admin") -> str:
        spec = TokenSpec(
            kind="dsql",
            host=self.info["hostname"],
            port=self.info["port"],
            region=self.info["region"],
            user=user,
            expires_in=3600,
        )
        return sign_token(spec, self.keys, time.time())

    def emulator_params(self) -> dict[str, object]:
        info = self.info
        return {
            "host": info["hostname"],
            "hostaddr": info["host"],
            "port": info["port"],
            "user": "admin",
            "dbname": "postgres",
            "sslmode": "verify-full",
            "sslrootcert": info["ca_path"],
        }

    def direct_params(self) -> dict[str, object]:
        info = self.info
        return {
            "host": info["upstream_socket_dir"],
            "port": info["upstream_port"],
            "user": "postgres",
            "dbname": "postgres",
        }

    def conninfo(self, params: dict[str, object]) -> str:
        return " ".join(f"{k}={v}" for k, v in params.items())


def pgbench_tps(endpoint: Endpoint, clients: int, seconds: float) -> dict[str, float]:
    """tps of ``pgbench -S`` through the emulator and directly, for *clients* clients."""
    through = {**endpoint.emulator_params(), "sslmode": "require"}
    through.pop("sslrootcert")
    targets = {
        "emulator": (endpoint.conninfo(through), {"PGPASSWORD": endpoint.token()}),
        "direct": (endpoint.conninfo(endpoint.direct_params()), {}),
    }
    tps = {}
    for name, (conninfo, env) in targets.items():
        result = subprocess.run(
            [
                str(PGBENCH),
                "-n",
                "-S",
                "-c",
                str(clients),
                "-j",
                str(min(clients, 2)),
                "-T",
                str(seconds),
                conninfo,
            ],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            check=False,
        )
        match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", result.stdout)
        if result.returncode != 0 or match is None:
            raise SystemExit(
                f"pgbench against {name} failed ({result.returncode}): "
                f"{(result.stderr or result.stdout).strip()[-300:]}"
            )
        tps[name] = float(match.group(1))
    return tps


def seed_002(endpoint: Endpoint, clients: int, hold: float) -> dict[str, object]:
    """*clients* at once: connect, query, hold, query, disconnect. Count the errors."""
    params = endpoint.emulator_params()
    token = endpoint.token()
    errors: list[str] = []
    start = threading.Barrier(clients)

    def one(_: int) -> float:
        start.wait()
        began = time.perf_counter()
        try:
            with psycopg.connect(**params, password=token, autocommit=True) as conn:
                conn.execute("select 1").fetchone()
                time.sleep(hold)
                conn.execute("select 1").fetchone()
        except psycopg.Error as exc:
            errors.append(type(exc).__name__)
        return time.perf_counter() - began - hold

    with ThreadPoolExecutor(max_workers=clients) as pool:
        spent = list(pool.map(one, range(clients)))
    return {
        "clients": clients,
        "hold_s": hold,
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "p50_connect_and_queries_ms": round(statistics.median(spent) * 1000, 1),
        "max_connect_and_queries_ms": round(max(spent) * 1000, 1),
    }


def large_query(endpoint: Endpoint, mib: int) -> dict[str, object]:
    """A *mib* MiB query through the emulator and directly; others' SELECT 1 meanwhile."""
    sql = "select length('" + "x" * (mib * 1024 * 1024) + "')"
    token = endpoint.token()
    seconds = {}
    for name, params in (
        ("direct", endpoint.direct_params()),
        ("emulator", {**endpoint.emulator_params(), "password": token}),
    ):
        with psycopg.connect(**params, autocommit=True) as conn:
            started = time.perf_counter()
            conn.execute(sql).fetchone()
            seconds[name] = time.perf_counter() - started
    # Again through the emulator, with a bystander timing SELECT 1 through it meanwhile.
    bystander_us: list[float] = []
    done = threading.Event()

    def bystander() -> None:
        with psycopg.connect(**endpoint.emulator_params(), password=token, autocommit=True) as c:
            while not done.is_set():
                began = time.perf_counter_ns()
                c.execute("select 1").fetchone()
                bystander_us.append((time.perf_counter_ns() - began) / 1000)

    with psycopg.connect(**endpoint.emulator_params(), password=token, autocommit=True) as conn:
        thread = threading.Thread(target=bystander)
        thread.start()
        time.sleep(0.2)
        conn.execute(sql).fetchone()
        done.set()
        thread.join()
    return {
        "mib": mib,
        "direct_s": round(seconds["direct"], 3),
        "emulator_s": round(seconds["emulator"], 3),
        "ratio": round(seconds["emulator"] / seconds["direct"], 2),
        "bystander_select1_p99_ms": round(percentile(bystander_us, 0.99) / 1000, 2),
        "bystander_select1_max_ms": round(max(bystander_us) / 1000, 2),
        "bystander_queries": len(bystander_us),
    }


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pss_kib(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    match = re.search(r"^Pss:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def idle_memory(endpoint: Endpoint, emulator_pid: int, count: int) -> dict[str, object]:
    """Memory each idle client connection costs: emulator RSS and upstream backend PSS."""
    token = endpoint.token()
    with psycopg.connect(**endpoint.direct_params(), autocommit=True) as direct:

        def backends() -> set[int]:
            rows = direct.execute(
                "select pid from pg_stat_activity where backend_type = 'client backend' "
                "and usename = 'admin'"
            ).fetchall()
            return {row[0] for row in rows}

        # Warm up: a first batch opened and closed, so thread stacks and buffers the
        # allocator keeps are already counted before the measured batch.
        for conn in [
            psycopg.connect(**endpoint.emulator_params(), password=token) for _ in range(count)
        ]:
            conn.close()
        time.sleep(1.0)  # let those sessions' threads and backends finish
        before_rss, before_pids = rss_kib(emulator_pid), backends()
        connections = [
            psycopg.connect(**endpoint.emulator_params(), password=token, autocommit=True)
            for _ in range(count)
        ]
        for conn in connections:
            conn.execute("select 1").fetchone()
        time.sleep(0.5)
        after_rss = rss_kib(emulator_pid)
        new_pids = backends() - before_pids
        backend_pss = sum(pss_kib(pid) for pid in new_pids)
        for conn in connections:
            conn.close()
    return {
        "connections": count,
        "emulator_rss_kib_per_connection": round((after_rss - before_rss) / count, 1),
        "upstream_backend_pss_kib_per_connection": round(backend_pss / max(1, len(new_pids)), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=5000, help="queries per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--starts", type=int, default=3, help="startup measurements")
    parser.add_argument("--pgbench-seconds", type=int, default=5, help="per pgbench run")
    parser.add_argument("--burst", type=int, default=100, help="seed 002: clients at once")
    parser.add_argument("--hold", type=float, default=1.0, help="seed 002: seconds held")
    parser.add_argument("--large-mib", type=int, default=32, help="the large query's size")
    parser.add_argument("--idle", type=int, default=200, help="idle connections for memory")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    startups = []
    for _ in range(args.starts - 1):
        process, _, elapsed = launch()
        startups.append(elapsed)
        stop(process)
    process, info, elapsed = launch()
    startups.append(elapsed)

    endpoint = Endpoint(info)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    tls_pg = EmbeddedPostgres(
        tcp_host="127.0.0.1",
        tls=(cert.cert_chain_pems[0].bytes(), cert.private_key_pem.bytes()),
        hba=["local all all trust", "hostssl all all 127.0.0.1/32 trust"],
    )
    tls_pg.start()
    try:
        with ca.cert_pem.tempfile() as tls_ca:
            connections = {
                "emulator": psycopg.connect(
                    **endpoint.emulator_params(), password=endpoint.token(), autocommit=True
                ),
                "direct_unix": psycopg.connect(**endpoint.direct_params(), autocommit=True),
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
        samples: dict[str, list[float]] = {name: [] for name in connections}
        for _ in range(args.rounds):
            for name, conn in connections.items():
                times = round_trips_us(conn, args.queries)
                rounds[name].append(statistics.median(times))
                samples[name] += times
        for conn in connections.values():
            conn.close()
        tls_pg.stop()

        subprocess.run(
            [str(PGBENCH), "-i", "-q", "-s", "1", endpoint.conninfo(endpoint.direct_params())],
            capture_output=True,
            check=True,
        )
        pgbench = {}
        for clients in (1, 10, 50):
            tps = pgbench_tps(endpoint, clients, args.pgbench_seconds)
            pgbench[str(clients)] = {
                "emulator_tps": round(tps["emulator"]),
                "direct_tps": round(tps["direct"]),
                "ratio": round(tps["emulator"] / tps["direct"], 2),
            }
        seed = seed_002(endpoint, args.burst, args.hold)
        large = large_query(endpoint, args.large_mib)
        memory = idle_memory(endpoint, process.pid, args.idle)
    finally:
        tls_pg.stop()
        stop(process)

    p50 = {name: statistics.median(values) for name, values in rounds.items()}
    p99 = {name: percentile(values, 0.99) for name, values in samples.items()}
    results = {
        "postgres_version": info["postgres_version"],
        "queries_per_round": args.queries,
        "rounds": args.rounds,
        "p50_us": {k: round(v, 1) for k, v in p50.items()},
        "p99_us": {k: round(v, 1) for k, v in p99.items()},
        "added_p50_us_vs_unix": round(p50["emulator"] - p50["direct_unix"], 1),
        "added_p99_us_vs_unix": round(p99["emulator"] - p99["direct_unix"], 1),
        "added_p50_us_vs_tls_tcp": round(p50["emulator"] - p50["direct_tls_tcp"], 1),
        "pgbench_select_only": pgbench,
        "seed_002": seed,
        "large_query": large,
        "idle_memory": memory,
        "startup_s": [round(s, 2) for s in startups],
        "startup_median_s": round(statistics.median(startups), 2),
    }
    if args.json:
        print(json.dumps(results))
        return
    print(f"warmdb emulate benchmark (embedded PostgreSQL {results['postgres_version']})")
    print(f"  SELECT 1, {args.rounds} rounds x {args.queries} queries (p50: median of rounds):")
    for name in results["p50_us"]:
        print(
            f"    {name:<15} p50 {results['p50_us'][name]:8.1f} us   "
            f"p99 {results['p99_us'][name]:8.1f} us"
        )
    print(
        f"  added vs direct Unix socket : p50 {results['added_p50_us_vs_unix']} us, "
        f"p99 {results['added_p99_us_vs_unix']} us"
    )
    print(f"  added vs direct TLS over TCP: p50 {results['added_p50_us_vs_tls_tcp']} us")
    print(f"  pgbench -S, {args.pgbench_seconds} s each (tps emulator / direct = ratio):")
    for clients, row in pgbench.items():
        print(
            f"    {clients:>3} clients: {row['emulator_tps']:>7} / {row['direct_tps']:>7}"
            f" = {row['ratio']}"
        )
    print(
        f"  seed 002 shape: {seed['clients']} clients, hold {seed['hold_s']} s: "
        f"{seed['errors']} errors, connect+queries p50 {seed['p50_connect_and_queries_ms']} ms,"
        f" max {seed['max_connect_and_queries_ms']} ms"
    )
    print(
        f"  {large['mib']} MiB query: emulator {large['emulator_s']} s, direct "
        f"{large['direct_s']} s, ratio {large['ratio']}; others' SELECT 1 meanwhile: p99 "
        f"{large['bystander_select1_p99_ms']} ms, max {large['bystander_select1_max_ms']} ms"
    )
    print(
        f"  idle connection ({memory['connections']} open): emulator "
        f"{memory['emulator_rss_kib_per_connection']} KiB RSS, upstream backend "
        f"{memory['upstream_backend_pss_kib_per_connection']} KiB PSS each"
    )
    print(f"  startup to ready: median {results['startup_median_s']} s {results['startup_s']}")


if __name__ == "__main__":
    main()
