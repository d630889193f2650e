"""Logic written once, performed by a sync or an async front.

A procedure that needs I/O (open a connection with retries, check a kept connection out, give
it back) is written once as a generator that yields each I/O step as a zero-argument callable
and receives its result (or, thrown in, its exception) back, in the sans-I/O manner of h11.
:func:`run` performs the steps with blocking calls; :func:`run_async` awaits them. A sync
front yields sync callables, an async front callables that return awaitables; everything
between two steps is shared.

::

    def steps(adapter, conn):
        try:
            yield partial(adapter.ping, conn)
        except Exception:
            return "ping-failed"
        return None

    run(steps(sync_adapter, conn))                 # blocking
    await run_async(steps(async_adapter, conn))    # awaited
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Generator
    from typing import Any, TypeVar

    T = TypeVar("T")
    #: what a procedure yields: one I/O step
    Step = Callable[[], Any]

__all__ = ["run", "run_async"]


def run(steps: Generator[Step, Any, T]) -> T:
    """Perform every step of *steps* by calling it; return the procedure's result."""
    result: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = steps.send(result) if error is None else steps.throw(error)
        except StopIteration as done:
            return done.value
        try:
            result, error = step(), None
        except Exception as exc:
            result, error = None, exc


async def run_async(steps: Generator[Step, Any, T]) -> T:
    """Perform every step of *steps* by calling it and awaiting what it returns."""
    result: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = steps.send(result) if error is None else steps.throw(error)
        except StopIteration as done:
            return done.value
        try:
            result, error = await step(), None
        except Exception as exc:
            result, error = None, exc
