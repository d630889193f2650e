"""Targets, the terminal report and the progress bar, on hand-made results."""

from __future__ import annotations

import io

from warmdb.bench.progress import Progress, bar
from warmdb.bench.report import format_ms, format_ratio, render, table
from warmdb.bench.results import Cell, ColdCell, ConcurrencyResult, RunResult, Skip
from warmdb.bench.stats import cell_stats, summarize
from warmdb.bench.targets import check_targets


def cell(driver: str, pattern: str, connect: float, query: float = 0.001) -> Cell:
    return Cell(driver, pattern, cell_stats([connect] * 3, [query] * 3))


def cold(driver: str, variant: str, init: float, first: float) -> ColdCell:
    return ColdCell(
        driver, variant, summarize([init] * 2), summarize([first] * 2), summarize([1.0] * 2)
    )


def sample_result() -> RunResult:
    return RunResult(
        environment={"endpoint": "test", "iterations": 3, "query": "SELECT 1", "notes": ["n1"]},
        cells=[
            cell("psycopg2", "raw", 0.0050),
            cell("psycopg2", "aurora-dsql", 0.0600),
            cell("psycopg2", "connect", 0.0051),
            cell("psycopg2", "warm", 0.000004),
            cell("psycopg2", "pool", 0.0002),  # 4% of a connect: misses the 1% target
            cell("psycopg2", "sqlalchemy", 0.00003),
        ],
        cold=[
            cold("psycopg2", "raw", 0.040, 0.010),
            cold("psycopg2", "warmdb", 0.045, 0.010),
            cold("psycopg2", "aurora-dsql", 0.200, 0.060),
        ],
        skipped=[Skip("asyncpg", "aurora-dsql", "no hostaddr")],
    )


def test_targets_are_ratios_of_the_same_run():
    result = sample_result()
    checks = {(t.driver, t.name): t for t in check_targets(result)}
    assert checks[("psycopg2", "connect vs raw driver")].value == 0.0051 / 0.0050
    assert checks[("psycopg2", "connect vs raw driver")].met
    assert checks[("psycopg2", "connect vs aurora-dsql")].met
    assert checks[("psycopg2", "warm checkout vs connect")].met
    pool = checks[("psycopg2", "pool checkout vs connect")]
    assert not pool.met
    assert "MISSES" in pool.text
    assert checks[("psycopg2", "engine checkout vs connect")].met
    cold_raw = checks[("psycopg2", "cold start vs raw")]
    assert cold_raw.value == (0.045 + 0.010) / (0.040 + 0.010)
    assert cold_raw.met
    assert checks[("psycopg2", "cold start vs aurora-dsql")].met


def test_a_missing_baseline_gives_no_target():
    result = RunResult(environment={}, cells=[cell("asyncpg", "connect", 0.004)])
    assert check_targets(result) == []


def test_report_shows_every_cell_ratios_skips_and_targets():
    result = sample_result()
    result.targets = check_targets(result)
    text = render(result)
    assert "note: n1" in text
    assert "| psycopg2: pattern" in text
    assert "raw driver, static password (every connect)" in text
    # warmdb connect against raw: 5.1 / 5.0 ms
    connect_row = next(line for line in text.splitlines() if "warmdb connect()" in line)
    assert "|  5.10 |" in connect_row
    assert "1.02x" in connect_row
    assert "0.085x" in connect_row  # against aurora-dsql's 60 ms
    warm_row = next(line for line in text.splitlines() if "warm()" in line)
    assert "0.004" in warm_row  # 4 µs shown, not rounded to 0.00
    assert "skipped: asyncpg aurora-dsql: no hostaddr" in text
    assert "targets: 6 of 7 met" in text
    assert "MISS psycopg2: pool checkout vs a connect (p50)" in text
    assert "cold start, p50 of 2" in text


def test_concurrency_table():
    result = RunResult(
        environment={},
        concurrency=[
            ConcurrencyResult(
                "psycopg2", "direct", 100, 1000, 0.1, summarize([0.2, 0.3]), {"X": 2}, 100, 5.0
            ),
            ConcurrencyResult("psycopg2", "sidecar", 100, 1000, 0.1, None, {}, None, 5.0),
        ],
    )
    text = render(result)
    row = next(line for line in text.splitlines() if "| direct" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:] == ["100 x 1000", "100", "250.0", "300.0", "300.0", "2", "100", "5.0 s"]
    assert "| sidecar" in text


def test_table_aligns_columns():
    text = table(["a", "bb"], [["x", "1"], ["yyy", "22"]])
    lines = text.splitlines()
    assert len({len(line) for line in lines}) == 1
    assert lines[1] == "|-----|---:|"


def test_number_formats():
    assert format_ms(0.000004) == "0.004"
    assert format_ms(0.0051) == "5.10"
    assert format_ms(0.8731) == "873.1"
    assert format_ratio(None) == "-"
    assert format_ratio(1.019) == "1.02x"
    assert format_ratio(0.00081) == "0.00081x"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_on_a_terminal_only():
    assert bar(3, 12, "x", width=4) == "[#...]  3/12 x"
    screen = Terminal()
    progress = Progress(2, stream=screen)
    progress.step("psycopg2")
    progress.step()
    progress.close()
    assert "[##############..............] 1/2 psycopg2" in screen.getvalue()
    assert screen.getvalue().endswith("\r")
    pipe = io.StringIO()
    quiet = Progress(2, stream=pipe)
    quiet.step("psycopg2")
    quiet.close()
    assert pipe.getvalue() == ""
