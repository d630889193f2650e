"""The policy half of a session after login: DSQL's transaction limits, conflicts and SQL.

:class:`Relay` sees every whole message in both directions and decides what each side gets;
it does no I/O, so unit tests drive it with scripted messages and a fake clock. The session
(:mod:`warmdb.emulator.server`) moves bytes between the sockets and ``to_client`` /
``to_upstream``.

Upstream cycles are matched to client cycles by counting: each Query or Sync sent upstream
gets exactly one ReadyForQuery, and :attr:`Relay.cycles` holds one entry per cycle still to
come, saying who it is for:

- ``None``: the client's own cycle, forwarded as it comes (plain reads: the hot path);
- bytes: the relay's own statement (a hidden ``BEGIN``, ``ROLLBACK``, savepoint...): its
  replies are swallowed and these bytes sent to the client in their place;
- a :class:`_Step`: a client statement the relay watches, whose end it decides.

Most traffic is plain. A Query is looked at only when it is not a lone read
(:func:`warmdb.emulator.sql_rules.is_plain_read`); the statements that need the relay
(writes, DDL, COMMIT, anything DSQL refuses, several statements in one Query) run one at a time,
each as its own upstream Query, so that a limit or a refusal stops the rest, whatever the
client's framing. Such a statement waits until every earlier cycle has ended, so the
transaction status it is judged against is known; client messages that arrive meanwhile are
held and replayed in order.

Conflicts are DSQL's: optimistic, reported at COMMIT. Upstream sessions run at REPEATABLE
READ; a write inside a transaction block runs after a savepoint of the relay's own, under a
short ``lock_timeout``. If it would wait for another writer's lock, or PostgreSQL finds a
serialization failure, the relay rolls back to that savepoint, answers the client as if the
statement had succeeded (with a row count of 0), and fails the COMMIT with ``40001`` and
``OC000``. Schema conflicts (``OC001``) come from a :class:`~warmdb.emulator.schema_log.SchemaLog`
shared by the server's relays.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
import weakref

from warmdb.emulator import protocol, sql_rules
from warmdb.emulator.schema_log import SchemaLog

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from warmdb.emulator.limits import Limits, Refusal
    from warmdb.emulator.stats import Stats

__all__ = ["Relay"]

logger = logging.getLogger(__name__)

Q = protocol.query_message
# A writer waits at most this long for another writer's row lock before its transaction is
# doomed: DSQL writers never wait; a little slack spares locks held for a moment.
_LOCK_TIMEOUT = "10ms"
_SAVEPOINT = "warmdb_occ"
_ROLLBACK = Q("ROLLBACK")
_COMMIT_QUERY = Q("COMMIT")
_BEGIN_IMPLICIT = Q(f"BEGIN; SET LOCAL lock_timeout = '{_LOCK_TIMEOUT}'")
_SAVEPOINT_FIRST = Q(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT}'; SAVEPOINT {_SAVEPOINT}")
_SAVEPOINT_NEXT = Q(f"RELEASE SAVEPOINT {_SAVEPOINT}; SAVEPOINT {_SAVEPOINT}")
_ROLLBACK_TO = Q(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
_SAVEPOINT_VERBS = frozenset({"SAVEPOINT", "RELEASE", "ROLLBACK TO"})
# Run in place of a refused statement: it fails, so PostgreSQL's transaction status becomes
# what DSQL's is after an error; the relay sends DSQL's error instead of this one's.
_FAIL = Q("SELECT 1/0")
_SYNC = protocol.encode(b"S", b"")
_IDLE_READY = protocol.ready_for_query(b"I")
_COMMIT_STATEMENT = sql_rules.Statement(sql_rules.COMMIT, "COMMIT", b"COMMIT")
# What a Parse of a plain read, or a Bind of an unknown statement, runs: nothing to judge.
_UNJUDGED = sql_rules.Statement(sql_rules.READ, "SELECT", b"")
# Messages a transaction-age refusal applies to: statements and extended-protocol steps.
_STATEMENT_TYPES = frozenset(b"QPBEDCS")
_EXTENDED_TYPES = frozenset(b"PBEDC")
# Client messages whose bytes count towards the transaction size: statements, bound
# parameters and COPY data.
_SIZED_TYPES = frozenset(b"QBd")
_COPY_TYPES = frozenset(b"dcf")
# Upstream replies the relay reads: CommandComplete (rows), CopyInResponse, ErrorResponse.
_RESULT_TYPES = frozenset(b"CGE")
_CONFLICT_CODES = frozenset({"40001", "40P01"})
# What a write that would wait for another writer, or that PostgreSQL finds in conflict,
# fails with upstream: lock_timeout, serialization failure, deadlock.
_WAIT_CODES = frozenset({"55P03", "40001", "40P01"})
_NEEDS_RELAY = frozenset({sql_rules.WRITE, sql_rules.DDL, sql_rules.COMMIT})
_NEEDS_RELAY_OR_UNKNOWN = _NEEDS_RELAY | {sql_rules.EXECUTE}
_TAGS = {
    "INSERT": b"INSERT 0 0",
    "UPDATE": b"UPDATE 0",
    "DELETE": b"DELETE 0",
    "MERGE": b"MERGE 0",
    "COPY": b"COPY 0",
    "SELECT": b"SELECT 0",
}
# Prepared statements remembered per session (protocol-level and SQL PREPARE), to know
# what a Bind or an EXECUTE runs; a session that prepares more names starts over.
_MAX_STATEMENTS = 10_000

_Q, _S, _X, _Z, _C, _G, _E, _P, _B, _H = (ord(c) for c in "QSXZCGEPBH")

# One SchemaLog per server: relays built without one share their Stats' (one per server).
_SCHEMA_LOGS: weakref.WeakKeyDictionary[Stats, SchemaLog] = weakref.WeakKeyDictionary()
_SCHEMA_LOGS_LOCK = threading.Lock()


def _complete(tag: bytes) -> bytes:
    return protocol.encode(b"C", tag + b"\x00")


class _Step:
    """A client cycle the relay watches (see the module docstring).

    :ivar statement: what the cycle runs.
    :ivar replace_error: sent in place of the cycle's ErrorResponse (``b""``: dropped).
    :ivar swallow: the cycle's other replies are dropped (a COMMIT or ROLLBACK of the
        relay's own whose errors still concern the client).
    :ivar occ: a write after the relay's savepoint: waits and conflicts doom the transaction.
    :ivar wrapped: a write in a transaction of the relay's own: waits are conflicts.
    :ivar emit: sent to the client when the cycle ends.
    """

    __slots__ = (
        "completes",
        "doomed",
        "emit",
        "executes",
        "failed",
        "occ",
        "replace_error",
        "statement",
        "swallow",
        "tail",
        "wrapped",
    )

    def __init__(
        self,
        statement: sql_rules.Statement | None = None,
        *,
        replace_error: bytes | None = None,
        swallow: bool = False,
        occ: bool = False,
        wrapped: bool = False,
        emit: bytes = b"",
    ) -> None:
        self.statement = statement
        self.replace_error = replace_error
        self.swallow = swallow
        self.occ = occ
        self.wrapped = wrapped
        self.emit = emit
        self.failed = self.doomed = self.tail = False
        # A simple Query is one execution; extended sequences count their Executes.
        self.executes = 1
        self.completes = 0


class Relay:
    """Transaction state, limits, conflicts and SQL rules of one session.

    :param limits: the limits to enforce, and whether to check SQL (``limits.sql_checks``).
    :param stats: the server's counters.
    :param occ_conflict_rate: the fraction of COMMITs failed with a simulated conflict.
    :param rng: the random source for simulated conflicts.
    :param clock: a monotonic clock in seconds.
    :param status: the transaction status of the upstream's first ReadyForQuery.
    :param schema_log: the server's record of committed DDL, shared by its relays; by
        default one per ``stats`` object.

    :ivar to_client: bytes waiting to be sent to the client.
    :ivar to_upstream: bytes waiting to be sent to the upstream.
    """

    def __init__(
        self,
        *,
        limits: Limits,
        stats: Stats,
        occ_conflict_rate: float = 0.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        status: bytes = b"I",
        schema_log: SchemaLog | None = None,
    ) -> None:
        self.limits = limits
        self.stats = stats
        self.occ_conflict_rate = occ_conflict_rate
        self.rng = rng or random.Random()  # noqa: S311 - simulated conflicts, not secrets
        self.clock = clock
        if schema_log is None:
            with _SCHEMA_LOGS_LOCK:
                schema_log = _SCHEMA_LOGS.setdefault(stats, SchemaLog())
        self.schema_log = schema_log
        self.to_client = bytearray()
        self.to_upstream = bytearray()
        self.status = status
        self.cycles: collections.deque[bytes | _Step | None] = collections.deque()
        self.client_partial = False
        # Executes sent since the client's last Sync: none, and the status is still known.
        self.partial_executes = 0
        self.deferred: bytes | None = None
        self.rejecting = False
        # What ends a refused sequence's transaction at its Sync, if anything.
        self.reject_query: bytes | None = None
        self.dropping = False
        self.copy_in = False
        # Client messages held while the relay drives a statement, or waits for the
        # upstream to catch up before judging one.
        self.holding = False
        # With each, whether it was counted already (limits, statistics) before it was held.
        self.held: list[tuple[bytes, bool]] = []
        #: Bytes of :attr:`held`: what the client sent that is neither sent nor refused.
        self.held_bytes = 0
        # The statements of the client Query being run one at a time; ``None`` when no
        # relay-driven cycle is in progress.
        self.script: collections.deque[sql_rules.Statement] | None = None
        self.script_failed = False
        self.script_multi = False
        # A transaction of the relay's own around autocommitted writes (PostgreSQL's
        # implicit transaction of a multi-statement Query, made explicit).
        self.implicit = False
        self.must_rollback = False
        self.rollback_to_pending = False
        # The extended-protocol sequence the relay watches, until its Sync.
        self.ext_step: _Step | None = None
        self.statements: dict[bytes, sql_rules.Statement] = {}
        self.sql_prepared: dict[bytes, sql_rules.Statement] = {}
        self.judged = True
        self._reset_transaction()

    def _reset_transaction(self) -> None:
        self.txn_started: float | None = None
        self.txn_rows = 0
        self.txn_bytes = 0
        self.violation: str | None = None
        self.txn_schema = 0
        # The rest changes only for statements the relay judged (not on the hot path).
        if self.judged:
            self.judged = False
            self.txn_tables: frozenset[str] = frozenset()
            self.txn_ddl = 0
            self.ddl_tables: frozenset[str] = frozenset()
            self.txn_dml = False
            self.doomed = False
            self.savepoint = False

    # Client messages -------------------------------------------------------------------

    def from_client(self, message: bytes) -> None:
        """Handle one whole client message: forward it, hold it, or refuse it."""
        kind = message[0]
        # COPY data belongs to the COPY statement already sent, unless that is held too.
        if self.holding and (self.held or kind not in _COPY_TYPES):
            self.held.append((message, False))
            self.held_bytes += len(message)
            return
        if self.rejecting:
            # Skipping the rest of a refused extended-protocol sequence.
            if kind in (_S, _X):
                self.rejecting = False
                if kind == _S and self.reject_query is not None:
                    query, self.reject_query = self.reject_query, None
                    self._end_refused_sequence(query)
                    return
                self.to_upstream += message
                if kind == _S:
                    self.cycles.append(None)
            return
        if kind in (_Q, _E):
            self.stats.add("queries")
        now = self.clock()
        if kind in _STATEMENT_TYPES:
            if self.txn_started is None:
                self.txn_started = now
                self.txn_schema = self.schema_log.version
            elif self.status != b"I" and now - self.txn_started > self.limits.scaled(
                self.limits.transaction_age
            ):
                self._refuse_statement(message)
                return
        if kind in _SIZED_TYPES and (self.status != b"I" or self.implicit):
            self.txn_bytes += len(message)
            if self.txn_bytes > self.limits.transaction_bytes and self.violation is None:
                self.violation = "transaction_size"
        self._dispatch(kind, message)

    def _dispatch(self, kind: int, message: bytes) -> None:
        """Send a counted client message on, or judge it first."""
        if kind == _Q:
            if not sql_rules.is_plain_read(message[5:]):
                self._query(message)
                return
        elif kind in (_P, _B):
            statement = self._statement(kind, message)
            if statement.kind in _NEEDS_RELAY or statement.refusal is not None:
                self._extended(statement, message)
                return
        elif self.ext_step is not None and self._watch_extended(kind):
            return
        self._forward(kind, message)

    def _forward(self, kind: int, message: bytes) -> None:
        self.to_upstream += message
        if kind in (_Q, _S):
            self.cycles.append(None)
            self.client_partial = False
            self.partial_executes = 0
            if self.deferred is not None:
                deferred, self.deferred = self.deferred, None
                self._inject(deferred)
        elif kind in _EXTENDED_TYPES:
            self.client_partial = True
            if kind == _E:
                self.partial_executes += 1

    def _is_synchronous(self) -> bool:
        """Whether no cycle is in flight, so the upstream's transaction status is known."""
        return not self.cycles and not self.client_partial

    def _await_sync(self, message: bytes) -> None:
        """Judge *message* once the upstream has answered everything sent before it.

        An extended-protocol sequence the client left open (asyncpg prepares with Parse,
        Describe and Flush, and sends the Sync later) is closed first with a Sync of the
        relay's own: else its status would stay unknown until a Sync that may never come.
        """
        if self.client_partial and self.ext_step is None:
            self._send_own(_SYNC)
            self.client_partial = False
            self.partial_executes = 0
        self._hold(message)

    def _hold(self, message: bytes) -> None:
        """Wait for the upstream to catch up before judging *message*."""
        self.holding = True
        self.held.append((message, True))
        self.held_bytes += len(message)

    def _statement(self, kind: int, message: bytes) -> sql_rules.Statement:
        """What a Parse or Bind message runs (remembering what a Parse prepares)."""
        if kind == _P:
            name, sql = protocol.parse_statement(message)
            statement = _UNJUDGED if sql_rules.is_plain_read(sql) else sql_rules.classify(sql)
            if len(self.statements) >= _MAX_STATEMENTS:
                self.statements.clear()
            self.statements[name] = statement
            return statement
        return self.statements.get(protocol.bind_statement(message), _UNJUDGED)

    def _resolve(self, statement: sql_rules.Statement) -> sql_rules.Statement:
        """The statement an SQL EXECUTE runs, as far as this session prepared it."""
        if statement.kind == sql_rules.EXECUTE and statement.name is not None:
            return self.sql_prepared.get(statement.name, statement)
        return statement

    def _check(self, statement: sql_rules.Statement, in_transaction: bool) -> Refusal | None:
        """DSQL's refusal of *statement* in the current transaction, if any."""
        if not self.limits.sql_checks:
            return None
        statement = self._resolve(statement)
        if statement.refusal is not None:
            return statement.refusal
        if in_transaction:
            if statement.kind == sql_rules.DDL:
                if self.txn_ddl:
                    return sql_rules.NOT_SUPPORTED["multiple_ddl"]
                if self.txn_dml:
                    return sql_rules.NOT_SUPPORTED["ddl_and_dml"]
            elif statement.kind == sql_rules.WRITE and self.txn_ddl:
                return sql_rules.NOT_SUPPORTED["ddl_and_dml"]
        return None

    def _track(self, statement: sql_rules.Statement) -> None:
        """Note what *statement* does to the transaction (sent, not yet answered)."""
        self.judged = True
        if statement.kind == sql_rules.PREPARE and statement.name is not None:
            if len(self.sql_prepared) >= _MAX_STATEMENTS:
                self.sql_prepared.clear()
            if statement.inner is not None:
                self.sql_prepared[statement.name] = statement.inner
        elif statement.verb in _SAVEPOINT_VERBS:
            # The client's own savepoints (postgres-compatible mode): releasing or rolling
            # back to one may drop the relay's; the next write makes a fresh one.
            self.savepoint = False
        statement = self._resolve(statement)
        if statement.tables:
            self.txn_tables |= statement.tables
        if statement.kind == sql_rules.DDL:
            self.txn_ddl += 1
            self.ddl_tables |= statement.tables
        elif statement.kind == sql_rules.WRITE:
            self.txn_dml = True

    # Simple-protocol statements --------------------------------------------------------

    def _query(self, message: bytes) -> None:
        """A Query that is not a lone read: run its statements one at a time."""
        statements = sql_rules.split(message[5:])
        checks = self.limits.sql_checks
        # An EXECUTE of a statement prepared earlier in the same Query resolves only then.
        if all(
            self._resolve(statement).kind not in _NEEDS_RELAY_OR_UNKNOWN
            and (statement.refusal is None or not checks)
            for statement in statements
        ):
            # Nothing here writes, changes the schema, commits or is refused: PostgreSQL
            # may run it as sent.
            for statement in statements:
                self._track(statement)
            self._forward(_Q, message)
            return
        if not self._is_synchronous():
            self._await_sync(message)
            return
        self.script = collections.deque(statements)
        self.script_multi = len(statements) > 1
        self.script_failed = False
        self.holding = True
        if self.status == b"I":
            self.txn_bytes += len(message)
            if self.txn_bytes > self.limits.transaction_bytes and self.violation is None:
                self.violation = "transaction_size"
        self._next_step()

    def _next_step(self) -> None:
        assert self.script is not None
        statement = self.script.popleft()
        if self.status == b"E" and not self.implicit:
            # PostgreSQL refuses everything but the end of the transaction: let it say so.
            self._send_step(statement.sql, _Step(statement))
            return
        resolved = self._resolve(statement)
        if statement.kind == sql_rules.BEGIN and self.implicit:
            # As PostgreSQL does: BEGIN turns the implicit transaction into an explicit one.
            self.implicit = False
            self.to_client += _complete(b"BEGIN")
            self._advance()
            return
        if (
            self.status == b"I"
            and not self.implicit
            and resolved.kind not in sql_rules.TRANSACTION_CONTROL
            and (self.script_multi or resolved.kind == sql_rules.WRITE)
        ):
            # PostgreSQL runs a Query's statements as one implicit transaction and commits a
            # write before its row count is known: a transaction of the relay's own instead,
            # committed (or rolled back) once the statements have run.
            self._send_own(_BEGIN_IMPLICIT)
            self.implicit = True
        if statement.kind == sql_rules.ROLLBACK:
            self.implicit = False
        in_transaction = self.implicit or self.status == b"T"
        refusal = self._check(statement, in_transaction)
        if refusal is not None:
            error = protocol.error_response(refusal.code, refusal.message)
            self._send_step(_FAIL[5:-1], _Step(statement, replace_error=error))
            return
        if statement.kind == sql_rules.COMMIT and in_transaction:
            self._commit(statement)
            return
        self._track(statement)
        if resolved.kind == sql_rules.WRITE:
            if self.implicit:
                self._send_step(statement.sql, _Step(resolved, wrapped=True))
            else:
                self._savepoint()
                self._send_step(statement.sql, _Step(resolved, occ=True))
            return
        self._send_step(statement.sql, _Step(statement))

    def _send_step(self, sql: bytes, step: _Step) -> None:
        self.to_upstream += protocol.encode(b"Q", sql + b"\x00")
        self.cycles.append(step)

    def _send_own(self, message: bytes, answer: bytes = b"") -> None:
        self.to_upstream += message
        self.cycles.append(answer)

    def _savepoint(self) -> None:
        """A savepoint to return to if the next write would wait or conflict."""
        self._send_own(_SAVEPOINT_NEXT if self.savepoint else _SAVEPOINT_FIRST)
        self.savepoint = self.judged = True

    def _commit(self, statement: sql_rules.Statement, *, implicit: bool = False) -> None:
        """COMMIT, unless DSQL would find a conflict now: then roll back and say so."""
        conflict = None
        if self.doomed:
            conflict = "occ"
        elif self._schema_changed():
            conflict = "occ_schema"
        elif self.occ_conflict_rate > 0 and self.rng.random() < self.occ_conflict_rate:
            conflict = "occ"
        if conflict is not None:
            self.stats.add("occ_conflicts")
            refusal = self.limits.refusal(conflict)
            error = protocol.error_response(refusal.code, refusal.message)
            self.script_failed = True
            self.to_upstream += _ROLLBACK
            self.cycles.append(_Step(statement, swallow=True, emit=error))
            return
        sql = _COMMIT_QUERY[5:-1] if implicit else statement.sql
        self.implicit = False
        self._send_step(sql, _Step(_COMMIT_STATEMENT, swallow=implicit))

    def _schema_changed(self) -> bool:
        """Whether a DDL committed, since this writing transaction began, on a table it used."""
        return self.txn_dml and self.schema_log.changed_since(self.txn_tables, self.txn_schema)

    def _end_refused_sequence(self, query: bytes) -> None:
        """Run *query* (a failing statement, or ROLLBACK) for a refused sequence's Sync."""
        self.script = collections.deque()
        self.holding = True
        self._send_step(query[5:-1], _Step(replace_error=b"", swallow=True))

    # Extended-protocol statements ------------------------------------------------------

    def _extended(self, statement: sql_rules.Statement, message: bytes) -> None:
        """A Parse or Bind of a statement the relay must judge or watch."""
        kind = message[0]
        if (
            self.client_partial
            and self.ext_step is None
            and not self.partial_executes
            and (kind == _P or protocol.bind_statement(message))
        ):
            # Nothing ran since the client's last Sync: close its sequence and judge this
            # message as the start of the next. (A Bind of the unnamed statement cannot be
            # judged so: it must follow its Parse, with nothing in between.)
            self._await_sync(message)
            return
        if self.client_partial:
            # Inside a sequence the transaction status is not known: only refusals that
            # do not depend on it apply.
            refusal = statement.refusal if self.limits.sql_checks else None
            if refusal is not None:
                self._refuse_in_sequence(refusal)
                return
            if self.ext_step is not None:
                self._watch_extended(kind)
            self._forward(kind, message)
            return
        if self.cycles:
            self._hold(message)
            return
        in_transaction = self.status == b"T"
        refusal = None if self.status == b"E" else self._check(statement, in_transaction)
        if (
            refusal is None
            and statement.kind == sql_rules.COMMIT
            and in_transaction
            and (self.doomed or self._schema_changed())
        ):
            self.stats.add("occ_conflicts")
            refusal = self.limits.refusal("occ" if self.doomed else "occ_schema")
        if refusal is not None:
            # Answered at once (the client may wait for it after a Flush); the rest of the
            # sequence is skipped up to its Sync, which then leaves the transaction failed.
            self.to_client += protocol.error_response(refusal.code, refusal.message)
            self.rejecting = True
            if statement.kind == sql_rules.COMMIT and in_transaction:
                self.reject_query = _ROLLBACK
            elif in_transaction:
                self.reject_query = _FAIL
            return
        if self.status != b"E":
            self._track(statement)
            if statement.kind == sql_rules.WRITE:
                if self.status == b"I":
                    self._send_own(_BEGIN_IMPLICIT)
                    self.implicit = True
                    self.txn_bytes += len(message)
                    self.ext_step = _Step(statement, wrapped=True)
                else:
                    self._savepoint()
                    self.ext_step = _Step(statement, occ=True)
                self.ext_step.executes = 0
            elif statement.kind in (sql_rules.DDL, sql_rules.COMMIT):
                self.ext_step = _Step(statement)
                self.ext_step.executes = 0
        self._forward(kind, message)

    def _watch_extended(self, kind: int) -> bool:
        """Count the watched sequence's Executes; at its Sync (forwarded here: return
        ``True``), hand the sequence's end to :meth:`_advance`."""
        step = self.ext_step
        assert step is not None
        if kind == _E:
            step.executes += 1
            step.tail = False
        elif kind == _S:
            self.ext_step = None
            self.to_upstream += _SYNC
            self.cycles.append(step)
            self.client_partial = False
            self.script = collections.deque()
            self.holding = True
            return True
        elif step.executes and kind != _H:
            # More statements after an Execute: a conflict there cannot be hidden.
            step.tail = True
        return False

    def _refuse_in_sequence(self, refusal: Refusal) -> None:
        # End the client's unfinished sequence upstream, unseen; skip the rest to its Sync.
        self.to_upstream += _SYNC
        self.cycles.append(b"")
        self.client_partial = False
        if self.ext_step is not None:
            self.ext_step = None
        self.to_client += protocol.error_response(refusal.code, refusal.message)
        self.rejecting = True

    # Limits ----------------------------------------------------------------------------

    def _refuse_statement(self, message: bytes) -> None:
        self.stats.violation("transaction_age")
        refusal = self.limits.refusal("transaction_age")
        error = protocol.error_response(refusal.code, refusal.message)
        if self.client_partial:
            # End the client's unfinished extended-protocol sequence upstream, unseen, so
            # the ROLLBACK below runs as a statement of its own.
            self.to_upstream += _SYNC
            self.cycles.append(b"")
            self.client_partial = False
            self.ext_step = None
        if message[0] in (_Q, _S):
            self._inject(error + _IDLE_READY)
        else:
            # As PostgreSQL does after an error in an extended-protocol sequence: answer
            # now (the client may be waiting after a Flush), skip to the Sync, and let that
            # Sync through for its ReadyForQuery.
            self._inject(error)
            self.rejecting = True

    def _answer(self, reason: str) -> bytes:
        """The end of a cycle refused for *reason*: the error, then idle (rolled back)."""
        refusal = self.limits.refusal(reason)
        return protocol.error_response(refusal.code, refusal.message) + _IDLE_READY

    def _inject(self, answer: bytes) -> None:
        """Roll the upstream transaction back; the client gets *answer* for that cycle."""
        self._reset_transaction()
        if self.client_partial:
            # A ROLLBACK now would land inside the client's unfinished extended-protocol
            # sequence; it goes after that sequence's Sync instead.
            self.deferred = answer
            return
        self.to_upstream += _ROLLBACK
        self.cycles.append(answer)

    # Upstream messages -----------------------------------------------------------------

    def from_upstream(self, message: bytes) -> None:
        """Handle one whole upstream message: forward it, rewrite it, or swallow it."""
        kind = message[0]
        if kind == _Z:
            self._upstream_ready(message)
            return
        if self.cycles:
            entry = self.cycles[0]
            if entry is not None:
                if not isinstance(entry, bytes):  # else a reply to the relay's own statement
                    self._step_message(entry, kind, message)
                return
        if self.dropping:
            return  # the rest of a cycle whose statement was refused
        if kind in _RESULT_TYPES:
            out = self._result(kind, message)
            if out is not None:
                self.to_client += out
        else:
            self.to_client += message

    def _result(self, kind: int, message: bytes) -> bytes | None:
        """A reply to a client statement, with rows counted and conflicts renamed."""
        if kind == _C:
            rows = protocol.modified_rows(message)
            if rows and protocol.command_tag(message) == "COPY" and not self.copy_in:
                rows = 0  # COPY TO reads rows, it does not write them
            self.copy_in = False
            self.txn_rows += rows
            if self.txn_rows > self.limits.transaction_rows and self.violation is None:
                self.violation = "transaction_rows"
            if self.violation is not None and (self.status != b"I" or self.implicit):
                # Inside a transaction the statement that crossed the limit fails in place
                # of its CommandComplete, and the transaction is rolled back when the cycle
                # ends.
                self.stats.violation(self.violation)
                refusal = self.limits.refusal(self.violation)
                self.violation = None
                self.dropping = True
                return protocol.error_response(refusal.code, refusal.message)
        elif kind == _G:
            self.copy_in = True
        elif kind == _E:
            return self._rename_conflict(message)
        return message

    def _step_message(self, step: _Step, kind: int, message: bytes) -> None:
        if kind == _E:
            step.failed = True
            self.copy_in = False
            if step.replace_error is not None:
                self.to_client += step.replace_error
                return
            if self.dropping:
                return
            code = protocol.error_fields(message).get("C")
            if (
                step.occ
                and code in _WAIT_CODES
                and step.executes == step.completes + 1
                and not step.tail
            ):
                # As on DSQL, this writer neither waits nor fails here: the statement
                # "succeeds" (its changes undone), and COMMIT will fail.
                step.doomed = True
                self.doomed = self.judged = True
                verb = step.statement.verb if step.statement is not None else ""
                self.to_client += _complete(_TAGS.get(verb, b"UPDATE 0"))
                return
            if (step.occ or step.wrapped) and code == "55P03":
                self.to_client += self._conflict(message)
                return
            self.to_client += self._rename_conflict(message)
            return
        if step.swallow or self.dropping:
            return
        if kind == _C:
            step.completes += 1
        out = self._result(kind, message)
        if out is not None:
            self.to_client += out

    def _rename_conflict(self, message: bytes) -> bytes:
        """PostgreSQL's serialization failures and deadlocks, as DSQL's OC000 conflict."""
        if protocol.error_fields(message).get("C") not in _CONFLICT_CODES:
            return message
        return self._conflict(message)

    def _conflict(self, message: bytes) -> bytes:
        """DSQL's OC000 error in place of *message*, none of whose fields (detail, context:
        PostgreSQL's wait or conflict) would be DSQL's."""
        self.stats.add("occ_conflicts")
        refusal = self.limits.refusal("occ")
        return protocol.error_response(refusal.code, refusal.message)

    def _upstream_ready(self, message: bytes) -> None:
        entry = self.cycles.popleft() if self.cycles else None
        status = protocol.ready_status(message)
        if entry is None:
            self._client_ready(message, status)
        elif isinstance(entry, bytes):
            # The end of the relay's own cycle: a ROLLBACK (its answer ends the client's
            # cycle), or a hidden BEGIN, savepoint or Sync (answered with nothing).
            self.to_client += entry
            self.status = status
            if entry:
                self.stats.add("transactions")
            if status == b"I" and not self.implicit:
                if self.txn_started is not None and not entry:
                    self.stats.add("transactions")
                self._reset_transaction()
        else:
            self._step_ready(entry, status)
        if not self.cycles and (self.holding or self.script is not None):
            self._advance()

    def _client_ready(self, message: bytes, status: bytes) -> None:
        """The end of a plain client cycle."""
        if self.dropping or self.violation is not None:
            if status != b"I":
                if self.dropping:
                    answer = _IDLE_READY
                else:
                    self.stats.violation(self.violation)  # type: ignore[arg-type]
                    answer = self._answer(self.violation)  # type: ignore[arg-type]
                self.dropping = False
                self._inject(answer)
                return
            # Outside a transaction block the upstream has committed already: DSQL would
            # have refused, the emulator can only say so.
            logger.warning("%s exceeded by an autocommitted statement", self.violation)
            self.dropping = False
        self.status = status
        if status == b"I" and self.txn_started is not None:
            self.stats.add("transactions")
            self._reset_transaction()
        self.to_client += message

    def _step_ready(self, step: _Step, status: bytes) -> None:
        """The end of a watched cycle: note how it went; :meth:`_advance` goes on."""
        self.status = status
        if self.dropping:
            self.dropping = False
            step.failed = True
            self.must_rollback = True
        elif self.violation is not None and status != b"I" and not step.failed:
            self.stats.violation(self.violation)
            refusal = self.limits.refusal(self.violation)
            self.to_client += protocol.error_response(refusal.code, refusal.message)
            self.violation = None
            step.failed = True
            self.must_rollback = True
        if step.emit:
            self.to_client += step.emit
        if step.doomed:
            self.rollback_to_pending = True
        elif step.failed:
            self.script_failed = True
        elif (
            status == b"I"
            and self.ddl_tables
            and step.statement is not None
            and step.statement.kind in (sql_rules.DDL, sql_rules.COMMIT)
        ):
            self.schema_log.record(self.ddl_tables)
        if status == b"I" and not self.implicit:
            if self.txn_started is not None:
                self.stats.add("transactions")
            self._reset_transaction()

    def _advance(self) -> None:
        """The upstream has answered everything: take the next step, or end the cycle."""
        if self.rollback_to_pending:
            self.rollback_to_pending = False
            self._send_own(_ROLLBACK_TO)
            return
        if self.must_rollback:
            self.must_rollback = False
            self.implicit = False
            self._send_own(_ROLLBACK)
            return
        if self.script is not None:
            if self.script and not self.script_failed:
                self._next_step()
                return
            if self.implicit:
                self.implicit = False
                if self.status == b"T" and not self.script_failed:
                    self._commit(_COMMIT_STATEMENT, implicit=True)
                elif self.status != b"I":
                    self._send_own(_ROLLBACK)
                return
            self.script = None
            self.script_failed = False
            self.to_client += protocol.ready_for_query(self.status)
        self.holding = False
        held, self.held = self.held, []
        self.held_bytes = 0
        # Each goes through again: held anew once a statement holds the session again
        # (except the COPY data of a COPY just sent), in order.
        for message, counted in held:
            if not counted:
                self.from_client(message)
            elif self.holding:
                self.held.append((message, True))
                self.held_bytes += len(message)
            else:
                if self.txn_started is None:
                    # The transaction it was counted in ended meanwhile (a Sync of the
                    # relay's own): it starts the next one.
                    self.txn_started = self.clock()
                    self.txn_schema = self.schema_log.version
                self._dispatch(message[0], message)
