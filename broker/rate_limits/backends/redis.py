"""The Redis backend: each operation one Lua script, so it is atomic without WATCH retries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

from broker.rate_limits.backend import RateLimiterBackend

# KEYS[1]; ARGV: amount, bound, ttl ms, direction (1: up to a maximum, -1: down to a minimum)
_STEP = """
local value = tonumber(redis.call('GET', KEYS[1]) or '0') + tonumber(ARGV[1]) * tonumber(ARGV[4])
if (tonumber(ARGV[4]) > 0 and value > tonumber(ARGV[2])) or (tonumber(ARGV[4]) < 0 and value < tonumber(ARGV[2])) then
  return 0
end
redis.call('SET', KEYS[1], value, 'PX', tonumber(ARGV[3]))
return 1
"""

# KEYS[1] the key to add to, KEYS[2..] the keys summed (KEYS[1] among them); ARGV: amount, maximum, ttl ms
_INCR_AND_SUM = """
local total = tonumber(ARGV[1])
for i = 2, #KEYS do total = total + tonumber(redis.call('GET', KEYS[i]) or '0') end
if total > tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], tonumber(redis.call('GET', KEYS[1]) or '0') + tonumber(ARGV[1]), 'PX', tonumber(ARGV[3]))
return 1
"""

# KEYS[1] the set, KEYS[2] who completed it; ARGV: member, parties, ttl ms
_ADD_MEMBER = """
local added = redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
if added == 1 and redis.call('SCARD', KEYS[1]) == tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', tonumber(ARGV[3]))
  return 1
end
if added == 0 and redis.call('GET', KEYS[2]) == ARGV[1] then return 1 end
return 0
"""


class RedisBackend(RateLimiterBackend):
    """Redis as the shared store: ``RedisBackend(url=...)``, ``RedisBackend(client=...)`` or the
    connection parameters of ``redis.Redis``. Keys are used as given (prefix your limiters')."""

    def __init__(self, *, client: redis.Redis | None = None, url: str | None = None, **parameters: Any) -> None:
        if client is None:
            client = redis.Redis.from_url(url, **parameters) if url is not None else redis.Redis(**parameters)
        self.client = client
        self._step = client.register_script(_STEP)
        self._incr_and_sum = client.register_script(_INCR_AND_SUM)
        self._add_member = client.register_script(_ADD_MEMBER)

    def add(self, key: str, value: int, ttl: int) -> bool:
        return bool(self.client.set(key, value, px=ttl, nx=True))

    def incr(self, key: str, amount: int, maximum: int, ttl: int) -> bool:
        return bool(self._step(keys=[key], args=[amount, maximum, ttl, 1]))

    def decr(self, key: str, amount: int, minimum: int, ttl: int) -> bool:
        return bool(self._step(keys=[key], args=[amount, minimum, ttl, -1]))

    def incr_and_sum(self, key: str, keys: Sequence[str], amount: int, maximum: int, ttl: int) -> bool:
        return bool(self._incr_and_sum(keys=[key, *keys], args=[amount, maximum, ttl]))

    def add_member(self, key: str, member: str, parties: int, ttl: int) -> bool:
        return bool(self._add_member(keys=[key, key + ":completed-by"], args=[member, parties, ttl]))
