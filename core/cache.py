"""The Redis read cache for resources, kept coherent with PostgreSQL.

Key ``resource:{id}`` holds the record as plain JSON (TTL 60 s by default), filled by readers on
a miss. After a write the worker *invalidates* it, as the architecture document asks, but with a
version fence so the race a plain delete-on-write loses cannot happen:

1. the worker commits version v+1, then (one Lua script) raises the fence
   ``resource-fence:{id}`` to v+1 and deletes the entry;
2. a reader that loaded version v from PostgreSQL before the commit tries to cache it after
   step 1: its fill is a compare-and-set (second script) that refuses any version below the
   fence or below what is cached. So no reader can put an older version back.

The fence outlives the entry (10x TTL, at least an hour), so even a reader stalled past the
entry's TTL cannot bring an old row back.

Entries and fences live in disjoint key spaces (``resource:`` and ``resource-fence:``): a resource
id may contain ``:``, and with a shared prefix the id ``X:version`` would name another device's
fence (reading it failed with a 500; writing it deleted that fence).
"""

from __future__ import annotations

import json
from typing import cast

import redis

from core.resources import ResourceRecord

KEY_PREFIX = "resource:"
FENCE_PREFIX = "resource-fence:"  # never a prefix of, nor prefixed by, KEY_PREFIX

# KEYS[1] entry, KEYS[2] fence; ARGV: json, version, ttl seconds
_FILL_IF_CURRENT = """
local version = tonumber(ARGV[2])
local fence = tonumber(redis.call('GET', KEYS[2]) or '0')
if version < fence then return 0 end
local current = redis.call('GET', KEYS[1])
if current then
  local ok, doc = pcall(cjson.decode, current)
  if ok and type(doc) == 'table' and tonumber(doc['version']) and tonumber(doc['version']) >= version then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[3]))
return 1
"""

# Fence out older versions and drop the entries: KEYS entry1, fence1, entry2, fence2, ...; ARGV
# fence ttl seconds, then each resource's version. One command for a whole batch (a pipeline of
# scripts made redis-py ask SCRIPT EXISTS first, one more round trip per batch).
_INVALIDATE_MANY = """
local ttl = tonumber(ARGV[1])
for i = 1, #KEYS / 2 do
  local version = tonumber(ARGV[i + 1])
  local fence = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
  if version > fence then fence = version end
  redis.call('SET', KEYS[2 * i], tostring(fence), 'EX', ttl)
  redis.call('DEL', KEYS[2 * i - 1])
end
return #KEYS / 2
"""
INVALIDATE_CHUNK = 500  # resources per script call: Redis runs nothing else while a script runs


def cache_key(resource_id: str) -> str:
    return KEY_PREFIX + resource_id


def fence_key(resource_id: str) -> str:
    return FENCE_PREFIX + resource_id


class ResourceCache:
    """Reads, versioned fills and invalidations of the resource cache."""

    def __init__(self, client: redis.Redis, ttl_seconds: int = 60) -> None:
        self.client = client
        self.ttl = ttl_seconds
        self.fence_ttl = max(3600, 10 * ttl_seconds)
        self._fill = client.register_script(_FILL_IF_CURRENT)
        self._invalidate_many = client.register_script(_INVALIDATE_MANY)

    def get_raw(self, resource_id: str) -> bytes | None:
        """The cached record's JSON exactly as stored, or None on a miss: a hit is answered with
        these bytes as they are (no parse and re-serialize; only :meth:`fill` writes entries, and
        it writes the record's JSON). Raises ``redis.RedisError``."""
        # bytes: the app's clients do not set decode_responses (which redis-py's types cannot tell)
        return cast("bytes | None", self.client.get(cache_key(resource_id)))

    def fill(self, record: ResourceRecord) -> bool:
        """Cache ``record`` after a miss, unless the worker has since written a newer version (or
        a newer one is cached). Returns whether it was stored. Raises ``redis.RedisError``."""
        key = cache_key(record.id)
        value = json.dumps(record.to_json(), separators=(",", ":"))
        return bool(self._fill(keys=[key, fence_key(record.id)], args=[value, record.version, self.ttl]))

    def invalidate(self, record: ResourceRecord) -> None:
        """After the worker committed ``record``: fence out older versions and drop the entry."""
        self.invalidate_many([record])

    def invalidate_many(self, records: list[ResourceRecord]) -> None:
        """:meth:`invalidate` for many records, one script call (one round trip) per 500.

        A full Redis (``noeviction``: docs/operations.md) refuses the whole script, the entries'
        ``DEL`` included, and readers would be served the old version until its TTL. ``DEL`` alone
        is allowed when Redis is out of memory, and so are no fills (a ``SET``): so then the
        entries are deleted without their fences, and readers go to PostgreSQL."""
        for start in range(0, len(records), INVALIDATE_CHUNK):
            chunk = records[start : start + INVALIDATE_CHUNK]
            keys = [key for record in chunk for key in (cache_key(record.id), fence_key(record.id))]
            try:
                self._invalidate_many(keys=keys, args=[self.fence_ttl, *(record.version for record in chunk)])
            except redis.exceptions.OutOfMemoryError:
                self.client.delete(*(cache_key(record.id) for record in chunk))
                raise
