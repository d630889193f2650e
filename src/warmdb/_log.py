"""Loggers that cost nothing until logging is in use.

Importing :mod:`logging` adds about 5 ms to a cold start (measured with ``python -X importtime``
after ``import psycopg2``, which does not import it). A record logged before anything imported
:mod:`logging` could reach no handler below WARNING: no handler or filter can exist yet, and the
last-resort handler prints only WARNING and above. So DEBUG and INFO calls are dropped while
:mod:`logging` is absent, and warnings import it. Once the application imports :mod:`logging`,
every call behaves exactly as :func:`logging.getLogger(name) <logging.getLogger>`'s would.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging


class LazyLogger:
    """A stand-in for ``logging.getLogger(name)`` that imports :mod:`logging` only when needed."""

    __slots__ = ("_logger", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._logger: logging.Logger | None = None

    def _get(self) -> logging.Logger:
        if self._logger is None:
            import logging

            self._logger = logging.getLogger(self.name)
        return self._logger

    def debug(self, msg: str, *args: object) -> None:
        """Log at DEBUG, lazily formatted, if :mod:`logging` is in use."""
        if "logging" in sys.modules:
            self._get().debug(msg, *args)

    def info(self, msg: str, *args: object) -> None:
        """Log at INFO, lazily formatted, if :mod:`logging` is in use."""
        if "logging" in sys.modules:
            self._get().info(msg, *args)

    def warning(self, msg: str, *args: object) -> None:
        """Log at WARNING (importing :mod:`logging` if needed)."""
        self._get().warning(msg, *args)


def get_logger(name: str) -> LazyLogger:
    """Return the lazy logger for module *name* (use ``__name__``)."""
    return LazyLogger(name)
