"""Driver variants of a run, from the registry: one per installed driver and kind (sync/async).

A variant is named after its driver, with ``-async`` added when the driver has both kinds
(``psycopg`` and ``psycopg-async``; ``asyncpg`` is async only and keeps its name). Everything
driver-specific comes from the driver's adapter (:mod:`warmdb.drivers`) and from warmdb's own
public functions in the driver module, found by their documented names.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from dataclasses import dataclass

from warmdb.drivers import REGISTRY, adapter_class, installed_drivers
from warmdb.errors import ConfigurationError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import ModuleType
    from typing import Any

    from warmdb.drivers import Adapter, DriverEntry

__all__ = ["Variant", "all_variants", "by_family", "select_variants"]


@dataclass(frozen=True)
class Variant:
    """One driver, sync or async.

    :ivar name: the variant's name in the report.
    :ivar entry: the driver's registry entry.
    :ivar is_async: whether its connect and queries are coroutines.
    """

    name: str
    entry: DriverEntry
    is_async: bool

    @property
    def family(self) -> str:
        return self.entry.family

    def adapter(self) -> Adapter:
        """A new adapter instance for this variant (imports the driver module)."""
        return adapter_class(self.entry.name, is_async=self.is_async)()

    def module(self) -> ModuleType:
        """warmdb's module for the driver (``warmdb.psycopg2``...)."""
        return importlib.import_module(self.entry.module)

    def _has_both(self) -> bool:
        return self.entry.sync is not None and self.entry.async_ is not None

    def front(self, what: str) -> Callable[..., Any]:
        """warmdb's public ``connect`` / ``warm`` / ``pool`` function for this variant.

        Async variants of drivers that have both kinds use the ``_async`` names
        (``warmdb.psycopg.warm_async``); async-only drivers use the plain names, and their
        pool function may be called ``create_pool`` after the driver's own.
        """
        module = self.module()
        names = [f"{what}_async"] if self.is_async and self._has_both() else [what]
        if what == "pool":
            names.append("create_pool")
        for name in names:
            function = getattr(module, name, None)
            if function is not None:
                return function
        raise ConfigurationError(f"{module.__name__} has no {' or '.join(names)}()")

    def pool_options(self, size: int) -> dict[str, Any]:
        """Keyword arguments for a pool of *size* connections that opens when entered."""
        options: dict[str, Any] = {"min_size": size, "max_size": size}
        if "open" in inspect.signature(self.front("pool")).parameters:
            # psycopg_pool opens in its constructor unless told otherwise; entering the pool
            # (with / async with) opens every pool the same way, inside the running loop.
            options["open"] = False
        return options

    def engine_url(self) -> str:
        """The SQLAlchemy URL naming this driver's dialect, for :mod:`warmdb.sqlalchemy`
        (``postgresql+psycopg2://``); the endpoint comes as keyword arguments.

        The plain dialect serves async engines too (SQLAlchemy picks psycopg's async side
        under ``create_async_engine``).
        """
        plain = [d for d in self.entry.dialects if not d.endswith("_async")]
        if not plain:
            raise ConfigurationError(f"no SQLAlchemy dialect is registered for {self.name}")
        return f"{plain[0]}://"

    @property
    def aurora_module(self) -> str:
        """aurora-dsql-python-connector's module for this driver (``aurora_dsql_psycopg2``)."""
        return f"aurora_dsql_{self.entry.name}"


def all_variants() -> list[Variant]:
    """Every variant of the installed drivers that warmdb has a module for, in registry order."""
    variants = []
    for entry in installed_drivers():
        if importlib.util.find_spec(entry.module) is None:
            continue  # registered ahead of its module (a driver being added)
        both = entry.sync is not None and entry.async_ is not None
        if entry.sync is not None:
            variants.append(Variant(entry.name, entry, is_async=False))
        if entry.async_ is not None:
            name = f"{entry.name}-async" if both else entry.name
            variants.append(Variant(name, entry, is_async=True))
    return variants


def select_variants(names: Sequence[str] | None) -> list[Variant]:
    """The installed variants named in *names* (a driver name selects all its variants).

    :raises ConfigurationError: a name that is neither a variant nor a registered driver, or
        one whose driver is not installed.
    """
    variants = all_variants()
    if not names:
        return variants
    known = {v.name for v in variants}
    chosen: list[Variant] = []
    for name in names:
        matches = [v for v in variants if name in (v.name, v.entry.name)]
        if not matches:
            if name in REGISTRY:
                extra = REGISTRY[name].extra
                raise ConfigurationError(
                    f"driver {name!r} is not installed: pip install 'warmdb[{extra}]'"
                )
            choices = ", ".join(sorted(known | set(REGISTRY)))
            raise ConfigurationError(f"unknown driver {name!r}: choose from {choices}")
        chosen.extend(v for v in matches if v not in chosen)
    return chosen


def by_family(variants: Sequence[Variant]) -> list[tuple[str, tuple[Variant, ...]]]:
    """*variants* grouped by database family (each family needs its own server), in order."""
    groups: dict[str, list[Variant]] = {}
    for variant in variants:
        groups.setdefault(variant.family, []).append(variant)
    return [(family, tuple(group)) for family, group in groups.items()]
