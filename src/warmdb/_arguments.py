"""Checks of arguments, shared by plans, policies, pools and engines.

Each raises :class:`~warmdb.ConfigurationError` naming the parameter, as psycopg_pool does,
so a bad argument fails where it is given rather than at the first connect.
"""

from __future__ import annotations

from warmdb.errors import ConfigurationError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from typing import Any

__all__ = ["check_count", "check_seconds", "did_you_mean", "keyword_arguments_of"]


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


def keyword_arguments_of(
    function: Callable[..., object], options: Mapping[str, Any]
) -> dict[str, Any]:
    """*options* as the keyword-only arguments of *function*, its defaults filled in, and the
    rest under the name of its ``**kwargs`` parameter when it has one: how an async twin that
    takes ``**kwargs`` (as SQLAlchemy's ``create_async_engine`` does) gets the arguments of
    its sync original, whose signature lists, types and documents them once.

    Reads the function's ``__kwdefaults__`` and code flags (a microsecond; ``inspect`` would
    cost tens): every keyword-only parameter of *function* must have a default.

    :raises TypeError: an unknown keyword, when *function* takes no ``**kwargs``.
    """
    defaults = function.__kwdefaults__ or {}
    named = {**defaults, **{k: v for k, v in options.items() if k in defaults}}
    rest = {k: v for k, v in options.items() if k not in defaults}
    code = function.__code__
    if code.co_flags & _CO_VARKEYWORDS:
        position = code.co_argcount + code.co_kwonlyargcount
        position += bool(code.co_flags & _CO_VARARGS)
        named[code.co_varnames[position]] = rest
    elif rest:
        name = next(iter(rest))
        raise TypeError(f"{function.__name__}() got an unexpected keyword argument {name!r}")
    return named


# inspect.CO_VARARGS and CO_VARKEYWORDS, without importing inspect.
_CO_VARARGS = 0x04
_CO_VARKEYWORDS = 0x08
