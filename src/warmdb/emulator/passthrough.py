"""The relay for engines without DSQL's transaction rules (RDS PostgreSQL): forward, count.

It has the interface the session needs from :class:`warmdb.emulator.relay.Relay`
(``to_client``, ``to_upstream``, ``from_client``, ``from_upstream``, ``cycles``) and changes
no message: an RDS instance is a plain PostgreSQL server. It counts the round trips still
owed by the upstream, so the session knows whether a statement is in flight (to cancel it
when the connection is cut, and to tell an idle connection from a busy one).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from warmdb.emulator.stats import Stats

__all__ = ["PassThrough"]

_Q, _S, _E, _Z = (ord(c) for c in "QSEZ")


class PassThrough:
    """Forwards every message unchanged and counts cycles and statistics.

    :param stats: the server's counters (``queries``, ``transactions``).

    :ivar to_client: bytes waiting to be sent to the client.
    :ivar to_upstream: bytes waiting to be sent to the upstream.
    :ivar cycles: ReadyForQuery messages the upstream still owes (Query and Sync sent).
    :ivar held_bytes: client messages held back; always 0 (the DSQL relay's may not be).
    """

    def __init__(self, *, stats: Stats) -> None:
        self.stats = stats
        self.to_client = bytearray()
        self.to_upstream = bytearray()
        self.cycles = 0
        self.held_bytes = 0

    def from_client(self, message: bytes) -> None:
        """Forward one whole client message."""
        kind = message[0]
        if kind in (_Q, _S):
            self.cycles += 1
        if kind in (_Q, _E):
            self.stats.add("queries")
        self.to_upstream += message

    def from_upstream(self, message: bytes) -> None:
        """Forward one whole upstream message."""
        if message[0] == _Z:
            self.cycles = max(0, self.cycles - 1)
            # Idle after a cycle: a transaction, explicit or implicit, has ended.
            if message[5:6] == b"I":
                self.stats.add("transactions")
        self.to_client += message
