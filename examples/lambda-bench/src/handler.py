"""The seeds' Lambda benchmark, rewritten on warmdb: the same matrix as ``warmdb bench``.

Deployed by ``template.yaml`` on x86_64 and arm64, Python 3.12 and 3.13, against a real
Aurora DSQL cluster. Each invocation runs, in its handler, every installed driver with the
patterns of ``BENCH_PATTERNS`` (raw driver with a static token, aurora-dsql-python-connector
when the layer has it, warmdb's connect() every time, warm(), pool, SQLAlchemy), interleaved,
``BENCH_ITERATIONS`` times, and returns the JSON ``warmdb bench --json`` writes, plus this
environment's cold start:

- ``init_ms``: this module's import and setup (Lambda reports the whole Init Duration,
  interpreter and runtime included, in the REPORT log line);
- ``first_connect_ms``: the first checkout of the module-level keeper, a real connect on a
  cold start and a reuse on every warm one, as the seeds' handler saw it.

The event may override ``iterations``, ``patterns`` and ``drivers`` (lists of names).
``BENCH_CONNECT_ARGS``, a JSON object, adds connect() arguments (``{"port": 5433,
"auth": "dsql"}`` runs the handler against ``warmdb emulate`` on ``localhost``).
"""

import time

_INIT_STARTED = time.perf_counter()

import json  # noqa: E402 - the clock above starts before every import
import os  # noqa: E402
import platform  # noqa: E402
from typing import Any  # noqa: E402

import warmdb.psycopg2 as db  # noqa: E402

ENDPOINT = os.environ["DSQL_ENDPOINT"]
REGION = os.environ.get("DSQL_REGION", "us-west-2")
ITERATIONS = int(os.environ.get("BENCH_ITERATIONS", "30"))
PATTERNS = os.environ.get("BENCH_PATTERNS", "raw,aurora-dsql,connect,warm,pool,sqlalchemy")
CONNECT_ARGS = {
    "host": ENDPOINT,
    "region": REGION,
    "user": "admin",
    **json.loads(os.environ.get("BENCH_CONNECT_ARGS") or "{}"),
}

# The pattern a real handler uses: a keeper at module level, nothing connected yet.
KEEPER = db.warm(**CONNECT_ARGS)
INIT_MS = round((time.perf_counter() - _INIT_STARTED) * 1000, 3)
_COLD = True


def lambda_handler(event: dict[str, Any] | None, context: object) -> dict[str, Any]:
    """Run the matrix once; return its JSON, with this environment's cold start."""
    global _COLD
    from warmdb.bench import runner
    from warmdb.bench.report import render
    from warmdb.bench.results import IN_PROCESS
    from warmdb.bench.variants import select_variants

    event = event or {}
    cold, _COLD = _COLD, False
    started = time.perf_counter()
    with KEEPER.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        cur.fetchall()
    first_ms = round((time.perf_counter() - started) * 1000, 3)

    patterns = event.get("patterns") or PATTERNS.split(",")
    options = runner.RunOptions(
        kwargs=dict(CONNECT_ARGS),
        variants=tuple(select_variants(event.get("drivers"))),
        iterations=int(event.get("iterations", ITERATIONS)),
        patterns=tuple(p for p in IN_PROCESS if p in patterns),
        cold=False,  # a fresh process per sample is Lambda's own cold start: see init_ms
        progress=False,
    )
    result = runner.run(options)
    print(render(result))
    body = result.as_dict()
    body["lambda"] = {
        "arch": platform.machine(),
        "runtime": f"python{platform.python_version()}",
        "cold": cold,
        "init_ms": INIT_MS,
        "first_connect_ms": first_ms,
    }
    return body
