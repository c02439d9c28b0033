from gateway.sim.kvcache import PrefixCache, block_hashes


def test_hashes_are_chained_over_full_blocks_only() -> None:
    a = block_hashes(list(range(40)), 16, None)
    assert len(a) == 2
    b = block_hashes([99, *range(1, 40)], 16, None)
    assert a[0] != b[0] and a[1] != b[1], "a changed first block changes every later hash"
    assert block_hashes(list(range(40)), 16, "tenant") != a


def test_match_counts_leading_blocks_and_lru_evicts_at_capacity() -> None:
    cache = PrefixCache(4)
    first = block_hashes(list(range(64)), 16, None)
    cache.insert(first)
    assert cache.match(first) == 4 and cache.usage == 1.0
    other = block_hashes(list(range(100, 132)), 16, None)
    cache.insert(other)
    assert len(cache) == 4 and cache.evictions == 2
    assert cache.match(first) == 0, "the oldest blocks (the prefix head) were evicted"
