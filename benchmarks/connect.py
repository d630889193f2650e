"""Connect cost: warmdb's IAM-token path against each raw driver, and whole-process cold starts.

Run by hand (``./scripts/bench`` or ``.venv/bin/python benchmarks/connect.py``). Everything
runs against a throwaway local PostgreSQL with TLS started by this script, in one process
run, variants interleaved so that drift hits them alike; figures are quoted as ratios.

1. p50 connect+close time, per driver: the raw driver with a static password vs warmdb with
   an IAM token from environment credentials (cleartext password over TLS for both, which is
   how DSQL takes a token). Target: at most
   1.05x raw. Also shown: warmdb signing a new token on every connect (cache cleared).
2. Whole-process cold start: ``python -c "import ...; connect; SELECT 1"`` with bare psycopg2
   vs warmdb.psycopg2 (and aurora-dsql-python-connector when installed), wall time and peak
   RSS. Target: at most 1.3x the wall time and 10 MiB more peak memory. These logins use
   ``trust`` so that no variant needs a password known in advance; the token is still signed.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import psycopg
import psycopg2
import trustme

import warmdb.asyncpg
import warmdb.psycopg
import warmdb.psycopg2
from warmdb._tls import ssl_context
from warmdb.auth.tokens import TOKEN_CACHE
from warmdb.emulator.postgres import EmbeddedPostgres

REGION = "us-east-1"
STATIC_PASSWORD = "static-password-of-typical-length"
FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "AWS_SESSION_TOKEN": "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQ" + "x" * 600,
    "AWS_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}


def start_server(workdir: Path) -> EmbeddedPostgres:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ca.cert_pem.write_to_path(str(workdir / "ca.pem"))
    server = EmbeddedPostgres(
        tcp_host="127.0.0.1",
        tls=(cert.cert_chain_pems[0].bytes(), cert.private_key_pem.bytes()),
        hba=[
            "local all all trust",
            "hostssl all cold 127.0.0.1/32 trust",
            # Cleartext over TLS, as DSQL asks for tokens, checked against MD5 verifiers: DSQL
            # checks a signature, cheap whatever the length. (A SCRAM verifier costs 4096 PBKDF2
            # rounds that re-hash the whole password: ~3 ms for a 1,000-character token, on the
            # client with SCRAM auth or on the server with cleartext auth, a cost of the
            # password's length that would hide what this benchmark measures.)
            "hostssl all all 127.0.0.1/32 password",
        ],
        settings={"password_encryption": "md5"},
    )
    return server.start()


def set_password(server: EmbeddedPostgres, role: str, password: str | None) -> None:
    from psycopg import sql

    with psycopg.connect(**server.libpq_params(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )


def p90(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=10)[8]


def interleaved(variants: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Time each variant *rounds* times, round-robin, after one warm-up call each.

    The order is shuffled every round, so no variant always runs first or right after
    another. As timeit does, the garbage collector runs between rounds, not inside a timed
    call: otherwise a collection triggered by one variant's garbage is billed to whichever
    runs next (warmdb's own allocations per connect trigger none: see the note).
    """
    import gc
    import random

    for run in variants.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    shuffler = random.Random(7)
    for _ in range(rounds):
        shuffler.shuffle(names)
        gc.collect()
        gc.disable()
        try:
            for name in names:
                run = variants[name]
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
        finally:
            gc.enable()
    return times


