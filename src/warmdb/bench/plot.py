"""``warmdb bench --plot FILE``: the run as a PNG chart (matplotlib, the ``plot`` extra).

Left: connect (or checkout) time per pattern and driver, p50 bars with a line to p95, on a
log scale, since a reused connection costs microseconds and a connect milliseconds. Right:
cold starts, Init and first connect + query stacked per driver and variant. matplotlib is
imported here only, with the non-interactive Agg backend.
"""

from __future__ import annotations

from warmdb.bench.results import PATTERN_LABELS, PATTERNS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from warmdb.bench.results import RunResult

__all__ = ["plot"]

_SHORT = {
    "raw": "raw driver",
    "aurora-dsql": "aurora-dsql",
    "connect": "warmdb connect()",
    "warm": "warmdb warm()",
    "pool": "warmdb pool",
    "sqlalchemy": "warmdb SQLAlchemy",
}


def plot(result: RunResult, path: str) -> None:
    """Draw *result* to the PNG file *path*."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drivers = [d for d in result.drivers() if any(c.driver == d for c in result.cells)]
    patterns = [p for p in PATTERNS if any(c.pattern == p for c in result.cells)]
    has_cold = bool(result.cold)
    # Taller with more bars, so that seven drivers x six patterns stay readable.
    height_in = max(5.5, 1.5 + 0.13 * max(len(drivers) * len(patterns), len(result.cold)))
    fig, axes = plt.subplots(
        1, 2 if has_cold else 1, figsize=(14 if has_cold else 8, height_in), squeeze=False
    )
    ax = axes[0][0]
    colors = plt.get_cmap("tab10")
    height = 0.8 / max(len(drivers), 1)
    for d_index, driver in enumerate(drivers):
        ys, p50s, p95s = [], [], []
        for p_index, pattern in enumerate(patterns):
            cell = result.cell(driver, pattern)
            if cell is None:
                continue
            ys.append(p_index + d_index * height)
            p50s.append(cell.stats.connect.p50 * 1000)
            p95s.append(cell.stats.connect.p95 * 1000)
        ax.barh(ys, p50s, height=height, color=colors(d_index), label=driver)
        ax.hlines(ys, p50s, p95s, colors="black", linewidth=0.8)
        ax.plot(p95s, ys, "|", color="black", markersize=6)
    ax.set_xscale("log")
    ax.set_yticks([i + height * (len(drivers) - 1) / 2 for i in range(len(patterns))])
    ax.set_yticklabels([_SHORT.get(p, PATTERN_LABELS.get(p, p)) for p in patterns])
    ax.invert_yaxis()
    ax.set_xlabel("connect / checkout, ms (p50 bar, line to p95; log scale)")
    iterations = result.environment.get("iterations", "?")
    ax.set_title(f"Connect cost per pattern ({iterations} iterations)")
    ax.grid(axis="x", which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    if has_cold:
        _cold_panel(axes[0][1], result)
    endpoint = result.environment.get("endpoint", "")
    fig.suptitle(f"warmdb bench: {endpoint}", fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cold_panel(ax: Axes, result: RunResult) -> None:
    labels, inits, firsts = [], [], []
    for cold in result.cold:
        labels.append(f"{cold.driver}: {cold.variant}")
        inits.append(cold.init.p50 * 1000)
        firsts.append(cold.first.p50 * 1000)
    ys = list(range(len(labels)))
    ax.barh(ys, inits, color="#8da0cb", label="Init (import + module setup)")
    ax.barh(ys, firsts, left=inits, color="#fc8d62", label="first connect + query")
    ax.set_yticks(ys)
    ax.set_yticklabels(labels)
    ax.invert_yaxis()
    n = result.cold[0].init.n
    ax.set_xlabel(f"ms, p50 of {n} fresh processes")
    ax.set_title("Cold start as Lambda sees it")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
