"""Benchmark of the sidecar: ``pgbench -S`` through it and directly, and its memory at rest.

Run: ``.venv/bin/python benchmarks/sidecar.py [--clients 1,10,50] [--seconds 5] [--json]``

Everything runs as separate processes, as in production: ``warmdb emulate`` (the DSQL
emulator), ``warmdb sidecar`` (PgBouncer 1.x supervised, tokens kept fresh) and ``pgbench``.

* Throughput and latency: ``pgbench -S -n`` (select-only, no vacuum) for ``--seconds`` per
  client count, the two paths back to back in the same run:

  - directly to the emulator: TLS (verify-full) and a token login per pgbench connection;
  - through the sidecar: plaintext on loopback to PgBouncer (what a function process
    does), PgBouncer's pooled TLS connections to the emulator (at most ``--pool-size``,
    20 by default as in the sidecar).

  Reported: transactions per second, p50 latency from pgbench's per-transaction log, the
  ratio sidecar/direct of both and the p50 latency the sidecar adds.
* Memory: resident set size (VmRSS) of the sidecar's Python process and of PgBouncer, at rest
  after start, and again at rest after the load.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from warmdb.auth.credentials import Credentials
from warmdb.auth.tokens import TokenSpec, sign_token
from warmdb.emulator.postgres import free_port


def launch(args: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen, dict]:
    process = subprocess.Popen(
        [sys.executable, "-m", "warmdb", *args, "--json", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    line = process.stdout.readline() if process.stdout else ""
    if not line:
        raise SystemExit(f"warmdb {args[0]} exited before it was ready")
    return process, json.loads(line)


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def pgbench(clients: int, seconds: int, env: dict[str, str], conninfo: list[str]) -> dict:
    """One ``pgbench -S`` run; tps and p50 latency (ms) from its per-transaction log."""
    with tempfile.TemporaryDirectory() as logs:
        done = subprocess.run(
            [
                "pgbench",
                "-S",
                "-n",
                "-c",
                str(clients),
                "-j",
                str(min(clients, 2)),
                "-T",
                str(seconds),
                "-l",
                f"--log-prefix={logs}/tx",
                *conninfo,
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0 or not any(Path(logs).iterdir()):
            raise SystemExit(f"pgbench failed:\n{done.stdout}\n{done.stderr}")
        latencies = [
            int(line.split()[2])
            for path in Path(logs).iterdir()
            for line in path.read_text().splitlines()
        ]
    match = re.search(r"tps = ([\d.]+) \(without initial connection", done.stdout)
    return {
        "tps": float(match.group(1)) if match else float("nan"),
        "p50_ms": statistics.median(latencies) / 1000,
        "transactions": len(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default="1,10,50", help="client counts (default 1,10,50)")
    parser.add_argument("--seconds", type=int, default=5, help="seconds per pgbench run")
    parser.add_argument("--pool-size", type=int, default=20, help="the sidecar's pool size")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    if shutil.which("pgbench") is None:
        raise SystemExit("pgbench not found (Debian: apt-get install postgresql-client)")

    emulator, dsql = launch(["emulate", "--hostname", "localhost"])
    base = Path(tempfile.mkdtemp(prefix="warmdb-sidecar-bench-"))
    # PgBouncer may run as another account: it must be able to enter the directory.
    base.chmod(0o711)
    sidecar = None
    try:
        init = subprocess.run(
            [
                "pgbench",
                "-i",
                "-s",
                "1",
                "-q",
                "-h",
                dsql["upstream_socket_dir"],
                "-p",
                str(dsql["upstream_port"]),
                "-U",
                "postgres",
                "postgres",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if init.returncode != 0:
            raise SystemExit(f"pgbench -i failed:\n{init.stderr}")
        credentials = Credentials(dsql["access_key_id"], dsql["secret_access_key"])
        keys = {
            "AWS_ACCESS_KEY_ID": credentials.access_key,
            "AWS_SECRET_ACCESS_KEY": credentials.secret_key,
            "AWS_REGION": dsql["region"],
        }
        sidecar, info = launch(
            [
                "sidecar",
                "--host",
                "localhost",
                "--port",
                str(dsql["port"]),
                "--auth",
                "dsql",
                "--sslrootcert",
                dsql["ca_path"],
                "--listen",
                f"127.0.0.1:{free_port()}",
                "--state-file",
                str(base / "sidecar" / "state.json"),
                "--pool-size",
                str(args.pool_size),
            ],
            env={**os.environ, **keys},
        )
        time.sleep(2)
        memory = {
            "sidecar_python_rss_kib_at_start": rss_kib(info["pid"]),
            "pgbouncer_rss_kib_at_start": rss_kib(info["pgbouncer_pid"]),
        }
        token = sign_token(
            TokenSpec(
                kind="dsql",
                host="localhost",
                port=dsql["port"],
                region=dsql["region"],
                user="admin",
                expires_in=3600,
            ),
            credentials,
            time.time(),
        )
        direct_env = {
            **os.environ,
            "PGPASSWORD": token,
            "PGSSLMODE": "verify-full",
            "PGSSLROOTCERT": dsql["ca_path"],
        }
        direct = ["-h", "localhost", "-p", str(dsql["port"]), "-U", "admin", "postgres"]
        client_password = Path(info["password_file"]).read_text().strip()
        sidecar_env = {**os.environ, "PGPASSWORD": client_password, "PGSSLMODE": "disable"}
        listen_host, _, listen_port = info["listen"].rpartition(":")
        through = ["-h", listen_host, "-p", listen_port, "-U", info["user"], info["dbname"]]

        rows = []
        for clients in (int(c) for c in args.clients.split(",")):
            d = pgbench(clients, args.seconds, direct_env, direct)
            s = pgbench(clients, args.seconds, sidecar_env, through)
            rows.append(
                {
                    "clients": clients,
                    "direct": d,
                    "sidecar": s,
                    "tps_ratio": s["tps"] / d["tps"],
                    "p50_added_ms": s["p50_ms"] - d["p50_ms"],
                }
            )
        time.sleep(2)
        memory["sidecar_python_rss_kib_after_load"] = rss_kib(info["pid"])
        memory["pgbouncer_rss_kib_after_load"] = rss_kib(info["pgbouncer_pid"])
    finally:
        if sidecar is not None:
            stop(sidecar)
        stop(emulator)
        shutil.rmtree(base, ignore_errors=True)

    result = {
        "pgbouncer_version": info["pgbouncer_version"],
        "seconds_per_run": args.seconds,
        "pool_size": args.pool_size,
        "runs": rows,
        "memory": memory,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"pgbench -S, {args.seconds} s per run, PgBouncer {info['pgbouncer_version']}, "
        f"pool size {args.pool_size}"
    )
    print(
        f"{'clients':>7} {'direct tps':>11} {'sidecar tps':>12} {'ratio':>6} "
        f"{'direct p50':>11} {'sidecar p50':>12} {'added p50':>10}"
    )
    for row in rows:
        d, s = row["direct"], row["sidecar"]
        print(
            f"{row['clients']:>7} {d['tps']:>11.0f} {s['tps']:>12.0f} {row['tps_ratio']:>6.2f} "
            f"{d['p50_ms']:>9.3f}ms {s['p50_ms']:>10.3f}ms {row['p50_added_ms']:>8.3f}ms"
        )
    print(
        "memory at rest (VmRSS): sidecar Python "
        f"{memory['sidecar_python_rss_kib_at_start'] / 1024:.1f} MiB at start, "
        f"{memory['sidecar_python_rss_kib_after_load'] / 1024:.1f} MiB after the load; "
        f"PgBouncer {memory['pgbouncer_rss_kib_at_start'] / 1024:.1f} MiB, "
        f"{memory['pgbouncer_rss_kib_after_load'] / 1024:.1f} MiB"
    )


if __name__ == "__main__":
    main()
