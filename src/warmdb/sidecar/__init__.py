"""``warmdb sidecar``: a supervised PgBouncer that keeps IAM tokens fresh.

One PgBouncer per execution environment shares server connections between every process of
it (Lambda Managed Instances runs one Python process per concurrent request). PgBouncer cannot
sign IAM tokens; the sidecar signs them, writes them to PgBouncer's auth file and reloads it
before the old token expires, restarts PgBouncer when it dies, and speaks the Lambda
Extensions API. See ``docs/sidecar.md``.

Modules: :mod:`~warmdb.sidecar.state` (the state file clients read), :mod:`.pgbouncer`
(versions, capabilities, configuration text), :mod:`.schedule` (when to refresh),
:mod:`.process` (starting and stopping PgBouncer), :mod:`.supervisor` (the sidecar itself),
:mod:`.admin` (``warmdb sidecar status``), :mod:`.extension` (the Lambda Extensions API) and
:mod:`.command` (the CLI).
"""

from __future__ import annotations

from warmdb.sidecar.state import SidecarState, read_state

__all__ = ["SidecarState", "read_state"]
