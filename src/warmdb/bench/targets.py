"""warmdb's performance targets, judged on a run's results (pure code).

Each target compares two figures of the same run as a ratio, so it holds on any machine, and
uses medians (p50), which one slow sample on a busy machine does not move:

- ``connect()`` every time costs at most 1.05x the raw driver with a static password (p50):
  warmdb's own work per connect must vanish next to TCP + TLS + authentication;
- a ``warm()`` checkout costs at most 1% of a connect (the seeds saw 0.02 ms against
  600-870 ms on Lambda), and a pool checkout too;
- a SQLAlchemy engine checkout costs at most 5% of a connect (SQLAlchemy's own checkout
  and ``Connection`` object cost tens of microseconds);
- a cold start (Init + first connect + query) costs at most 1.3x the raw driver's;
- against aurora-dsql-python-connector: connect and cold start no slower (at most 1.0x).
"""

from __future__ import annotations

from warmdb.bench.results import TargetCheck
from warmdb.bench.stats import ratio

TYPE_CHECKING = False
if TYPE_CHECKING:
    from warmdb.bench.results import RunResult

__all__ = ["COLD_VS_RAW", "CONNECT_VS_RAW", "REUSE_VS_CONNECT", "check_targets"]

CONNECT_VS_RAW = 1.05
REUSE_VS_CONNECT = 0.01
ENGINE_VS_CONNECT = 0.05
COLD_VS_RAW = 1.3
VS_AURORA = 1.0


#: (pattern, its base, the limit, which figure, the check's name, what the line says)
_CELL_TARGETS: tuple[tuple[str, str, float, str, str, str], ...] = (
    ("connect", "raw", CONNECT_VS_RAW, "p50", "connect vs raw driver",
     "connect() every time vs the raw driver (p50)"),
    ("connect", "aurora-dsql", VS_AURORA, "p50", "connect vs aurora-dsql",
     "connect() every time vs aurora-dsql connector (p50)"),
    ("warm", "connect", REUSE_VS_CONNECT, "p50", "warm checkout vs connect",
     "warm() checkout vs a connect (p50)"),
    ("pool", "connect", REUSE_VS_CONNECT, "p50", "pool checkout vs connect",
     "pool checkout vs a connect (p50)"),
    ("sqlalchemy", "connect", ENGINE_VS_CONNECT, "p50", "engine checkout vs connect",
     "SQLAlchemy engine checkout vs a connect (p50)"),
)  # fmt: skip

#: (base variant, the limit, how the line names it)
_COLD_TARGETS = (
    ("raw", COLD_VS_RAW, "the raw driver"),
    ("aurora-dsql", VS_AURORA, "aurora-dsql connector"),
)


def check_targets(result: RunResult) -> list[TargetCheck]:
    """Every target that *result* has the figures for, per driver in table order."""
    checks: list[TargetCheck] = []
    for driver in result.drivers():
        for pattern, base_pattern, limit, figure, name, what in _CELL_TARGETS:
            cell = result.cell(driver, pattern)
            base = result.cell(driver, base_pattern)
            if cell is None or base is None:
                continue
            value = ratio(getattr(cell.stats.connect, figure), getattr(base.stats.connect, figure))
            if value is not None:
                checks.append(_check(name, driver, value, limit, what))
        cold = result.cold_cell(driver, "warmdb")
        if cold is None:
            continue
        for variant, limit, label in _COLD_TARGETS:
            base_cold = result.cold_cell(driver, variant)
            if base_cold is None:
                continue
            value = ratio(cold.init.p50 + cold.first.p50, base_cold.init.p50 + base_cold.first.p50)
            if value is not None:
                what = f"cold start (Init + first connect, p50) vs {label}"
                checks.append(_check(f"cold start vs {variant}", driver, value, limit, what))
    return checks


def _check(name: str, driver: str, value: float, limit: float, what: str) -> TargetCheck:
    met = value <= limit
    verdict = "meets" if met else "MISSES"
    # Three decimals near 1: 1.0503x must not print as the 1.05x it misses.
    shown = f"{value:.3f}" if value >= 0.1 else f"{value:.3g}"
    text = f"{driver}: {what}: {shown}x, target <= {limit:g}x: {verdict}"
    return TargetCheck(name=name, driver=driver, value=value, limit=limit, met=met, text=text)
