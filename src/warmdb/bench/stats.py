"""Statistics of a benchmark cell: pure functions on lists of seconds, no I/O.

The figures follow the seeds' Lambda handler (``calc_stats`` in the aurora-dsql benchmark that
``warmdb bench`` imitates), so a table measured here reads like theirs:

- averages are arithmetic means, p50 is the median (:func:`statistics.median`);
- p95 and p99 use the seeds' rule, ``sorted(samples)[int(n * q)]``: the nearest rank
  rounded *up* past the quantile, clamped to the largest sample. With 30 samples, p95 is the
  29th smallest and p99 the largest; with 20 or fewer, p95 is the largest. It is not
  interpolated, so every reported figure is a time that was actually measured;
- ``total`` is the sum of every connect and query time, and ``qps`` the iterations divided
  by it: iterations per second of connect + query, not of queries alone.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["CellStats", "Summary", "cell_stats", "ratio", "seed_percentile", "summarize"]


def seed_percentile(samples: Sequence[float], q: float) -> float:
    """The seeds' percentile: ``sorted(samples)[int(len(samples) * q)]``, clamped.

    :param samples: at least one value.
    :param q: the quantile, between 0 and 1 (0.95 for p95).
    :raises ValueError: no samples, or *q* outside [0, 1].
    """
    if not samples:
        raise ValueError("seed_percentile() needs at least one sample")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q={q!r} must be between 0 and 1")
    ordered = sorted(samples)
    return ordered[min(int(len(ordered) * q), len(ordered) - 1)]


@dataclass(frozen=True)
class Summary:
    """One series of timings, in seconds.

    :ivar n: how many samples.
    :ivar avg: the mean.
    :ivar p50: the median.
    :ivar p95: the seeds' p95 (:func:`seed_percentile`).
    :ivar p99: the seeds' p99.
    :ivar min: the smallest sample.
    :ivar max: the largest sample.
    """

    n: int
    avg: float
    p50: float
    p95: float
    p99: float
    min: float
    max: float

    def as_ms(self) -> dict[str, float | int]:
        """The summary with every time in milliseconds (JSON output)."""
        return {
            "n": self.n,
            **{
                f"{name}_ms": _ms(getattr(self, name))
                for name in ("avg", "p50", "p95", "p99", "min", "max")
            },
        }


def summarize(samples: Sequence[float]) -> Summary:
    """Summarize *samples* (seconds).

    :raises ValueError: no samples, or a negative or non-finite one (a clock error).
    """
    if not samples:
        raise ValueError("summarize() needs at least one sample")
    for value in samples:
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"a timing must be a finite number of seconds >= 0, not {value!r}")
    return Summary(
        n=len(samples),
        avg=statistics.fmean(samples),
        p50=statistics.median(samples),
        p95=seed_percentile(samples, 0.95),
        p99=seed_percentile(samples, 0.99),
        min=min(samples),
        max=max(samples),
    )


@dataclass(frozen=True)
class CellStats:
    """A cell of the table: the connect (or checkout) and query timings of one pattern.

    :ivar connect: the connect times (for reuse patterns: the checkout).
    :ivar query: the query times, measured from the end of the connect.
    :ivar total: the sum of every connect and query time, in seconds.
    :ivar qps: iterations per second of connect + query (``n / total``).
    """

    connect: Summary
    query: Summary
    total: float
    qps: float

    def as_dict(self) -> dict[str, object]:
        """JSON-ready data: the seeds' field names, then both summaries in full."""
        seeds = {
            f"{part}_{figure}_ms": _ms(getattr(getattr(self, part), figure))
            for part, figure in _SEED_FIELDS
        }
        return {
            **seeds,
            "total_ms": _ms(self.total),
            "qps": round(self.qps, 1),
            "connect": self.connect.as_ms(),
            "query": self.query.as_ms(),
        }


#: The figures the seeds' handler reported per cell, as (summary, figure).
_SEED_FIELDS = (
    ("connect", "avg"),
    ("connect", "p50"),
    ("connect", "p95"),
    ("connect", "p99"),
    ("query", "avg"),
    ("query", "p50"),
)


def cell_stats(connect_times: Sequence[float], query_times: Sequence[float]) -> CellStats:
    """The seeds' ``calc_stats``: one cell from paired connect and query times (seconds).

    :raises ValueError: the two lists differ in length, or either is empty.
    """
    if len(connect_times) != len(query_times):
        raise ValueError(f"{len(connect_times)} connect times but {len(query_times)} query times")
    total = math.fsum(connect_times) + math.fsum(query_times)
    n = len(connect_times)
    return CellStats(
        connect=summarize(connect_times),
        query=summarize(query_times),
        total=total,
        qps=n / total if total > 0 else math.inf,
    )


def ratio(value: float, base: float) -> float | None:
    """``value / base``, or ``None`` when there is no meaningful base (zero or negative)."""
    if base <= 0 or not math.isfinite(base):
        return None
    return value / base


def _ms(seconds: float) -> float:
    # Three decimals: a reused connection's checkout is a few microseconds, which the seeds'
    # two decimals would print as 0.00 (they saw 0.02 ms on Lambda).
    return round(seconds * 1000, 3)
