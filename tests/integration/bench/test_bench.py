"""`warmdb bench` and `warmdb probe` end to end, against the embedded emulator they start.

One short matrix run (few iterations, two cold samples) is shared by the checks on its JSON;
the concurrency and probe runs are separate commands. Every figure comes from a real
connect to the real emulator (TLS, IAM tokens checked), nothing is stubbed.
"""

from __future__ import annotations

import json

import pytest

from tests.integration.bench.conftest import credentials_environment
from warmdb.bench.variants import all_variants
from warmdb.bench.wire import PHASES
from warmdb.cli import main

ITERATIONS = 4
COLD_SAMPLES = 2


@pytest.fixture(scope="module")
def bench_json(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    plot = path.with_suffix(".png")
    status = main(
        [
            "bench",
            "--iterations", str(ITERATIONS),
            "--cold-samples", str(COLD_SAMPLES),
            "--json", str(path),
            "--plot", str(plot),
            "--no-progress",
        ]
    )  # fmt: skip
    assert status == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return json.loads(path.read_text())


def cells(data, pattern):
    return {c["driver"]: c for c in data["cells"] if c["pattern"] == pattern}


def test_every_cell_measured_something_real(bench_json):
    assert bench_json["cells"], "no cell was measured"
    for cell in bench_json["cells"]:
        for part in ("connect", "query"):
            summary = cell[part]
            assert summary["n"] == ITERATIONS, cell
            assert summary["min_ms"] > 0, cell
            assert summary["min_ms"] <= summary["p50_ms"] <= summary["p95_ms"], cell
        assert cell["total_ms"] > 0
        assert cell["qps"] > 0
    for cold in bench_json["cold"]:
        assert cold["init"]["n"] == COLD_SAMPLES
        assert cold["init"]["min_ms"] > 0
        assert cold["first_connect_query"]["min_ms"] > 0
        assert cold["process"]["min_ms"] > cold["init"]["min_ms"]


def test_every_installed_driver_ran_the_core_patterns(bench_json):
    names = {v.name for v in all_variants()}
    for pattern in ("raw", "connect", "warm"):
        assert set(cells(bench_json, pattern)) == names, (pattern, bench_json["skipped"])
    cold = {(c["driver"], c["variant"]) for c in bench_json["cold"]}
    assert {(name, "warmdb") for name in names} <= cold
    assert {(name, "raw") for name in names} <= cold


def test_reuse_connects_far_below_connecting_every_time(bench_json):
    connect = cells(bench_json, "connect")
    for pattern in ("warm", "pool", "sqlalchemy"):
        for driver, cell in cells(bench_json, pattern).items():
            assert cell["connect_p50_ms"] < 0.2 * connect[driver]["connect_p50_ms"], (
                pattern,
                driver,
            )


def test_cold_start_init_above_a_warm_checkout(bench_json):
    warm = cells(bench_json, "warm")
    for cold in bench_json["cold"]:
        if cold["variant"] != "warmdb":
            continue
        assert cold["init"]["p50_ms"] > warm[cold["driver"]]["connect_p50_ms"]
        assert cold["first_connect_query"]["p50_ms"] > warm[cold["driver"]]["connect_p50_ms"]


def test_targets_are_judged_and_the_baseline_login_is_stated(bench_json):
    names = {t["name"] for t in bench_json["targets"]}
    assert {"connect vs raw driver", "warm checkout vs connect", "cold start vs raw"} <= names
    for target in bench_json["targets"]:
        assert target["met"] == (target["value"] <= target["limit"])
    notes = bench_json["environment"]["notes"]
    assert any("static password" in note for note in notes)


def test_aurora_dsql_is_measured_or_skipped_with_a_reason(bench_json):
    measured = set(cells(bench_json, "aurora-dsql"))
    skipped = {s["driver"] for s in bench_json["skipped"] if s["pattern"] == "aurora-dsql"}
    assert measured | skipped == {v.name for v in all_variants()}
    for skip in bench_json["skipped"]:
        assert skip["reason"]
        assert "\n" not in skip["reason"]


def test_concurrency_direct_holds_one_server_connection_per_request(tmp_path, capsys):
    path = tmp_path / "concurrency.json"
    status = main(
        [
            "bench",
            "--concurrency", "12",
            "--requests", "36",
            "--hold", "0.3",
            "--hold-scale", "1",
            "--drivers", "psycopg2",
            "--json", str(path),
            "--no-progress",
        ]
    )  # fmt: skip
    assert status == 0
    (run,) = json.loads(path.read_text())["concurrency"]
    assert run["via"] == "direct"
    assert run["failed"] == 0
    assert run["latency"]["n"] == 36
    assert run["latency"]["min_ms"] >= 300  # each request held its connection 0.3 s
    # Every request in flight holds a server connection, and there are never more.
    assert 10 <= run["peak_server_connections"] <= 13
    assert "seed 002's workload" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("drivers", "family"), [("psycopg2,asyncpg", "postgresql"), ("pymysql,aiomysql", "mysql")]
)
def test_probe_times_every_phase_and_each_driver(capsys, drivers, family):
    status = main(["probe", "--json", "--repeat", "1", "--drivers", drivers])
    assert status == 0
    (report,) = json.loads(capsys.readouterr().out)["families"]
    assert report["family"] == family
    phases = report["wire"]["phases"]
    assert list(phases) == ["credentials", "token signing", *PHASES[family]]
    assert all(value > 0 for value in phases.values()), phases
    assert report["wire"]["tls_version"].startswith("TLS")
    assert [entry["driver"] for entry in report["drivers"]] == drivers.split(",")
    for entry in report["drivers"]:
        assert entry["connect_ms"] > 0, entry
        assert entry["query_ms"] > 0, entry


