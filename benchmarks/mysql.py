"""Connect cost of warmdb's MySQL drivers against each raw driver, and whole-process cold starts.

Run by hand: ``.venv/bin/python benchmarks/mysql.py [--rounds 200] [--cold-rounds 20]``.

Everything runs against the MySQL emulator (RDS IAM token checks, TLS, MariaDB behind it),
started by this script as its own process (``warmdb emulate --engine mysql``, so that its
threads do not share this interpreter's lock with the clients measured), in one run,
variants interleaved so that drift hits them alike; figures are quoted as ratios.

1. p50 connect+close time, per driver, over TLS: the raw driver with a static password vs
   warmdb with an IAM token from environment credentials (cached, and signed per connect).
   The emulator accepts tokens only, so the raw driver's "static password" is one token
   signed before the run: the same bytes on the wire, the same server work, and none of
   warmdb's (argument resolution, token cache, governor, retry loop, events). Target: at
   most 1.05x raw. A second run of the raw variant shows the noise of the run.
2. Whole-process cold start: ``python -c "import ...; connect; SELECT 1"`` with bare PyMySQL
   vs warmdb.pymysql, wall time and peak RSS, and whether botocore was imported (it must not
   be on the environment-credentials path). Target: at most 1.3x the wall time and 10 MiB
   more peak memory.
"""

# ruff: noqa: E402 (imports after the sys.path fix below)

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's directory comes first on sys.path, and this file (mysql.py)
# would hide mysql-connector's "mysql" package: take the directory off before importing it.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse
import asyncio
import json
import os
import signal
import ssl
import statistics
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import aiomysql
import mysql.connector
import pymysql

import warmdb
import warmdb.aiomysql
import warmdb.mysql_connector
import warmdb.pymysql
from warmdb.auth.tokens import TOKEN_CACHE

HOST = "127.0.0.1"
USER = "admin"


