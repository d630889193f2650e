"""warmdb._steps: one procedure, performed by blocking calls or awaited."""

from __future__ import annotations

import asyncio
from functools import partial

import pytest

from warmdb._steps import run, run_async


def _procedure(first, failing):
    """Yields *first*, then *failing*; returns what it saw."""
    seen = [(yield first)]
    try:
        yield failing
    except ValueError as exc:
        seen.append(f"caught {exc}")
    return seen


def _fail():
    raise ValueError("boom")


async def _fail_async():
    raise ValueError("boom")


async def _value_after_a_switch(value):
    await asyncio.sleep(0)  # really suspends: the event loop must see the step's yields
    return value


def test_run_sends_results_and_throws_errors():
    assert run(_procedure(partial(int, "7"), _fail)) == [7, "caught boom"]


def test_run_async_awaits_each_step():
    steps = _procedure(partial(_value_after_a_switch, 7), _fail_async)
    assert asyncio.run(run_async(steps)) == [7, "caught boom"]


def test_run_async_awaits_futures():
    async def main():
        future = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(future.set_result, 3)
        return await run_async(_procedure(lambda: future, _fail_async))

    assert asyncio.run(main()) == [3, "caught boom"]


def test_an_uncaught_error_propagates():
    def procedure():
        yield _fail

    with pytest.raises(ValueError, match="boom"):
        run(procedure())
    with pytest.raises(ValueError, match="boom"):
        asyncio.run(run_async(procedure()))


def test_interrupts_and_cancellation_are_thrown_in_and_cleanup_steps_run():
    cleaned = []

    def procedure(work, cleanup):
        try:
            yield work
        finally:
            yield cleanup  # as a ``finally`` with a call or an await in plain code

    def interrupt():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(procedure(interrupt, partial(cleaned.append, "sync")))

    async def cleanup():
        await asyncio.sleep(0)
        cleaned.append("async")

    async def main():
        task = asyncio.ensure_future(run_async(procedure(partial(asyncio.sleep, 10), cleanup)))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert cleaned == ["sync", "async"]
