"""A one-line progress bar on stderr, drawn only when stderr is a terminal.

Hand-written (a dozen lines) rather than a dependency: the bench runs for a minute or two and
only needs "how far, doing what". When stderr is not a terminal (CI logs, pipes) nothing is
drawn, so logs stay clean.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TextIO

__all__ = ["Progress", "bar"]

_WIDTH = 28


def bar(done: int, total: int, label: str, *, width: int = _WIDTH) -> str:
    """The text of the bar: ``[#####.....]  12/40 psycopg2 warm``."""
    total = max(total, 1)
    done = min(max(done, 0), total)
    filled = width * done // total
    return f"[{'#' * filled}{'.' * (width - filled)}] {done:>{len(str(total))}}/{total} {label}"


class Progress:
    """Counts steps and redraws the bar in place; a no-op when *stream* is not a terminal.

    :param total: the number of steps the run will take.
    :param stream: where to draw, ``sys.stderr`` by default.
    :param enabled: force drawing on or off; by default, on when *stream* is a terminal.
    """

    def __init__(
        self, total: int, *, stream: TextIO | None = None, enabled: bool | None = None
    ) -> None:
        self.total = total
        self.done = 0
        self.label = ""
        self._stream = stream if stream is not None else sys.stderr
        isatty = getattr(self._stream, "isatty", None)
        self.enabled = enabled if enabled is not None else bool(isatty and isatty())
        self._drawn = 0

    def step(self, label: str | None = None, amount: int = 1) -> None:
        """Count *amount* steps done (and show *label* from now on)."""
        if label is not None:
            self.label = label
        self.done += amount
        self._draw()

    def show(self, label: str) -> None:
        """Show *label* without counting a step (a long step starts)."""
        self.label = label
        self._draw()

    def _draw(self) -> None:
        if not self.enabled:
            return
        text = bar(self.done, self.total, self.label)
        pad = " " * max(self._drawn - len(text), 0)
        self._stream.write("\r" + text + pad)
        self._stream.flush()
        self._drawn = len(text)

    def close(self) -> None:
        """Erase the bar, leaving the terminal as it was."""
        if self.enabled and self._drawn:
            self._stream.write("\r" + " " * self._drawn + "\r")
            self._stream.flush()
        self._drawn = 0
