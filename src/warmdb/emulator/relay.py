"""The policy half of a session after login: DSQL's transaction limits and conflicts.

:class:`Relay` sees every whole message in both directions and decides what each side gets;
it does no I/O, so unit tests drive it with scripted messages and a fake clock. The session
(:mod:`warmdb.emulator.server`) moves bytes between the sockets and ``to_client`` /
``to_upstream``.

Upstream cycles are matched to client cycles by counting: each client Query or Sync gets
exactly one ReadyForQuery. When the relay injects a ``ROLLBACK`` of its own (a limit or a
simulated conflict), it queues the client-facing answer for that cycle; the upstream's
replies to it are swallowed and the queued answer is sent in their place, in order with
everything else.
"""

from __future__ import annotations

import collections
import logging
import random
import re
import time

from warmdb.emulator import protocol

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from warmdb.emulator.limits import Limits
    from warmdb.emulator.stats import Stats

__all__ = ["Relay"]

logger = logging.getLogger(__name__)

_ROLLBACK = protocol.query_message("ROLLBACK")
_BEGIN = protocol.query_message("BEGIN")
_COMMIT_QUERY = protocol.query_message("COMMIT")
_SYNC = protocol.encode(b"S", b"")
_IDLE_READY = protocol.ready_for_query(b"I")
_COMMIT = re.compile(r"\s*(commit|end)(\s+(work|transaction))?\s*;?\s*", re.IGNORECASE)
# Messages a transaction-age refusal applies to: statements and extended-protocol steps.
_STATEMENT_TYPES = frozenset(b"QPBEDCS")
_EXTENDED_TYPES = frozenset(b"PBEDC")
# Client messages whose bytes count towards the transaction size: statements, bound
# parameters and COPY data.
_SIZED_TYPES = frozenset(b"QBd")
_COPY_TYPES = frozenset(b"dcf")
_CONFLICT_CODES = frozenset({"40001", "40P01"})
_WRITE = re.compile(rb"\s*(insert|update|delete|merge|copy|with)\b", re.IGNORECASE)
_WRITE_WORD = re.compile(rb"\b(insert|update|delete|merge|copy)\b", re.IGNORECASE)
# Statements that end or shape a transaction: a Query holding one of these words runs as the
# client wrote it, since a transaction of the relay's own around it would change its meaning.
_TRANSACTION_WORD = re.compile(
    rb"\b(begin|commit|end|rollback|abort|savepoint|release|transaction)\b", re.IGNORECASE
)


# Prepared statements remembered per session, to know whether a Bind runs a write; a
# session that prepares more than this many distinct names starts over.
_MAX_STATEMENTS = 10_000


def _is_write(sql: bytes) -> bool:
    """Whether *sql* may modify rows and can run in a transaction of the relay's own.

    One statement: it starts with INSERT, UPDATE, DELETE, MERGE, COPY or WITH. Several (any
    ``;`` before the end, even inside a literal): one of those words appears and no word of
    transaction control does. Conservative: such a word inside a literal or an identifier
    only means the statements are not wrapped.
    """
    text = sql.rstrip(b" \t\r\n;\x00")
    if b";" not in text:
        return _WRITE.match(text) is not None
    return _WRITE_WORD.search(text) is not None and _TRANSACTION_WORD.search(text) is None


_Q, _S, _X, _Z, _C, _G, _E, _P, _B = (ord(c) for c in "QSXZCGEPB")


