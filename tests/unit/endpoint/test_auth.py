"""Bearer tokens and the TokenReview cache (keyed by the token's hash, expiring)."""

from __future__ import annotations

import hashlib

from kurable.endpoint._auth import Identity, TokenCache, bearer_token, token_key


def test_bearer_token_reads_the_scheme_case_insensitively() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None


def test_the_cache_keeps_a_hash_of_the_token_never_the_token() -> None:
    cache = TokenCache(ttl=10)
    token = "secret-token"
    cache.put(token_key(token), Identity("alice"), now=0)
    stored = repr(cache._entries)
    assert token not in stored
    assert hashlib.sha256(token.encode()).hexdigest() in stored


def test_an_answer_expires_after_its_ttl() -> None:
    cache = TokenCache(ttl=10)
    cache.put("k", Identity("alice"), now=100)
    assert cache.get("k", now=109.9) == (True, Identity("alice"))
    assert cache.get("k", now=110) == (False, None)


def test_a_refusal_is_cached_too_and_the_oldest_entries_go_first() -> None:
    cache = TokenCache(ttl=10, size=2)
    cache.put("a", None, now=0)
    cache.put("b", Identity("b"), now=0)
    cache.put("c", Identity("c"), now=0)
    assert cache.get("a", now=1) == (False, None)
    assert cache.get("b", now=1) == (True, Identity("b"))


def test_ttl_zero_caches_nothing() -> None:
    cache = TokenCache(ttl=0)
    cache.put("k", Identity("alice"), now=0)
    assert cache.get("k", now=0) == (False, None)


def test_an_allowed_decision_is_reused_only_for_the_same_attributes_and_expires() -> None:
    from kurable.endpoint._access import command_entity
    from kurable.endpoint._auth import AccessCache, access_key

    cache = AccessCache(ttl=10)
    alice = Identity("u", "uid-1", ("g",), {"scope": ["a"]})
    key = access_key(alice, command_entity("shop", "alice"))
    cache.allow(key, now=100)
    assert cache.allowed(key, now=109.9)
    assert not cache.allowed(key, now=110)
    cache.allow(key, now=200)
    others = [
        access_key(alice, command_entity("shop", "bob")),
        access_key(alice, command_entity("shelf", "alice")),
        access_key(
            Identity("u", "uid-1", ("g", "h"), {"scope": ["a"]}), command_entity("shop", "alice")
        ),
        access_key(
            Identity("u", "uid-1", ("g",), {"scope": ["b"]}), command_entity("shop", "alice")
        ),
        access_key(
            Identity("u", "uid-2", ("g",), {"scope": ["a"]}), command_entity("shop", "alice")
        ),
    ]
    assert cache.allowed(key, now=201)
    assert not any(cache.allowed(other, now=201) for other in others)


def test_an_access_cache_with_no_ttl_keeps_nothing() -> None:
    from kurable.endpoint._access import read_entity
    from kurable.endpoint._auth import AccessCache, access_key

    cache = AccessCache(ttl=0)
    key = access_key(Identity("u"), read_entity("ns", "e"))
    cache.allow(key, now=0)
    assert not cache.allowed(key, now=0)
