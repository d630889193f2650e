"""Checks of arguments, shared by plans, policies, pools and engines.

Each raises :class:`~warmdb.ConfigurationError` naming the parameter, as psycopg_pool does,
so a bad argument fails where it is given rather than at the first connect.
"""

from __future__ import annotations

from warmdb.errors import ConfigurationError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

__all__ = ["arguments_of", "check_count", "check_seconds", "did_you_mean"]


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


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` naming the closest of *choices* to *word*, or ``""``."""
    import difflib  # only on the error path: its import costs a cold start about 1 ms

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def arguments_of(
    function: Callable[..., object], *args: object, **kwargs: object
) -> dict[str, Any]:
    """The arguments of a call of *function* by parameter name, its defaults filled in and
    its ``**kwargs`` parameter as one dict: how an async twin that takes ``**kwargs`` (as
    SQLAlchemy's ``create_async_engine`` does) gets the named arguments of its sync
    original, whose signature lists and documents them once.

    :raises TypeError: the arguments do not fit *function*'s signature.
    """
    import inspect  # only where a twin is called, at set-up time

    bound = inspect.signature(function).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)
