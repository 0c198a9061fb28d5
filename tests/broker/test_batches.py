"""Batch-capable actors (issue 10, P4): the worker hands the ready records of distinct keys to the
actor's batch form at once, while per-key order and commit discipline hold, and a failing batch
costs only its bad record. Each test runs on the StubBroker and on real Kafka (conftest.env)."""

from __future__ import annotations

import threading
from collections import defaultdict

from broker import Call, actor
from tests.helpers import wait_for


def _store_actor(env, stored: dict, batches: list, *, bad=frozenset(), max_size=50):
    """An actor that appends (key, n) to ``stored``; its batch form does the same, all or nothing."""
    lock = threading.Lock()

    @actor(broker=env.broker, topic=env.topic, max_retries=1, min_backoff=10, key=lambda key, n: key)
    def store(key: str, n: int) -> None:
        if (key, n) in bad:
            raise ValueError(f"bad record {key}/{n}")
        with lock:
            stored[key].append(n)

    @store.batched(max_size=max_size)
    def store_many(calls: list[Call]) -> None:
        if any(tuple(call.args) in bad for call in calls):
            raise ValueError("a bad record in the batch")  # nothing of the batch is stored
        with lock:
            batches.append([call.args for call in calls])
            for call in calls:
                key, n = call.args
                stored[key].append(n)

    return store


def test_ready_records_of_distinct_keys_run_as_batches_in_key_order(env):
    stored: dict[str, list[int]] = defaultdict(list)
    batches: list[list[tuple]] = []
    store = _store_actor(env, stored, batches)
    keys = [f"device-{i}" for i in range(40)]
    store.send_many((key, n) for n in range(5) for key in keys)  # queued before the worker starts
    env.start_worker(worker_threads=2)
    total = len(keys) * 5
    wait_for(lambda: sum(map(len, stored.values())) == total, timeout=60, message=f"{len(stored)} keys")
    assert all(stored[key] == [0, 1, 2, 3, 4] for key in keys), "per-key order"
    assert any(len(batch) > 1 for batch in batches), "records ran as batches"
    for batch in batches:
        assert len(batch) <= 50
        assert len({key for key, _ in batch}) == len(batch), "two records of one key in a batch"
    wait_for(lambda: sum(env.committed().values()) == total, timeout=30, message="every offset committed")
    assert env.dead_letters() == []


def test_a_failing_batch_costs_only_its_bad_record(env):
    stored: dict[str, list[int]] = defaultdict(list)
    batches: list[list[tuple]] = []
    store = _store_actor(env, stored, batches, bad={("device-7", 1)})
    keys = [f"device-{i}" for i in range(20)]
    store.send_many((key, n) for n in range(3) for key in keys)
    env.start_worker(worker_threads=2)
    wait_for(lambda: len(env.dead_letters()) == 1, timeout=60, message="the bad record dead-lettered")
    good = len(keys) * 3 - 1
    wait_for(lambda: sum(map(len, stored.values())) == good, timeout=60, message="every good record stored")
    assert stored["device-7"] == [0, 2]  # the bad one retried, dead-lettered; its key moved on
    assert all(stored[key] == [0, 1, 2] for key in keys if key != "device-7")
    assert all(len(values) == len(set(values)) for values in stored.values()), "a good record stored twice"
    (letter,) = env.dead_letters()
    assert letter["exception.type"] == "builtins.ValueError"
    wait_for(lambda: sum(env.committed().values()) == len(keys) * 3, timeout=30, message="every offset committed")


def test_an_actor_without_a_batch_form_runs_one_message_at_a_time(env):
    seen: list[int] = []

    @actor(broker=env.broker, topic=env.topic)
    def one(n: int) -> None:
        seen.append(n)

    one.send_many((n,) for n in range(30))
    env.start_worker()
    wait_for(lambda: sorted(seen) == list(range(30)), message=str(seen))
