"""core.cache against real Redis: batched invalidation keeps the fence rules of the single one."""

from __future__ import annotations

import datetime as dt

from core.cache import INVALIDATE_CHUNK, ResourceCache, cache_key, fence_key
from core.resources import ResourceRecord

NOW = dt.datetime(2026, 12, 3, tzinfo=dt.UTC)


def _record(resource_id: str, version: int) -> ResourceRecord:
    return ResourceRecord(id=resource_id, payload={"v": version}, version=version, updated_at=NOW)


def test_invalidate_many_fences_and_drops_every_entry_across_chunks(redis_client, unique):
    cache = ResourceCache(redis_client, ttl_seconds=60)
    ids = [f"cache-{unique}-{i}" for i in range(2 * INVALIDATE_CHUNK + 1)]  # three script calls
    try:
        for resource_id in ids:
            redis_client.set(cache_key(resource_id), "stale")
        redis_client.set(fence_key(ids[0]), 9)  # a fence already ahead never moves back
        cache.invalidate_many([_record(resource_id, 3) for resource_id in ids])
        assert redis_client.exists(*(cache_key(resource_id) for resource_id in ids)) == 0
        assert int(redis_client.get(fence_key(ids[0]))) == 9
        assert {int(redis_client.get(fence_key(resource_id))) for resource_id in ids[1:]} == {3}
        assert 0 < redis_client.ttl(fence_key(ids[-1])) <= cache.fence_ttl
        # a reader that loaded version 2 before the write cannot put it back
        assert cache.fill(_record(ids[-1], 2)) is False
        assert cache.fill(_record(ids[-1], 3)) is True
    finally:
        redis_client.delete(*(cache_key(i) for i in ids), *(fence_key(i) for i in ids))


def test_invalidate_many_of_nothing_sends_nothing(redis_client):
    ResourceCache(redis_client).invalidate_many([])
