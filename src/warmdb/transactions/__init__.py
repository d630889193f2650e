"""Transactions under Aurora DSQL's rules: conflicts retried, writes split to fit the limits.

DSQL resolves concurrency optimistically: a transaction that lost a conflict learns it at
COMMIT (SQLSTATE 40001, message ``OC000 ...`` for data, ``OC001 ...`` for schema) and must
run again. It also refuses a transaction over 3,000 modified rows, 10 MiB or 300 s (54000).

- :func:`run_transaction` / :func:`run_transaction_async`: begin, ``fn(conn, attempt)``,
  commit; on a conflict, roll back, wait and run ``fn`` again, within a retry budget.
- :func:`write_batches` / :func:`write_batches_async`: many rows, streamed, in transactions
  within the limits, each retried on conflicts; a failure says how to resume.
- :class:`OCCRetryConfig`: aurora-dsql-python-connector's retry budget, for a drop-in move;
  :data:`DEFAULT_RETRY`: warmdb's, chosen under contention.

``docs/transactions.md`` has the examples, the resume recipe and the measured figures.
"""

from __future__ import annotations

from warmdb.transactions._batches import (
    DEFAULT_BATCH_BYTES,
    DEFAULT_BATCH_ROWS,
    DEFAULT_BATCH_TIME,
    BatchResult,
    row_bytes,
    split_batches,
    write_batches,
    write_batches_async,
)
from warmdb.transactions._conflict import adapter_for_connection, conflict_code
from warmdb.transactions._retry import (
    DEFAULT_RETRY,
    OCCRetryConfig,
    merge_retry,
    retry_schedule,
)
from warmdb.transactions._run import run_transaction, run_transaction_async

__all__ = [
    "DEFAULT_BATCH_BYTES",
    "DEFAULT_BATCH_ROWS",
    "DEFAULT_BATCH_TIME",
    "DEFAULT_RETRY",
    "BatchResult",
    "OCCRetryConfig",
    "adapter_for_connection",
    "conflict_code",
    "merge_retry",
    "retry_schedule",
    "row_bytes",
    "run_transaction",
    "run_transaction_async",
    "split_batches",
    "write_batches",
    "write_batches_async",
]
