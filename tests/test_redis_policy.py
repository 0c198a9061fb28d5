"""Redis must not evict what guards correctness (issue 20, item 6).

Fences (``resource-fence:{id}``), console sessions, rate-limit windows and idempotency keys all
carry TTLs, so only ``noeviction`` keeps them under memory pressure; ``allkeys-lru`` (the old
setting) dropped them, and a dropped fence lets a stalled reader put an older version back.
The check runs a private ``redis-server`` with the flags ``scripts/stack`` uses, fills it past a
small ``maxmemory`` and asserts the fence is still there and the overflowing write was refused.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess

import pytest
import redis
import yaml

from core.cache import ResourceCache
from core.resources import ResourceRecord
from tests.helpers import ROOT, free_port, wait_for


def _stack_flags() -> list[str]:
    script = (ROOT / "scripts" / "stack").read_text()
    line = next(line for line in script.splitlines() if "--maxmemory-policy" in line)
    match = re.search(r"(--maxmemory \S+ --maxmemory-policy \S+)", line)
    assert match is not None, "scripts/stack sets no --maxmemory"
    return match.group(1).split()


def test_the_stack_and_compose_run_redis_with_noeviction():
    assert _stack_flags()[-1] == "noeviction"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    command = compose["services"]["redis"]["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"


@pytest.mark.stack  # it starts a server (its own)
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server binary")
def test_under_memory_pressure_the_stacks_redis_keeps_fences_and_refuses_writes(tmp_path):
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path), *_stack_flags()],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port)
    try:
        wait_for(lambda: _pings(client), timeout=10, message="the private redis-server answers")
        client.config_set("maxmemory", "4mb")  # the policy under test is the stack's; the size is ours
        client.set("resource-fence:device-1", "7", ex=3600)
        refused = False
        for i in range(2000):
            try:
                client.set(f"resource:device-{i}", "x" * 4096, ex=60)
            except redis.exceptions.OutOfMemoryError:
                refused = True
                break
        assert refused, "4 MB held 8 MB of cache entries: something was evicted"
        assert client.get("resource-fence:device-1") == b"7"
        # a full Redis refuses the invalidation script whole; the stale entry must still go
        stale = "resource:device-0"
        assert client.exists(stale)
        record = ResourceRecord(id="device-0", payload={}, version=8, updated_at=dt.datetime.now(dt.UTC))
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            ResourceCache(client).invalidate(record)
        assert not client.exists(stale), "readers would be served the old version until its TTL"
    finally:
        client.close()
        server.terminate()
        server.wait(timeout=10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
