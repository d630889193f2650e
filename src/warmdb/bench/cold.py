"""Cold starts as Lambda sees them: a fresh Python process per sample.

Each sample runs ``python -c`` :data:`CHILD_SCRIPT` with a JSON spec on stdin (stdin, not the
command line, because the raw variant's spec holds a password and command lines are visible
to every user). The child times, with :func:`time.perf_counter`:

- **Init**: importing the code and the module-level setup a handler module would do
  (``import warmdb.psycopg2 as db; keeper = db.warm(...)``; for the raw driver and
  aurora-dsql-python-connector, their import), which is what Lambda reports as Init Duration
  minus the interpreter's own start (the same for every variant);
- **first**: the first connect and query in the handler.

Whatever the child needs to run the query generically (the driver's adapter) is loaded
between the two timings and counted in neither. The parent also times the whole process,
spawn to exit. Variants are interleaved sample by sample.

Modules are imported from compiled bytecode, as from an installed wheel or a Lambda package
that ships it: the children share a private bytecode cache (``PYTHONPYCACHEPREFIX``, a 0700
temporary directory, so nothing is written into the source tree) that one untimed process
per variant fills first. Without it, a checkout run with ``PYTHONDONTWRITEBYTECODE`` would
compile every changed module on every sample and bill the compiler to Init.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time

from warmdb.bench.results import ColdCell, Skip
from warmdb.bench.stats import summarize

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from warmdb.bench.progress import Progress
    from warmdb.bench.variants import Variant

__all__ = ["CHILD_SCRIPT", "ColdSpec", "run_cold"]

#: The cold-start child. Only stdlib modules that the interpreter loads at start anyway are
#: imported before the clock starts (json is read first: it is needed for the spec).
CHILD_SCRIPT = r"""
import json, sys, time
spec = json.loads(sys.stdin.read())
kind = spec["variant"]
t0 = time.perf_counter()
import importlib
if kind == "warmdb":
    db = importlib.import_module(spec["module"])
    handle = getattr(db, spec["warm"])(**spec["kwargs"])
elif kind == "raw":
    importlib.import_module(spec["library"])
else:
    aurora = importlib.import_module(spec["aurora_module"])
t1 = time.perf_counter()
from warmdb.drivers import adapter_class
adapter = adapter_class(spec["driver"], is_async=spec["is_async"])()
if kind == "raw":
    from warmdb._connect import ConnectPlan
    params = adapter.connect_params(
        ConnectPlan(None, spec["kwargs"], adapter=adapter), spec["password"]
    )

def sync_first():
    if kind == "warmdb":
        with handle.connection() as conn:
            adapter.execute(conn, spec["query"])
        return
    conn = adapter.connect_raw(params) if kind == "raw" else aurora.connect(**spec["aurora"])
    adapter.execute(conn, spec["query"])
    adapter.close(conn)

async def async_first():
    if kind == "warmdb":
        async with handle.connection() as conn:
            await adapter.execute(conn, spec["query"])
        return
    if kind == "raw":
        conn = await adapter.connect_raw(params)
    else:
        conn = await aurora.connect(**spec["aurora"])
    await adapter.execute(conn, spec["query"])
    await adapter.close(conn)

if spec["is_async"]:
    import asyncio
    t2 = time.perf_counter()
    asyncio.run(async_first())
else:
    t2 = time.perf_counter()
    sync_first()
t3 = time.perf_counter()
sys.stdout.write(json.dumps({"init": t1 - t0, "first": t3 - t2}))
"""


class ColdSpec:
    """One cold-start variant of one driver: what the child gets on stdin.

    :param variant: the driver variant.
    :param kind: ``warmdb``, ``raw`` or ``aurora-dsql``.
    :param kwargs: warmdb's connect arguments.
    :param query: the SQL to run.
    :param password: the raw driver's static password.
    :param aurora: aurora-dsql-python-connector's connect arguments.
    """

    def __init__(
        self,
        variant: Variant,
        kind: str,
        *,
        kwargs: Mapping[str, Any],
        query: str,
        password: str | None = None,
        aurora: Mapping[str, Any] | None = None,
    ) -> None:
        self.variant = variant
        self.kind = kind
        warm = "warm_async" if variant.is_async and variant.entry.sync is not None else "warm"
        self._spec: dict[str, Any] = {
            "variant": kind,
            "driver": variant.entry.name,
            "is_async": variant.is_async,
            "module": variant.entry.module,
            "library": variant.entry.library,
            "aurora_module": variant.aurora_module,
            "warm": warm,
            "kwargs": dict(kwargs),
            "query": query,
            "password": password,
            "aurora": dict(aurora or {}),
        }

    def payload(self) -> bytes:
        """The spec as the child reads it (holds the static password: never log it)."""
        return json.dumps(self._spec).encode()

    def scrub(self, text: str) -> str:
        """*text* without the static password, should a driver have echoed it."""
        password = self._spec["password"]
        return text.replace(password, "<redacted>") if password else text


def run_one(spec: ColdSpec, env: Mapping[str, str], timeout: float) -> tuple[float, float, float]:
    """One sample: (init, first connect + query, whole process) in seconds.

    :raises RuntimeError: the child failed; the message is the last line of its stderr.
    """
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD_SCRIPT],
        input=spec.payload(),
        capture_output=True,
        env=dict(env),
        timeout=timeout,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        message = lines[-1] if lines else f"exit status {done.returncode}"
        raise RuntimeError(spec.scrub(message))
    times = json.loads(done.stdout)
    return float(times["init"]), float(times["first"]), wall


def run_cold(
    specs: Sequence[ColdSpec],
    samples: int,
    env: Mapping[str, str],
    *,
    timeout: float = 60.0,
    progress: Progress | None = None,
) -> tuple[list[ColdCell], list[Skip]]:
    """Run *samples* cold starts of every spec, interleaved; a failing spec is skipped."""
    with tempfile.TemporaryDirectory(prefix="warmdb-bench-pyc-") as cache:
        child_env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
        child_env["PYTHONPYCACHEPREFIX"] = cache
        return _sample(specs, samples, child_env, timeout, progress)


def _sample(
    specs: Sequence[ColdSpec],
    samples: int,
    env: Mapping[str, str],
    timeout: float,
    progress: Progress | None,
) -> tuple[list[ColdCell], list[Skip]]:
    times: dict[int, list[tuple[float, float, float]]] = {i: [] for i in range(len(specs))}
    skips: list[Skip] = []
    failed: set[int] = set()
    # Round 0 is untimed: it compiles the bytecode into the private cache.
    for number in range(samples + 1):
        for index, spec in enumerate(specs):
            if progress is not None:
                progress.show(f"{spec.variant.name}: cold start, {spec.kind}")
            if index in failed:
                continue
            try:
                sample = run_one(spec, env, timeout)
                if number > 0:
                    times[index].append(sample)
            except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
                failed.add(index)
                reason = str(exc).strip() or type(exc).__name__
                skips.append(Skip(spec.variant.name, f"cold ({spec.kind})", reason))
        if progress is not None and number > 0:
            progress.step()
    cells = []
    for index, spec in enumerate(specs):
        if index in failed or not times[index]:
            continue
        init, first, wall = zip(*times[index], strict=True)
        cells.append(
            ColdCell(
                spec.variant.name, spec.kind, summarize(init), summarize(first), summarize(wall)
            )
        )
    return cells, skips
