"""Small slotted records whose fields are written once, as annotations.

::

    class RetryEvent(Record):
        _shown = "attempt={attempt}, delay={delay:.3f}"

        attempt: int
        delay: float

    RetryEvent(attempt=1, delay=0.25)   # keyword-only; every field required
    # RetryEvent(attempt=1, delay=0.250)

The class's annotated public names are its fields: they become its ``__slots__`` (so a misspelled
attribute is still an error), the keyword arguments its ``__init__`` requires, and what type
checkers see, through ``dataclass_transform``, so a constructor call is checked as a
dataclass's would be. ``_shown`` is the part of the repr between the parentheses, a
:meth:`str.format` template over the fields, so each record shows what it chooses in the
format it chooses (``{delay:.3f}``, ``{host!r}``).

Neither :mod:`dataclasses` nor :mod:`typing` is imported: the records of core modules are
built at import time, and cold start matters.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar

    from typing_extensions import dataclass_transform
else:

    def dataclass_transform(**_options: object) -> object:
        """For type checkers only: at run time, the class as it is."""
        return lambda cls: cls


__all__ = ["Record"]


class _RecordType(type):
    """Makes a record class's annotated public names its fields and its ``__slots__``."""

    def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> _RecordType:
        # With postponed evaluation the annotations are strings in the class namespace:
        # their names, in order, are all that is read.
        own = tuple(key for key in namespace.get("__annotations__", ()) if key[0] != "_")
        inherited = tuple(name for base in bases for name in getattr(base, "_fields", ()))
        namespace["__slots__"] = own
        namespace["_fields"] = (*inherited, *own)
        return super().__new__(mcs, name, bases, namespace)


@dataclass_transform(kw_only_default=True)
class Record(metaclass=_RecordType):
    """A record: its annotations are its fields, set by keyword, all required.

    :cvar _fields: the field names, in order (set from the annotations).
    :cvar _shown: the repr's content, a :meth:`str.format` template over the fields.
    """

    _fields: ClassVar[tuple[str, ...]] = ()
    _shown: ClassVar[str] = ""

    def __init__(self, **values: Any) -> None:
        for name in self._fields:
            try:
                setattr(self, name, values.pop(name))
            except KeyError:
                raise TypeError(
                    f"{type(self).__name__}() missing keyword argument {name!r}"
                ) from None
        if values:
            raise TypeError(
                f"{type(self).__name__}() got unexpected keyword argument(s) "
                f"{', '.join(map(repr, values))}"
            )

    def __repr__(self) -> str:
        shown = self._shown.format_map({name: getattr(self, name) for name in self._fields})
        return f"{type(self).__name__}({shown})"