def test_probe_table(capsys):
    assert main(["probe", "--repeat", "1", "--drivers", "psycopg2,pymysql"]) == 0
    out = capsys.readouterr().out
    assert "| TLS handshake" in out
    assert "| startup + authentication" in out
    assert "| server greeting" in out
    assert "| psycopg2" in out
    assert "| pymysql" in out


def test_via_sidecar_the_server_sees_fewer_connections(tmp_path):
    # Seed 002's comparison, small: 30 requests in flight; PgBouncer's pool holds 20 at most.
    path = tmp_path / "sidecar.json"
    status = main(
        [
            "bench",
            "--concurrency", "30",
            "--requests", "60",
            "--hold", "0.2",
            "--hold-scale", "1",
            "--drivers", "psycopg2",
            "--via-sidecar",
            "--json", str(path),
            "--no-progress",
        ]
    )  # fmt: skip
    assert status == 0
    runs = {r["via"]: r for r in json.loads(path.read_text())["concurrency"]}
    assert runs["direct"]["failed"] == 0
    assert runs["sidecar"]["failed"] == 0
    assert runs["direct"]["peak_server_connections"] >= 28
    assert runs["sidecar"]["peak_server_connections"] <= 20


def test_against_a_host_with_connect_arguments(tmp_path, monkeypatch):
    # A "real endpoint" as a user names it: host, port, auth, region and any connect() option.
    from warmdb.emulator.service import Emulator

    with Emulator(temporary_credentials=True) as dsql:
        credentials_environment(monkeypatch, dsql.credentials)
        path = tmp_path / "host.json"
        status = main(
            [
                "bench",
                "--host", "localhost",
                "--port", str(dsql.port),
                "--auth", "dsql",
                "--region", dsql.region,
                "-o", "application_name=warmdb-bench",
                "--drivers", "psycopg2",
                "--patterns", "raw,connect,cold",
                "--iterations", "3",
                "--cold-samples", "1",
                "--json", str(path),
                "--no-progress",
            ]
        )  # fmt: skip
        accepted = dsql.stats.accepted
        port = dsql.port
    assert status == 0
    data = json.loads(path.read_text())
    assert data["environment"]["endpoint"] == f"localhost:{port}"
    assert {c["pattern"] for c in data["cells"]} == {"raw", "connect"}
    assert {c["variant"] for c in data["cold"]} == {"raw", "warmdb"}
    # 2 patterns x (1 warm-up + 3 timed) in process, 2 variants x 2 cold processes, 1 token.
    assert accepted >= 2 * 4 + 2 * 2
