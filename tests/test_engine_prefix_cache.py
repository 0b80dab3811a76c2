"""The prefix cache's bookkeeping: found by text, least recently used dropped past the byte bound."""

from __future__ import annotations

from routesh.engine.prefix_cache import CachedPrefix, PrefixCache


def entry(nbytes: int) -> CachedPrefix:
    return CachedPrefix(ids=(1, 2, 3), cache=object(), nbytes=nbytes)


def test_least_recently_used_goes_first_when_the_bytes_run_out():
    cache = PrefixCache(max_bytes=100)
    cache.put("a", entry(40))
    cache.put("b", entry(40))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", entry(40))  # 120 > 100: b goes
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    assert cache.bytes == 80 and len(cache) == 2


def test_an_entry_larger_than_the_bound_is_not_kept_and_replacing_counts_once():
    cache = PrefixCache(max_bytes=100)
    cache.put("a", entry(30))
    cache.put("huge", entry(500))
    assert cache.get("huge") is None and cache.get("a") is not None
    cache.put("a", entry(50))
    assert cache.bytes == 50 and len(cache) == 1
    cache.clear()
    assert cache.bytes == 0 and cache.get("a") is None
