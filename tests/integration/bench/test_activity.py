"""The concurrency mode against a real endpoint: the peak of server connections, sampled.

The endpoint is the suite's TLS PostgreSQL with password logins, named with ``--host`` and
``--port`` as a user names a real server: ``warmdb bench`` cannot read an emulator's
statistics there and asks ``pg_stat_activity`` on a connection of its own.
"""

from __future__ import annotations

import json

import pytest

from tests.integration.bench.conftest import credentials_environment
from warmdb.bench.activity import ActivitySampler, SamplerError
from warmdb.bench.variants import select_variants
from warmdb.cli import main

PASSWORD = "bench-activity-secret"


@pytest.fixture(scope="module")
def no_stats_database(tls_server):
    """A database whose ``pg_stat_activity`` PUBLIC may not read (a view of its own catalog)."""
    with tls_server.admin() as conn:
        conn.execute("DROP DATABASE IF EXISTS bench_no_stats")
        conn.execute("CREATE DATABASE bench_no_stats")
    params = {**tls_server.postgres.libpq_params(), "dbname": "bench_no_stats"}
    import psycopg

    with psycopg.connect(**params, autocommit=True) as conn:
        conn.execute("REVOKE SELECT ON pg_catalog.pg_stat_activity FROM PUBLIC")
    yield "bench_no_stats"
    with tls_server.admin() as conn:
        conn.execute("DROP DATABASE IF EXISTS bench_no_stats WITH (FORCE)")


def password_kwargs(tls_server, role, password):
    """connect()'s arguments for *role* on the suite's TLS server, by password."""
    return {
        "host": "127.0.0.1",
        "port": tls_server.port,
        "auth": "password",
        "user": role,
        "dbname": "postgres",
        "sslmode": "require",
        "password": password,
    }


def endpoint_args(tls_server, role, dbname="postgres"):
    return [
        "--host", "127.0.0.1",
        "--port", str(tls_server.port),
        "--auth", "password",
        "--user", role,
        "--dbname", dbname,
        "--sslmode", "require",
        "-o", f"password={PASSWORD}",
    ]  # fmt: skip


def run_concurrency(tmp_path, args, driver, concurrency):
    path = tmp_path / "concurrency.json"
    status = main(
        [
            "bench",
            "--concurrency", str(concurrency),
            "--requests", str(2 * concurrency),
            "--hold", "0.4",
            "--hold-scale", "1",
            "--drivers", driver,
            "--json", str(path),
            "--no-progress",
            *args,
        ]
    )  # fmt: skip
    assert status == 0
    data = json.loads(path.read_text())
    (run,) = data["concurrency"]
    assert run["failed"] == 0
    assert run["latency"]["n"] == 2 * concurrency
    return run, data["environment"]["notes"]


@pytest.mark.parametrize("driver", ["psycopg2", "asyncpg"])
def test_the_peak_comes_from_pg_stat_activity(tmp_path, tls_server, make_role, driver):
    role = make_role(PASSWORD)
    run, notes = run_concurrency(tmp_path, endpoint_args(tls_server, role), driver, 8)
    # Every request in flight holds one server connection; the sampler's own is not counted.
    assert 7 <= run["peak_server_connections"] <= 8, notes
    assert not [n for n in notes if "peak server connections" in n]


def test_a_sampler_without_privilege_says_why(tmp_path, tls_server, make_role, no_stats_database):
    role = make_role(PASSWORD)
    args = endpoint_args(tls_server, role, dbname=no_stats_database)
    run, notes = run_concurrency(tmp_path, args, "psycopg2", 4)
    assert run["peak_server_connections"] is None
    (note,) = [n for n in notes if "peak server connections" in n]
    assert "permission denied" in note
    assert "\n" not in note


def test_a_sampler_that_cannot_connect_says_why(tls_server, make_role):
    role = make_role(PASSWORD)
    (variant,) = select_variants(["psycopg2"])
    kwargs = password_kwargs(tls_server, role, "not-the-password")
    with pytest.raises(SamplerError, match=r"^cannot connect: ") as refused:
        ActivitySampler(variant, kwargs)
    assert "not-the-password" not in str(refused.value)


def test_the_sampler_counts_other_sessions_only(tls_server, make_role):
    role = make_role(PASSWORD)
    (variant,) = select_variants(["psycopg2"])
    kwargs = password_kwargs(tls_server, role, PASSWORD)
    sampler = ActivitySampler(variant, kwargs)
    try:
        assert sampler() == 0
        import psycopg2

        others = [
            psycopg2.connect(
                host="127.0.0.1",
                port=tls_server.port,
                user=role,
                password=PASSWORD,
                dbname="postgres",
                sslmode="require",
            )
            for _ in range(3)
        ]
        assert sampler() == 3
        for conn in others:
            conn.close()
    finally:
        sampler.close()


@pytest.mark.parametrize("driver", ["pymysql", "aiomysql"])
def test_the_peak_comes_from_the_processlist(tmp_path, monkeypatch, mysql_emulator, driver):
    # The RDS MySQL emulator named as a real endpoint: the sampler asks MariaDB's processlist.
    credentials_environment(monkeypatch, mysql_emulator.credentials)
    args = [
        "--host", "127.0.0.1",
        "--port", str(mysql_emulator.port),
        "--auth", "rds",
        "--region", mysql_emulator.region,
        "--user", "admin",
    ]  # fmt: skip
    # The session's emulator may keep other tests' idle connections of the same user.
    (variant,) = select_variants([driver])
    kwargs = {"host": "127.0.0.1", "port": mysql_emulator.port, "auth": "rds", "user": "admin"}
    sampler = ActivitySampler(variant, {**kwargs, "region": mysql_emulator.region})
    try:
        before = sampler()
    finally:
        sampler.close()
    run, notes = run_concurrency(tmp_path, args, driver, 6)
    assert before + 5 <= run["peak_server_connections"] <= before + 6, notes


def test_via_sidecar_on_a_real_endpoint_counts_what_pgbouncer_opens(tmp_path, monkeypatch):
    # An RDS PostgreSQL emulator named as a real endpoint (IAM tokens, which the sidecar
    # needs); the sampler goes straight to it, so PgBouncer's server connections are counted.
    from warmdb.emulator.service import Emulator

    with Emulator(engine="rds-postgres", hostname="localhost", temporary_credentials=True) as rds:
        credentials_environment(monkeypatch, rds.credentials)
        path = tmp_path / "sidecar.json"
        status = main(
            [
                "bench",
                "--host", "localhost",
                "--port", str(rds.port),
                "--auth", "rds",
                "--region", rds.region,
                "--user", "admin",
                "--dbname", "postgres",
                "--sslmode", "verify-full",
                "--sslrootcert", str(rds.ca_path),
                "--concurrency", "30",
                "--requests", "60",
                "--hold", "0.3",
                "--hold-scale", "1",
                "--drivers", "psycopg2",
                "--via-sidecar",
                "--json", str(path),
                "--no-progress",
            ]
        )  # fmt: skip
    assert status == 0
    runs = {r["via"]: r for r in json.loads(path.read_text())["concurrency"]}
    assert runs["direct"]["failed"] == runs["sidecar"]["failed"] == 0
    assert 28 <= runs["direct"]["peak_server_connections"] <= 30  # never the sampler's own
    # PgBouncer's pool holds 20 server connections at most.
    assert 1 <= runs["sidecar"]["peak_server_connections"] <= 20
