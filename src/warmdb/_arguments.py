"""Checks of numeric arguments, shared by policies, pools and engines.

Each raises :class:`~warmdb.ConfigurationError` naming the parameter, as psycopg_pool does,
so a bad argument fails where it is given rather than at the first connect.
"""

from __future__ import annotations

from warmdb.errors import ConfigurationError

__all__ = ["check_count", "check_seconds"]


def check_count(name: str, value: object, *, minimum: int) -> int:
    """Return *value* if it is an integer of at least *minimum* (``bool`` is not one)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{name} must be an integer >= {minimum}, not {value!r}")
    return value


def check_seconds(
    name: str, value: object, *, optional: bool = False, positive: bool = False
) -> float | None:
    """Return *value* as float seconds: finite, at least 0 (above 0 if *positive*).

    :param optional: ``None`` is allowed and returned as is.
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        expected = "a number of seconds or None" if optional else "a number of seconds"
        raise ConfigurationError(f"{name} must be {expected}, not {value!r}")
    in_range = value > 0 if positive else value >= 0  # also false for NaN
    if not in_range or value == float("inf"):
        bound = "> 0" if positive else ">= 0"
        raise ConfigurationError(f"{name} must be a finite number of seconds {bound}, not {value}")
    return float(value)