def connect_benchmarks(
    port: int, rounds: int, token: str
) -> list[tuple[str, str, float, float, float]]:
    host = "127.0.0.1"
    raw = {"host": host, "port": port, "user": "static", "dbname": "postgres"}
    raw_token = {"host": host, "port": port, "user": "iam", "dbname": "postgres"}
    iam = {"host": host, "port": port, "user": "iam", "auth": "dsql", "region": REGION}
    loop = asyncio.new_event_loop()

    def fresh_token(connect: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            TOKEN_CACHE.clear()
            return connect()

        return run

    def psycopg2_raw() -> None:
        psycopg2.connect(password=STATIC_PASSWORD, sslmode="require", **raw).close()

    def psycopg2_raw_token() -> None:
        psycopg2.connect(password=token, sslmode="require", **raw_token).close()

    def psycopg2_warmdb() -> None:
        warmdb.psycopg2.connect(**iam).close()

    def psycopg_raw() -> None:
        psycopg.connect(password=STATIC_PASSWORD, sslmode="require", **raw).close()

    def psycopg_raw_token() -> None:
        psycopg.connect(password=token, sslmode="require", **raw_token).close()

    def psycopg_warmdb() -> None:
        warmdb.psycopg.connect(**iam).close()

    async def asyncpg_raw_async(user: str, password: str) -> None:
        conn = await asyncpg.connect(
            host=host, port=port, user=user, database="postgres",
            password=password, ssl=ssl_context("require", None),
        )  # fmt: skip
        await conn.close()

    async def asyncpg_warmdb_async() -> None:
        conn = await warmdb.asyncpg.connect(**iam)
        await conn.close()

    def asyncpg_raw() -> None:
        loop.run_until_complete(asyncpg_raw_async("static", STATIC_PASSWORD))

    def asyncpg_raw_token() -> None:
        loop.run_until_complete(asyncpg_raw_async("iam", token))

    def asyncpg_warmdb() -> None:
        loop.run_until_complete(asyncpg_warmdb_async())

    groups = {
        "psycopg2": (psycopg2_raw, psycopg2_raw_token, psycopg2_warmdb),
        "psycopg": (psycopg_raw, psycopg_raw_token, psycopg_warmdb),
        "asyncpg": (asyncpg_raw, asyncpg_raw_token, asyncpg_warmdb),
    }
    rows = []
    try:
        for driver, (raw_run, raw_token_run, warm_run) in groups.items():
            times = interleaved(
                {
                    "raw driver, static password": raw_run,
                    # Control: the same token as a static password, no warmdb. The gap from
                    # the row above is what any client pays for a ~1,000-character password.
                    "raw driver, the token as static password": raw_token_run,
                    "warmdb, IAM token (cached)": warm_run,
                    "warmdb, IAM token signed per connect": fresh_token(warm_run),
                },
                rounds,
            )
            base = statistics.median(times["raw driver, static password"])
            for name, samples in times.items():
                p50 = statistics.median(samples)
                rows.append((driver, name, p50 * 1e3, p90(samples) * 1e3, p50 / base))
    finally:
        loop.close()
    return rows


COLD_SCRIPTS = {
    "bare psycopg2": """
        import psycopg2
        conn = psycopg2.connect(host="127.0.0.1", port={port}, user="cold", dbname="postgres",
                                password="unused", sslmode="require")
    """,
    "warmdb.psycopg2 (IAM token)": """
        import warmdb.psycopg2 as db
        conn = db.connect(host="127.0.0.1", port={port}, user="cold", auth="dsql",
                          region="us-east-1")
    """,
    "aurora-dsql-python-connector": """
        import aurora_dsql_psycopg2 as dsql
        conn = dsql.connect(host="abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws",
                            hostaddr="127.0.0.1", port={port}, user="cold", region="us-east-1",
                            sslmode="require")
    """,
}
COLD_QUERY = """
    cur = conn.cursor()
    cur.execute("SELECT 1")
    assert cur.fetchone() == (1,)
    conn.close()
    # Peak resident memory of this process image. (The parent's rusage ru_maxrss would count
    # the pages of the forked benchmark process before exec.)
    with open("/proc/self/status") as status:
        print(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
"""


def run_cold(script: str) -> tuple[float, float]:
    """Run *script* in a fresh interpreter; return (wall seconds, peak RSS MiB)."""
    env = {**os.environ, **FAKE_ENV}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"cold-start script failed:\n{script}\n{result.stderr.decode()}")
    return elapsed, int(result.stdout.split()[-1]) / 1024  # VmHWM is in KiB


def cold_start_benchmarks(port: int, rounds: int) -> list[tuple[str, float, float, float, float]]:
    variants = {}
    for name, body in COLD_SCRIPTS.items():
        if name.startswith("aurora") and importlib.util.find_spec("aurora_dsql_psycopg2") is None:
            continue
        variants[name] = textwrap.dedent(body).format(port=port) + textwrap.dedent(COLD_QUERY)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for script in variants.values():  # warm the page cache for every variant
        run_cold(script)
    for _ in range(rounds):
        for name, script in variants.items():
            results[name].append(run_cold(script))
    base_wall = statistics.median(w for w, _ in results["bare psycopg2"])
    base_rss = statistics.median(r for _, r in results["bare psycopg2"])
    rows = []
    for name, samples in results.items():
        wall = statistics.median(w for w, _ in samples)
        rss = statistics.median(r for _, r in samples)
        rows.append((name, wall * 1e3, wall / base_wall, rss, rss - base_rss))
    return rows


def compile_warmdb() -> None:
    """Write warmdb's bytecode, as installing a wheel does, so cold starts don't compile it."""
    import compileall

    compileall.compile_dir(Path(warmdb.__file__).parent, quiet=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=300, help="connects per variant")
    parser.add_argument("--cold-rounds", type=int, default=30, help="cold starts per variant")
    args = parser.parse_args()
    os.environ.update(FAKE_ENV)
    compile_warmdb()

    with tempfile.TemporaryDirectory(prefix="warmdb-bench-") as workdir:
        server = start_server(Path(workdir))
        try:
            set_password(server, "static", STATIC_PASSWORD)
            set_password(server, "cold", None)
            # The token clock stands still for the run, so re-signing yields the same token:
            # the "signed per connect" variant then measures signing, and the role's password
            # can be that one token.
            frozen = time.time()
            TOKEN_CACHE.clock = lambda: frozen
            iam_token = warmdb.generate_token(
                host="127.0.0.1", port=server.port, user="iam", auth="dsql", region=REGION
            )
            set_password(server, "iam", iam_token)
            python = sys.version.split()[0]
            print(f"PostgreSQL {server.version()}, TLS, Python {python}")
            print(f"token length {len(iam_token)} characters (with a session token)\n")
            print("## Connect + close, p50 over", args.rounds, "rounds (interleaved)\n")
            print("| driver | variant | p50 ms | p90 ms | p50 / raw |")
            print("|---|---|---:|---:|---:|")
            rows = connect_benchmarks(server.port, args.rounds, iam_token)
            for driver, name, p50, p90, ratio in rows:
                print(f"| {driver} | {name} | {p50:.3f} | {p90:.3f} | {ratio:.3f}x |")
            print(f"\n## Cold start, median of {args.cold_rounds} fresh processes (interleaved)\n")
            print("| process | wall ms | wall / bare | peak RSS MiB | RSS vs bare MiB |")
            print("|---|---:|---:|---:|---:|")
            for name, wall, ratio, rss, extra in cold_start_benchmarks(
                server.port, args.cold_rounds
            ):
                print(f"| {name} | {wall:.1f} | {ratio:.2f}x | {rss:.1f} | {extra:+.1f} |")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
