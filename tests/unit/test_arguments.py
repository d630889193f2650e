"""keyword_arguments_of: async twins take their sync original's keyword arguments."""

from __future__ import annotations

import asyncio

import pytest

import warmdb
from warmdb._arguments import keyword_arguments_of


def with_kwargs(a, *, x=1, y=None, **kw):  # pragma: no cover - only its signature is read
    return a


def without_kwargs(a, *args, x=1):  # pragma: no cover - only its signature is read
    return a


def test_defaults_filled_and_the_rest_under_the_kwargs_name():
    assert keyword_arguments_of(with_kwargs, {"y": 3, "z": 4}) == {"x": 1, "y": 3, "kw": {"z": 4}}
    assert keyword_arguments_of(with_kwargs, {}) == {"x": 1, "y": None, "kw": {}}
    # In the order of the signature, whatever the order of the call.
    assert list(keyword_arguments_of(with_kwargs, {"y": 2, "x": 5})) == ["x", "y", "kw"]


def test_an_unknown_keyword_is_a_type_error_without_kwargs():
    assert keyword_arguments_of(without_kwargs, {"x": 2}) == {"x": 2}
    with pytest.raises(
        TypeError, match=r"without_kwargs\(\) got an unexpected keyword argument 'q'"
    ):
        keyword_arguments_of(without_kwargs, {"q": 1})


def test_async_twins_refuse_a_misspelled_keyword_like_their_originals():
    async def fn(conn, attempt):  # pragma: no cover - never called
        return None

    with pytest.raises(TypeError, match="'retri'"):
        asyncio.run(warmdb.run_transaction_async(object(), fn, retri=False))
    with pytest.raises(TypeError, match="'batch_row'"):
        asyncio.run(warmdb.write_batches_async(object(), "INSERT", [], batch_row=5))
