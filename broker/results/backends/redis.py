"""Results in Redis: one single-element list per message, so a reader can block on it."""

from __future__ import annotations

from typing import Any

import redis

from broker.results.backend import ResultBackend


class RedisBackend(ResultBackend):
    """``RedisBackend(url=...)``, ``RedisBackend(client=...)`` or ``redis.Redis`` parameters.
    Keys are ``{namespace}:{message_id}`` (namespace ``results``; ``prefix=`` gives the whole
    prefix instead, as before namespaces), or ``{namespace}:{topic}:{actor}:{message_id}`` with
    ``use_namespace_prefix_keys`` (see :class:`~broker.results.backend.ResultBackend`)."""

    def __init__(
        self,
        *,
        client: redis.Redis | None = None,
        url: str | None = None,
        namespace: str = "results",
        prefix: str | None = None,
        use_namespace_prefix_keys: bool = False,
        **parameters: Any,
    ) -> None:
        if client is None:
            client = redis.Redis.from_url(url, **parameters) if url is not None else redis.Redis(**parameters)
        self.client = client
        self.namespace = namespace
        self.prefix = prefix if prefix is not None else f"{namespace}:"
        self.use_namespace_prefix_keys = use_namespace_prefix_keys

    def build_message_key(self, message: Any) -> str:
        return self.prefix + self._key_part(message)

    def _put(self, key: str, document: str, ttl_ms: int) -> None:
        key = self.prefix + key
        with self.client.pipeline() as pipe:  # MULTI: readers never see an empty or double list
            pipe.delete(key)
            pipe.rpush(key, document)
            pipe.pexpire(key, ttl_ms)
            pipe.execute()

    def _get(self, key: str, timeout_ms: int | None) -> str | None:
        key = self.prefix + key
        if timeout_ms is None:
            data = self.client.lindex(key, 0)
        else:  # the element moves back onto its own list: it stays for other readers
            # redis-py annotates the timeout as int; BLMOVE takes fractional seconds (Redis 6+)
            data = self.client.blmove(key, key, max(timeout_ms, 1) / 1000, "LEFT", "RIGHT")  # type: ignore[arg-type]
        return data.decode() if isinstance(data, bytes) else data
