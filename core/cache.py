"""The Redis read cache for resources, kept coherent with PostgreSQL.

Key ``resource:{id}`` holds the record as plain JSON (TTL 60 s by default). Every write is a
compare-and-set on ``version`` in one Lua script, so an older version can never replace a newer
one: not when a reader who loaded the old row before a worker's commit caches it after the
worker's write-through (the race a plain delete-on-write loses), and not when two writers
overlap. A fence key ``resource:{id}:version`` remembers the newest version a worker wrote for
longer than the TTL, so a slow reader cannot bring back an old row after the entry expired.
"""

from __future__ import annotations

import json
import logging

import redis

from core.resources import ResourceRecord

log = logging.getLogger(__name__)

KEY_PREFIX = "resource:"
FENCE_SUFFIX = ":version"

# KEYS[1] entry, KEYS[2] fence; ARGV: json, version, ttl seconds, fence ttl seconds, is_writer (1/0)
_SET_IF_NEWER = """
local version = tonumber(ARGV[2])
local fence = tonumber(redis.call('GET', KEYS[2]) or '0')
if version < fence then return 0 end
local current = redis.call('GET', KEYS[1])
if current then
  local ok, doc = pcall(cjson.decode, current)
  if ok and type(doc) == 'table' and tonumber(doc['version']) and tonumber(doc['version']) > version then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[3]))
if ARGV[5] == '1' and version > fence then
  redis.call('SET', KEYS[2], ARGV[2], 'EX', tonumber(ARGV[4]))
end
return 1
"""


def cache_key(resource_id: str) -> str:
    return KEY_PREFIX + resource_id


class ResourceCache:
    """Versioned writes to the resource cache. Reads go through flask-caching in the API."""

    def __init__(self, client: redis.Redis, ttl_seconds: int = 60) -> None:
        self.client = client
        self.ttl = ttl_seconds
        self.fence_ttl = max(3600, 10 * ttl_seconds)
        self._script = client.register_script(_SET_IF_NEWER)

    def store(self, record: ResourceRecord, *, writer: bool) -> bool:
        """Cache ``record`` unless a newer version is cached or was written. ``writer=True`` for the
        worker after its commit (advances the fence); readers filling a miss pass ``False``.
        Returns whether the entry was written. Raises ``redis.RedisError``."""
        key = cache_key(record.id)
        value = json.dumps(record.to_json(), separators=(",", ":"))
        written = self._script(
            keys=[key, key + FENCE_SUFFIX],
            args=[value, record.version, self.ttl, self.fence_ttl, "1" if writer else "0"],
        )
        return bool(written)