class Relay:
    """Transaction state and limits of one session, between login and close.

    :param limits: the limits to enforce.
    :param stats: the server's counters.
    :param occ_conflict_rate: the fraction of COMMITs failed with a simulated conflict.
    :param rng: the random source for simulated conflicts.
    :param clock: a monotonic clock in seconds.
    :param status: the transaction status of the upstream's first ReadyForQuery.

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
    ) -> None:
        self.limits = limits
        self.stats = stats
        self.occ_conflict_rate = occ_conflict_rate
        self.rng = rng or random.Random()  # noqa: S311 - simulated conflicts, not secrets
        self.clock = clock
        self.to_client = bytearray()
        self.to_upstream = bytearray()
        self.status = status
        # One entry per upstream ReadyForQuery still to come: None for the client's own
        # cycles; for the relay's own (ROLLBACK, COMMIT, a hidden BEGIN or Sync), the bytes
        # the client gets instead of the upstream's replies.
        self.cycles: collections.deque[bytes | None] = collections.deque()
        self.client_partial = False
        self.deferred: bytes | None = None
        self.rejecting = False
        self.dropping = False
        self.copy_in = False
        # A wrapped autocommitted write (see _wrap): in progress, ending, committing; and
        # the client messages held back meanwhile.
        self.wrapping = False
        self.wrap_cycle_open = False
        self.wrap_ending = False
        self.committing = False
        self.held: list[bytes] = []
        # Whether each prepared statement (by name) is a write statement.
        self.statements: dict[bytes, bool] = {}
        self._reset_transaction()

    def _reset_transaction(self) -> None:
        self.txn_started: float | None = None
        self.txn_rows = 0
        self.txn_bytes = 0
        self.violation: str | None = None

    def from_client(self, message: bytes) -> None:
        """Handle one whole client message: forward it, or refuse it."""
        kind = message[0]
        if self.wrapping and not self.wrap_cycle_open and kind not in _COPY_TYPES:
            # The relay's own transaction around an autocommitted write is still open: no
            # other statement of the client's may run inside it (COPY data of the wrapped
            # statement itself must go on).
            self.held.append(message)
            return
        if self.rejecting:
            # Skipping the rest of a refused extended-protocol sequence.
            if kind in (_S, _X):
                self.rejecting = False
                self.to_upstream += message
                if kind == _S:
                    self.cycles.append(None)
            return
        if kind in (_Q, ord("E")):
            self.stats.add("queries")
        now = self.clock()
        if kind in _STATEMENT_TYPES:
            if self.txn_started is None:
                self.txn_started = now
            elif self.status != b"I" and now - self.txn_started > self.limits.scaled(
                self.limits.transaction_age
            ):
                self._refuse_statement(message)
                return
        if kind in _SIZED_TYPES and (self.status != b"I" or self.wrapping):
            self.txn_bytes += len(message)
            if self.txn_bytes > self.limits.transaction_bytes and self.violation is None:
                self.violation = "transaction_size"
        if (
            kind == _Q
            and self.status == b"T"
            and self.occ_conflict_rate > 0
            and _COMMIT.fullmatch(protocol.query_text(message))
            and self.rng.random() < self.occ_conflict_rate
        ):
            self.stats.add("occ_conflicts")
            self._inject(self._answer("occ"))
            return
        if self._starts_autocommitted_write(kind, message):
            self._wrap(message)
            return
        self.to_upstream += message
        if kind in (_Q, _S):
            self.cycles.append(None)
            self.client_partial = False
            self.wrap_cycle_open = False
            if self.deferred is not None:
                deferred, self.deferred = self.deferred, None
                self._inject(deferred)
        elif kind in _EXTENDED_TYPES:
            self.client_partial = True

    def _starts_autocommitted_write(self, kind: int, message: bytes) -> bool:
        """Whether *message* starts write statements outside a transaction block."""
        if kind == _P:
            name, sql = protocol.parse_statement(message)
            is_write = _is_write(sql)
            if len(self.statements) >= _MAX_STATEMENTS:
                self.statements.clear()
            self.statements[name] = is_write
        elif kind == _B:
            is_write = self.statements.get(protocol.bind_statement(message), False)
        elif kind == _Q:
            is_write = _is_write(message[5:])
        else:
            return False
        # Only at the start of a cycle, with no other cycle in flight, is the status known.
        return is_write and self.status == b"I" and not self.cycles and not self.client_partial

    def _wrap(self, message: bytes) -> None:
        """Run autocommitted writes (one statement, or a Query of several) in a transaction.

        DSQL refuses a statement over the row or size limit even outside a transaction
        block; PostgreSQL would have committed it before its row count is known. So the
        statements run between a hidden BEGIN and a COMMIT (or ROLLBACK) sent once their
        results are in, which also puts their conflicts at commit, as on DSQL.
        """
        self.to_upstream += _BEGIN
        self.cycles.append(b"")
        self.to_upstream += message
        self.wrapping = True
        if message[0] == _Q:
            self.cycles.append(None)
        else:
            # An extended-protocol sequence: its own messages go on up to its Sync.
            self.client_partial = True
            self.wrap_cycle_open = True
        self.txn_bytes += len(message)
        if self.txn_bytes > self.limits.transaction_bytes:
            self.violation = "transaction_size"

    def _unwrap(self, status: bytes) -> None:
        """The client's wrapped statement has ended with *status*: commit or roll back."""
        self.wrap_ending = True
        if self.dropping:
            self.dropping = False
            self._inject(_IDLE_READY)
        elif self.violation is not None:
            self.stats.violation(self.violation)
            self._inject(self._answer(self.violation))
        elif status != b"T":
            self._inject(_IDLE_READY)  # the statement failed: its error is already sent
        elif self.occ_conflict_rate > 0 and self.rng.random() < self.occ_conflict_rate:
            self.stats.add("occ_conflicts")
            self._inject(self._answer("occ"))
        else:
            self._reset_transaction()
            self.to_upstream += _COMMIT_QUERY
            self.cycles.append(_IDLE_READY)
            self.committing = True

    def _wrap_ended(self) -> None:
        self.wrapping = self.wrap_ending = self.committing = False
        held, self.held = self.held, []
        for message in held:
            self.from_client(message)

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

    def from_upstream(self, message: bytes) -> None:
        """Handle one whole upstream message: forward it, rewrite it, or swallow it."""
        out = self.to_client
        kind = message[0]
        if kind == _Z:
            self._upstream_ready(message, out)
            return
        if self.cycles and self.cycles[0] is not None:
            # A reply to the relay's own statement: only a failed COMMIT of a wrapped
            # write concerns the client.
            if self.committing and kind == _E:
                out += self._rename_conflict(message)
            return
        if self.dropping:
            return  # the rest of a cycle whose statement was refused
        if kind == _C:
            rows = protocol.modified_rows(message)
            if protocol.command_tag(message) == "COPY" and not self.copy_in:
                rows = 0  # COPY TO reads rows, it does not write them
            self.copy_in = False
            self.txn_rows += rows
            if self.txn_rows > self.limits.transaction_rows and self.violation is None:
                self.violation = "transaction_rows"
            if self.violation is not None and self.status != b"I":
                # Inside a transaction block the statement that crossed the limit fails in
                # place of its CommandComplete, and the transaction is rolled back when the
                # cycle ends.
                self.stats.violation(self.violation)
                refusal = self.limits.refusal(self.violation)
                message = protocol.error_response(refusal.code, refusal.message)
                self.violation = None
                self.dropping = True
        elif kind == _G:
            self.copy_in = True
        elif kind == _E:
            message = self._rename_conflict(message)
        out += message

    def _rename_conflict(self, message: bytes) -> bytes:
        """PostgreSQL's serialization failures and deadlocks, as DSQL's OC000 conflict."""
        if protocol.error_fields(message).get("C") not in _CONFLICT_CODES:
            return message
        self.stats.add("occ_conflicts")
        refusal = self.limits.refusal("occ")
        return protocol.replace_error_message(message, code=refusal.code, text=refusal.message)

    def _upstream_ready(self, message: bytes, out: bytearray) -> None:
        entry = self.cycles.popleft() if self.cycles else None
        status = protocol.ready_status(message)
        if entry is not None:
            # The end of the relay's own cycle: a ROLLBACK or COMMIT (counted as the end of
            # the client's transaction), or a hidden BEGIN or Sync (answered with nothing).
            out += entry
            self.status = status
            if entry:
                self.stats.add("transactions")
            if self.wrap_ending:
                self._wrap_ended()
            return
        if self.wrapping:
            self._unwrap(status)
            return
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
        if status == b"I":
            if self.txn_started is not None:
                self.stats.add("transactions")
            self._reset_transaction()
        out += message
