"""The terminal report of a ``warmdb bench`` run: plain text, pure functions of the results.

Tables are Markdown pipe tables padded to line up, shaped like the seeds' (one row per
pattern, connect and query columns, milliseconds), so the same text reads well in a terminal
and pastes into a document. Ratios compare connect p50 with the raw driver's and
aurora-dsql-python-connector's in the same run.
"""

from __future__ import annotations

from warmdb.bench.results import PATTERN_LABELS, PATTERNS
from warmdb.bench.stats import ratio

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from warmdb.bench.results import ColdCell, RunResult

__all__ = ["format_ms", "format_ratio", "render", "table"]


def format_ms(seconds: float) -> str:
    """Milliseconds with enough digits for both a reused connection (µs) and a connect."""
    ms = seconds * 1000
    if ms >= 100:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


def format_ratio(value: float | None) -> str:
    """``1.02x``, ``0.0012x``; a dash when there is no base."""
    if value is None:
        return "-"
    if value >= 0.1:
        return f"{value:.2f}x"
    return f"{value:.2g}x"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 1) -> str:
    """A Markdown table padded to line up; the first *left* columns are left-aligned."""
    widths = [
        max(len(headers[i]), *(len(row[i]) for row in rows)) if rows else len(headers[i])
        for i in range(len(headers))
    ]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.ljust(widths[i]) if i < left else cell.rjust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join("-" * (w + 2) if i < left else "-" * (w + 1) + ":" for i, w in enumerate(widths))
        + "|"
    )
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def _matrix_table(result: RunResult, driver: str) -> str | None:
    rows = []
    raw = result.cell(driver, "raw")
    aurora = result.cell(driver, "aurora-dsql")
    for pattern in PATTERNS:
        cell = result.cell(driver, pattern)
        if cell is None:
            continue
        s = cell.stats
        rows.append(
            [
                PATTERN_LABELS[pattern],
                format_ms(s.connect.avg),
                format_ms(s.connect.p50),
                format_ms(s.connect.p95),
                format_ms(s.connect.p99),
                format_ms(s.query.avg),
                format_ms(s.query.p50),
                format_ms(s.total),
                f"{s.qps:.1f}",
                format_ratio(ratio(s.connect.p50, raw.stats.connect.p50) if raw else None),
                format_ratio(ratio(s.connect.p50, aurora.stats.connect.p50) if aurora else None),
            ]
        )
    if not rows:
        return None
    headers = [
        f"{driver}: pattern",
        "connect avg",
        "p50",
        "p95",
        "p99",
        "query avg",
        "p50",
        "total",
        "qps",
        "p50 vs raw",
        "vs aurora-dsql",
    ]
    return table(headers, rows)


def _cold_table(result: RunResult) -> str | None:
    rows = []
    for cold in result.cold:
        raw = result.cold_cell(cold.driver, "raw")
        aurora = result.cold_cell(cold.driver, "aurora-dsql")
        total = cold.init.p50 + cold.first.p50

        rows.append(
            [
                cold.driver,
                cold.variant,
                format_ms(cold.init.p50),
                format_ms(cold.first.p50),
                format_ms(total),
                format_ms(cold.process.p50),
                _cold_ratio(total, raw),
                _cold_ratio(total, aurora),
            ]
        )
    if not rows:
        return None
    n = result.cold[0].init.n
    headers = [
        f"cold start, p50 of {n}",
        "variant",
        "Init",
        "first connect + query",
        "Init + first",
        "whole process",
        "vs raw",
        "vs aurora-dsql",
    ]
    return table(headers, rows, left=2)


def _cold_ratio(total: float, base: ColdCell | None) -> str:
    if base is None:
        return "-"
    return format_ratio(ratio(total, base.init.p50 + base.first.p50))


def _concurrency_table(result: RunResult) -> str | None:
    rows = []
    for c in result.concurrency:
        lat = c.latency
        rows.append(
            [
                c.driver,
                c.via,
                f"{c.concurrency} x {c.requests}",
                f"{c.hold * 1000:g}",
                format_ms(lat.p50) if lat else "-",
                format_ms(lat.p95) if lat else "-",
                format_ms(lat.p99) if lat else "-",
                str(sum(c.failures.values())),
                "-" if c.peak_server_connections is None else str(c.peak_server_connections),
                f"{c.wall:.1f} s",
            ]
        )
    if not rows:
        return None
    headers = [
        "concurrency",
        "via",
        "in flight x requests",
        "hold ms",
        "latency p50",
        "p95",
        "p99",
        "failed",
        "peak server connections",
        "wall",
    ]
    return table(headers, rows, left=2)


def render(result: RunResult) -> str:
    """The whole report: header, one table per driver, cold starts, notes, targets."""
    env = result.environment
    where = f"Python {env.get('python', '?')} on {env.get('machine', '?')}"
    if result.concurrency and not (result.cells or result.cold):
        header = (
            f"warmdb bench, seed 002's workload: {env.get('endpoint', '?')}; each request "
            f"connects, runs {env.get('query', '?')!r}, holds, runs it again, disconnects; "
            f"times in ms; {where}"
        )
    else:
        header = (
            f"warmdb bench: {env.get('endpoint', '?')}; {env.get('iterations', '?')} "
            f"iterations of {env.get('query', '?')!r}; times in ms; {where}"
        )
    parts = [header]
    notes = env.get("notes")
    if isinstance(notes, list):
        parts.extend(f"note: {note}" for note in notes)
    for driver in result.drivers():
        text = _matrix_table(result, driver)
        if text:
            parts.append(text)
    for text in (_cold_table(result), _concurrency_table(result)):
        if text:
            parts.append(text)
    if result.skipped:
        parts.append(
            "\n".join(f"skipped: {s.driver} {s.pattern}: {s.reason}" for s in result.skipped)
        )
    if result.targets:
        met = sum(t.met for t in result.targets)
        lines = [f"targets: {met} of {len(result.targets)} met"]
        lines += [f"  {'ok  ' if t.met else 'MISS'} {t.text}" for t in result.targets]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"