@contextmanager
def emulator() -> Iterator[SimpleNamespace]:
    """Run ``warmdb emulate --engine mysql --json``; yield its endpoint (host, port, region,
    ca_path, access_key_id, secret_access_key, server_version)."""
    # The engine's own command module: what ``warmdb emulate --engine mysql`` runs.
    launcher = (
        "import argparse, sys\n"
        "from warmdb.emulator.mysql import command\n"
        "parser = argparse.ArgumentParser()\n"
        "command.add_arguments(parser)\n"
        "sys.exit(command.run(parser.parse_args(sys.argv[1:])))\n"
    )
    command = [sys.executable, "-c", launcher, "--json"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError("warmdb emulate --engine mysql exited before it was ready")
        yield SimpleNamespace(**json.loads(line))
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def token() -> str:
    """The token warmdb would send (credentials from the environment), signed once."""
    return warmdb.generate_token(host=HOST, port=RDS.port, user=USER, auth="rds", region=RDS.region)


RDS = SimpleNamespace()


def p90(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=10)[8]


def interleaved(variants: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Time each variant *rounds* times, round-robin (order rotating), after a warm-up call."""
    for run in variants.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for round_number in range(rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - start)
    return times


def connect_benchmarks(rds: SimpleNamespace, rounds: int) -> list[tuple[str, str, float, float]]:
    static = token()
    ca = rds.ca_path
    context = ssl.create_default_context(cafile=ca)
    base = {"host": HOST, "port": rds.port, "user": USER}
    iam = {**base, "auth": "rds", "region": rds.region, "ssl_mode": "VERIFY_IDENTITY", "ssl_ca": ca}
    loop = asyncio.new_event_loop()

    def fresh_token(connect: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            TOKEN_CACHE.clear()
            return connect()

        return run

    def pymysql_raw() -> None:
        pymysql.connect(**base, password=static, ssl=context, connect_timeout=10).close()

    def pymysql_warmdb() -> None:
        warmdb.pymysql.connect(**iam).close()

    def connector_raw() -> None:
        mysql.connector.connect(
            **base, password=static, auth_plugin="mysql_clear_password", use_pure=True,
            ssl_ca=ca, ssl_verify_cert=True, ssl_verify_identity=True, connection_timeout=10,
        ).close()  # fmt: skip

    def connector_warmdb() -> None:
        warmdb.mysql_connector.connect(**iam).close()

    async def aiomysql_raw_async() -> None:
        conn = await aiomysql.connect(**base, password=static, ssl=context, connect_timeout=10)
        conn.close()

    async def aiomysql_warmdb_async() -> None:
        conn = await warmdb.aiomysql.connect(**iam)
        conn.close()

    def aiomysql_raw() -> None:
        loop.run_until_complete(aiomysql_raw_async())

    def aiomysql_warmdb() -> None:
        loop.run_until_complete(aiomysql_warmdb_async())

    groups = {
        "pymysql": (pymysql_raw, pymysql_warmdb),
        "mysql_connector": (connector_raw, connector_warmdb),
        "aiomysql": (aiomysql_raw, aiomysql_warmdb),
    }
    rows = []
    try:
        for driver, (raw_run, warm_run) in groups.items():
            times = interleaved(
                {
                    "raw driver, static password": raw_run,
                    # Control: the same raw connect again. Its distance from 1.000x is the
                    # run's noise, the yardstick for the rows below.
                    "raw driver again (noise control)": raw_run,
                    "warmdb, IAM token (cached)": warm_run,
                    "warmdb, IAM token signed per connect": fresh_token(warm_run),
                },
                rounds,
            )
            base_p50 = statistics.median(times["raw driver, static password"])
            for name, samples in times.items():
                p50 = statistics.median(samples)
                rows.append((driver, name, p50 * 1e3, p90(samples) * 1e3, p50 / base_p50))
    finally:
        loop.close()
    return rows


COLD_SCRIPTS = {
    "bare PyMySQL": """
        import os, pymysql
        conn = pymysql.connect(host="127.0.0.1", port={port}, user="admin",
                               password=os.environ["BENCH_TOKEN"], ssl={{"ca": {ca!r}}})
    """,
    "warmdb.pymysql (IAM token)": """
        import warmdb.pymysql as db
        conn = db.connect(host="127.0.0.1", port={port}, user="admin", auth="rds",
                          region={region!r}, ssl_mode="VERIFY_CA", ssl_ca={ca!r})
    """,
}
COLD_QUERY = """
    import sys
    cur = conn.cursor()
    cur.execute("SELECT 1")
    assert cur.fetchone() == (1,)
    conn.close()
    # Peak resident memory of this process image, and whether botocore came in.
    with open("/proc/self/status") as status:
        peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    print(int("botocore" in sys.modules), peak)
"""


def run_cold(script: str, env: dict[str, str]) -> tuple[float, float, bool]:
    """Run *script* in a fresh interpreter; return (wall seconds, peak RSS MiB, botocore)."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"cold-start script failed:\n{script}\n{result.stderr.decode()}")
    botocore, peak = result.stdout.split()[-2:]
    return elapsed, int(peak) / 1024, botocore == b"1"


def cold_start_benchmarks(
    rds: SimpleNamespace, rounds: int
) -> list[tuple[str, float, float, float, float, bool]]:
    env = {
        **os.environ,
        "AWS_EC2_METADATA_DISABLED": "true",
        "BENCH_TOKEN": token(),
    }
    env.pop("AWS_SESSION_TOKEN", None)
    fields = {"port": rds.port, "ca": rds.ca_path, "region": rds.region}
    variants = {
        name: textwrap.dedent(body).format(**fields) + textwrap.dedent(COLD_QUERY)
        for name, body in COLD_SCRIPTS.items()
    }
    results: dict[str, list[tuple[float, float, bool]]] = {name: [] for name in variants}
    for script in variants.values():  # warm the page cache for every variant
        run_cold(script, env)
    for _ in range(rounds):
        for name, script in variants.items():
            results[name].append(run_cold(script, env))
    base_wall = statistics.median(w for w, _, _ in results["bare PyMySQL"])
    base_rss = statistics.median(r for _, r, _ in results["bare PyMySQL"])
    rows = []
    for name, samples in results.items():
        wall = statistics.median(w for w, _, _ in samples)
        rss = statistics.median(r for _, r, _ in samples)
        botocore = any(b for _, _, b in samples)
        rows.append((name, wall * 1e3, wall / base_wall, rss, rss - base_rss, botocore))
    return rows


def compile_warmdb() -> None:
    """Write warmdb's bytecode, as installing a wheel does, so cold starts don't compile it."""
    import compileall

    compileall.compile_dir(Path(warmdb.__file__).parent, quiet=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200, help="connects per variant")
    parser.add_argument("--cold-rounds", type=int, default=20, help="cold starts per variant")
    args = parser.parse_args()
    compile_warmdb()
    with emulator() as rds:
        RDS.__dict__.update(vars(rds))
        os.environ["AWS_ACCESS_KEY_ID"] = rds.access_key_id
        os.environ["AWS_SECRET_ACCESS_KEY"] = rds.secret_access_key
        os.environ.pop("AWS_SESSION_TOKEN", None)
        print(
            f"MySQL emulator on MariaDB {rds.server_version}, TLS, Python {sys.version.split()[0]}"
        )
        print(f"\n## Connect + close, p50 over {args.rounds} rounds (interleaved)\n")
        print("| driver | variant | p50 ms | p90 ms | p50 / raw |")
        print("|---|---|---:|---:|---:|")
        for driver, name, p50, p90_ms, ratio in connect_benchmarks(rds, args.rounds):
            print(f"| {driver} | {name} | {p50:.3f} | {p90_ms:.3f} | {ratio:.3f}x |")
        print(f"\n## Cold start, median of {args.cold_rounds} fresh processes (interleaved)\n")
        print("| process | wall ms | wall / bare | peak RSS MiB | RSS vs bare MiB | botocore |")
        print("|---|---:|---:|---:|---:|---|")
        for name, wall, ratio, rss, extra, botocore in cold_start_benchmarks(rds, args.cold_rounds):
            imported = "imported" if botocore else "not imported"
            print(f"| {name} | {wall:.1f} | {ratio:.2f}x | {rss:.1f} | {extra:+.1f} | {imported} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
