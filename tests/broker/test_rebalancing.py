"""Incremental (cooperative) rebalancing (issue 13, item 2): a member joining moves only the
partitions that change owner; the others never stop. On the StubBroker (which always moved only
those) and on Kafka with the cooperative-sticky assignor, the KafkaBroker's default."""

from __future__ import annotations

import threading
import time

import pytest

from broker import KafkaBroker, Worker, actor
from tests.helpers import wait_for


def watch_revocations(worker: Worker) -> list[set]:
    """Record each set of partitions ``worker`` is asked to give up."""
    revoked: list[set] = []
    original = worker.revoke_partitions

    def revoke(partitions):
        revoked.append(set(partitions))
        return original(partitions)

    worker.revoke_partitions = revoke  # type: ignore[method-assign]
    return revoked


def test_a_joining_member_takes_partitions_without_stopping_the_others(env):
    seen = []
    lock = threading.Lock()

    @actor(broker=env.broker, topic=env.topic)
    def work(n):
        with lock:
            seen.append(n)

    first = env.start_worker()
    revoked = watch_revocations(first)
    wait_for(lambda: len(first.status()["partitions"]) == 3, timeout=60)
    work.send_many((n,) for n in range(30))
    wait_for(lambda: len(seen) == 30, timeout=60)

    second = env.start_worker()
    wait_for(lambda: second.status()["partitions"], timeout=60)
    wait_for(lambda: len(first.status()["partitions"]) + len(second.status()["partitions"]) == 3, timeout=60)
    moved = {f"{t}-{p}" for revocation in revoked for t, p in revocation}
    kept = set(first.status()["partitions"])
    assert moved == set(second.status()["partitions"])  # only what changed owner was revoked
    assert kept and not kept & moved  # the first member kept the rest throughout
    work.send_many((n,) for n in range(30, 60))
    wait_for(lambda: sorted(set(seen)) == list(range(60)), timeout=60)


@pytest.mark.stack
def test_an_eager_assignor_still_works_and_revokes_everything(settings, make_topic, unique):
    topic = make_topic(partitions=3)
    broker = KafkaBroker(**settings.kafka_options, assignor="range", dead_letter_topic=topic, delay_prefix=None)
    done = []

    @actor(broker=broker, topic=topic)
    def work(n):
        done.append(n)

    workers = []
    try:
        first = Worker(broker, group_id=f"eager-{unique}", topics=[topic], commit_interval_ms=50)
        first.start()
        workers.append(first)
        revoked = watch_revocations(first)
        wait_for(lambda: len(first.status()["partitions"]) == 3, timeout=60)
        second = Worker(broker, group_id=f"eager-{unique}", topics=[topic], commit_interval_ms=50)
        second.start()
        workers.append(second)
        wait_for(lambda: second.status()["partitions"], timeout=60)
        [everything] = [r for r in revoked if r]  # an eager join revokes all (and first, nothing)
        assert {f"{t}-{p}" for t, p in everything} == {f"{topic}-{p}" for p in range(3)}
        work.send_many((n,) for n in range(20))
        wait_for(lambda: sorted(done) == list(range(20)), timeout=60)
    finally:
        for worker in workers:
            worker.stop(timeout_ms=5000)
        broker.close()


def test_an_unknown_assignor_is_refused():
    with pytest.raises(ValueError, match="assignor"):
        KafkaBroker(assignor="sticky-ish")


@pytest.mark.stack
def test_partitions_a_member_keeps_are_worked_while_a_cooperative_rebalance_runs(settings, make_topic, unique):
    """kafka-python's poll() fetches nothing during a rebalance; the consumer fetches the kept
    partitions itself meanwhile. Without that, a join stalled every partition for about a
    heartbeat interval (3 s here, kafka-python's default, so that a stall cannot hide)."""
    topic = make_topic(partitions=6)
    broker = KafkaBroker(**settings.kafka_options, dead_letter_topic=topic, delay_prefix=None,
                         consumer_options={"heartbeat_interval_ms": 3000})  # fmt: skip
    completions: list[float] = []
    group = f"coop-{unique}"

    @actor(broker=broker, topic=topic)
    def tick(n):
        completions.append(time.monotonic())

    stop = threading.Event()

    def load():
        n = 0
        while not stop.is_set():
            tick.send_many((i,) for i in range(n, n + 10))
            n += 10
            time.sleep(0.05)

    workers = []
    try:
        first = Worker(broker, group_id=group, topics=[topic], commit_interval_ms=50, forward_delays=False)
        first.start()
        workers.append(first)
        wait_for(lambda: len(first.status()["partitions"]) == 6, timeout=60)
        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        wait_for(lambda: len(completions) > 100, timeout=30)
        joined_at = time.monotonic()
        second = Worker(broker, group_id=group, topics=[topic], commit_interval_ms=50, forward_delays=False)
        second.start()
        workers.append(second)
        wait_for(lambda: len(second.status()["partitions"]) == 3, timeout=60)
        settled_at = time.monotonic() + 1
        wait_for(lambda: time.monotonic() > settled_at, timeout=5)
        stop.set()
        loader.join()
        window = [t for t in completions if t >= joined_at]
        longest = max(b - a for a, b in zip([joined_at, *window], window, strict=False))
        assert longest < 2.0, f"the group stood still for {longest:.2f} s during the join"
    finally:
        stop.set()
        for worker in workers:
            worker.stop(timeout_ms=5000)
        broker.close()
