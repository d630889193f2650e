"""Logic written once, performed by a sync or an async front.

A procedure that needs I/O (open a connection with retries, check a kept connection out, give
it back) is written once as a generator that yields each I/O step as a zero-argument callable
and receives its result (or, thrown in, its exception) back, in the sans-I/O manner of h11.
Every exception is thrown in, ``KeyboardInterrupt`` and asyncio's cancellation included, as
plain code would see it raised at the call or ``await``: the procedure's ``finally`` blocks
and context exits run, and may yield steps of their own (a rollback, a checkin).
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

import types

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
    try:
        _perform(steps, False).send(None)  # not awaiting: runs to its end without yielding
    except StopIteration as done:
        return done.value
    raise AssertionError("unreachable: _perform yields only what it awaits")


async def run_async(steps: Generator[Step, Any, T]) -> T:
    """Perform every step of *steps* by calling it and awaiting what it returns."""
    return await _perform_awaitable(steps, True)


def _perform(steps: Generator[Step, Any, T], awaiting: bool) -> Generator[Any, Any, T]:
    """The loop of both fronts: call each step, send its result (or throw its exception)
    into *steps*, until *steps* returns. With *awaiting*, what a step returns is awaited by
    delegating to its ``__await__``, so the event loop sees the awaited step's own yields."""
    result: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = steps.send(result) if error is None else steps.throw(error)
        except StopIteration as done:
            return done.value
        try:
            result, error = step(), None
            if awaiting:
                result = yield from result.__await__()
        except BaseException as exc:
            result, error = None, exc


# types.coroutine marks a generator function awaitable in place (as documented) and returns
# it: one function, sent to by run and awaited by run_async (no wrapper object per run).
_perform_awaitable = types.coroutine(_perform)
