"""Incremental (cooperative) rebalancing (issue 13, item 2): a member joining moves only the
partitions that change owner; the others never stop. On the StubBroker (which always moved only
those) and on Kafka with the cooperative-sticky assignor, the KafkaBroker's default."""

from __future__ import annotations

import threading

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
