"""The token cache: reuse while fresh, renew before expiry, keyed by what changes a token."""

from __future__ import annotations

import threading

from tests.conftest import FROZEN_TIME
from warmdb.auth.credentials import Credentials
from warmdb.auth.tokens import TokenCache, TokenSpec, refresh_margin

CREDS = Credentials("AKIAAAAAAAAAAAAAAAAA", "secret")


def spec(**overrides) -> TokenSpec:
    fields = {
        "kind": "dsql",
        "host": "h.dsql.us-east-1.on.aws",
        "port": 5432,
        "region": "us-east-1",
        "user": "admin",
        "expires_in": 900,
    }
    return TokenSpec(**{**fields, **overrides})


class Clock:
    def __init__(self) -> None:
        self.now = FROZEN_TIME

    def __call__(self) -> float:
        return self.now


def test_reused_until_the_margin_then_renewed():
    clock = Clock()
    cache = TokenCache(clock)
    first = cache.get(spec(), CREDS)
    assert refresh_margin(900) == 120
    clock.now += 900 - 120 - 1
    assert cache.get(spec(), CREDS) == first
    clock.now += 1
    renewed = cache.get(spec(), CREDS)
    assert renewed != first
    assert "X-Amz-Date=20261121T055350Z" in renewed


def test_short_lifetimes_use_a_quarter_margin():
    clock = Clock()
    cache = TokenCache(clock)
    first = cache.get(spec(expires_in=8), CREDS)
    clock.now += 5.9
    assert cache.get(spec(expires_in=8), CREDS) == first
    clock.now += 0.1
    assert cache.get(spec(expires_in=8), CREDS) != first


def test_lifetime_counts_from_the_whole_second_the_token_is_dated():
    clock = Clock()
    clock.now = FROZEN_TIME + 0.9  # signed late in a second, dated at its start
    cache = TokenCache(clock)
    first = cache.get(spec(expires_in=8), CREDS)
    clock.now = FROZEN_TIME + 6.5  # within 6 s of signing, but not of the date
    assert cache.get(spec(expires_in=8), CREDS) != first


def test_discard_forgets_only_that_spec():
    cache = TokenCache(Clock())
    first = cache.get(spec(), CREDS)
    other = cache.get(spec(user="app"), CREDS)
    cache.discard(spec())
    assert len(cache) == 1
    assert cache.get(spec(user="app"), CREDS) == other
    # Same clock, so the new token has the same content; what matters is it was re-signed.
    assert cache.get(spec(), CREDS) == first
    assert len(cache) == 2


def test_clock_going_backwards_renews():
    clock = Clock()
    cache = TokenCache(clock)
    first = cache.get(spec(), CREDS)
    clock.now -= 60
    assert cache.get(spec(), CREDS) != first


def test_everything_that_changes_a_token_is_in_the_key():
    cache = TokenCache(Clock())
    base = cache.get(spec(), CREDS)
    variants = [
        cache.get(spec(user="other"), CREDS),
        cache.get(spec(host="x.dsql.us-east-1.on.aws"), CREDS),
        cache.get(spec(region="us-west-2"), CREDS),
        cache.get(spec(expires_in=60), CREDS),
        cache.get(spec(kind="rds", user="admin"), CREDS),
        cache.get(spec(), Credentials("AKIAAAAAAAAAAAAAAAAA", "other-secret")),
        cache.get(spec(), Credentials("AKIAAAAAAAAAAAAAAAAA", "secret", "session")),
    ]
    assert len({base, *variants}) == len(variants) + 1
    assert cache.get(spec(), CREDS) == base


def test_stale_entries_are_pruned():
    clock = Clock()
    cache = TokenCache(clock)
    for n in range(5):
        cache.get(spec(), Credentials(f"AKIA{n:016d}", "s"))
    assert len(cache) == 5
    clock.now += 900
    cache.get(spec(), CREDS)
    assert len(cache) == 1


def test_thread_safe_single_token_per_key():
    cache = TokenCache(Clock())
    results: list[str] = []
    barrier = threading.Barrier(8)

    def worker():
        barrier.wait()
        for _ in range(200):
            results.append(cache.get(spec(), CREDS))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1


def test_spec_action_and_repr():
    assert spec().action == "DbConnectAdmin"
    assert spec(user="app").action == "DbConnect"
    assert spec(kind="rds").action == "connect"
    assert "h.dsql.us-east-1.on.aws" in repr(spec())
