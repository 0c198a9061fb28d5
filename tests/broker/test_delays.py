"""Delayed messages and ``ordered=False`` retries (issue 12, items 1 and 2), on the StubBroker and
on Kafka (``delay_env`` gives each test delay topics of its own)."""

from __future__ import annotations

import time

import pytest

from broker import StubBroker, Worker, actor
from broker.delays import HEADER_ETA, HEADER_TOPIC, HEADER_UNTIL, MAX_DELAY_MS, now_ms, route
from broker.message import Message
from tests.helpers import wait_for


class Ledger:
    """What ran, and when (epoch ms), across worker threads."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, int]] = []

    def add(self, name: str) -> None:
        self.runs.append((name, now_ms()))

    def names(self) -> list[str]:
        return [name for name, _ in self.runs]

    def at(self, name: str) -> int:
        return next(t for n, t in self.runs if n == name)


# ---------------------------------------------------------------- routing


def test_a_delay_goes_to_the_longest_tier_that_does_not_overshoot():
    now = 1_000_000
    assert route("d", "t", now + 500, now)[0] == "d-1s"  # shorter than every tier: the shortest
    assert route("d", "t", now + 9_999, now)[0] == "d-1s"
    assert route("d", "t", now + 10_000, now)[0] == "d-10s"
    assert route("d", "t", now + 7 * 86_400_000, now)[0] == "d-1d"
    topic, headers = route("d", "orders", now + 90_000, now)
    assert topic == "d-1m"
    assert dict(headers) == {HEADER_UNTIL: b"1060000", HEADER_ETA: b"1090000", HEADER_TOPIC: b"orders"}
    # a record never leaves its tier after its eta
    assert dict(route("d", "t", now + 500, now)[1])[HEADER_UNTIL] == b"1000500"


def test_delays_longer_than_seven_days_or_negative_are_refused_before_sending():
    broker = StubBroker()

    @actor(broker=broker, topic="t")
    def task():
        pass

    for bad in (MAX_DELAY_MS + 1, -1, 1.5, True):
        with pytest.raises(ValueError):
            task.send_with_options(delay=bad)
    assert not any(broker.topics.get(name) and any(broker.topics[name]) for name in broker.delay_topics)


def test_a_broker_without_delay_topics_refuses_a_delay():
    broker = StubBroker(delay_prefix=None)

    @actor(broker=broker, topic="t")
    def task():
        pass

    with pytest.raises(ValueError, match="no delay topics"):
        task.send_with_options(delay=1000)


# ---------------------------------------------------------------- delays, stub and Kafka


def test_a_delayed_message_runs_once_due_and_not_before(delay_env):
    ledger = Ledger()

    @actor(broker=delay_env.broker, topic=delay_env.topic)
    def ping(name):
        ledger.add(name)

    delay_env.start_worker()
    delay_ms = 2500 if delay_env.kind == "kafka" else 400  # the stub delivers without a network round trip
    message = ping.send_with_options(args=("late",), delay=delay_ms)
    assert message.options["eta"] >= now_ms() + delay_ms * 4 // 5
    ping.send("now")
    wait_for(lambda: "late" in ledger.names(), timeout=30, message=str(ledger.runs))
    assert ledger.at("late") >= message.options["eta"]
    assert ledger.names() == ["now", "late"]


def test_a_delayed_message_holds_neither_its_partition_nor_its_key(delay_env):
    ledger = Ledger()

    @actor(broker=delay_env.broker, topic=delay_env.topic)
    def step(name):
        ledger.add(name)

    delay_env.start_worker()
    delay_ms, margin_ms = (1500, 1000) if delay_env.kind == "kafka" else (700, 400)
    step.send_with_options(args=("delayed",), key="device-1", delay=delay_ms)
    for n in range(5):
        step.send_with_options(args=(f"after-{n}",), key="device-1")
    wait_for(lambda: len(ledger.runs) == 6, timeout=30, message=str(ledger.runs))
    # the later messages of the key ran at once, in order; the delayed one took its place when due
    assert ledger.names() == [f"after-{n}" for n in range(5)] + ["delayed"]
    assert ledger.at("after-4") < ledger.at("delayed") - margin_ms


def test_stub_join_waits_for_the_topics_delayed_messages():
    broker = StubBroker()
    ledger = Ledger()

    @actor(broker=broker, topic="jobs")
    def job(name):
        ledger.add(name)

    worker = Worker(broker, worker_threads=2, commit_interval_ms=20, poll_timeout_ms=20)
    worker.start()
    try:
        job.send_with_options(args=("soon",), delay=400)
        with pytest.raises(TimeoutError):
            broker.join("jobs", timeout=150)
        broker.join("jobs", timeout=10_000)
        assert ledger.names() == ["soon"]
    finally:
        worker.stop()


@pytest.mark.parametrize("env", [pytest.param("kafka", marks=pytest.mark.stack)], indirect=True)
def test_a_delayed_message_survives_a_worker_restart(delay_env):
    ledger = Ledger()

    @actor(broker=delay_env.broker, topic=delay_env.topic)
    def later(name):
        ledger.add(name)

    first = delay_env.start_worker()
    wait_for(lambda: first.forwarder.consumer is not None, timeout=30)
    messages = [later.send_with_options(args=(f"m{n}",), delay=3000 + 500 * n) for n in range(3)]
    time.sleep(1)  # the restart comes while they wait (the forwarder has read them and holds their partitions)
    first.stop()
    delay_env.workers.remove(first)
    assert ledger.runs == []
    delay_env.start_worker()  # a new process: nothing of the delays is in its memory
    wait_for(lambda: len(ledger.runs) == 3, timeout=60, message=str(ledger.runs))
    for message in messages:
        assert ledger.at(message.args[0]) >= message.options["eta"]
    assert sorted(ledger.names()) == ["m0", "m1", "m2"]


def test_a_message_that_arrives_before_its_eta_waits_without_holding_its_key(delay_env):
    ledger = Ledger()

    @actor(broker=delay_env.broker, topic=delay_env.topic)
    def step(name):
        ledger.add(name)

    delay_env.start_worker()
    eta = now_ms() + (1500 if delay_env.kind == "kafka" else 400)
    early = Message(actor_name="step", topic=delay_env.topic, args=("early",), key="k", options={"eta": eta})
    delay_env.produce_raw(early.encode(), key=b"k")  # written straight to the topic, as a foreign producer might
    step.send_with_options(args=("next",), key="k")
    wait_for(lambda: len(ledger.runs) == 2, timeout=30, message=str(ledger.runs))
    assert ledger.names() == ["next", "early"]
    assert ledger.at("early") >= eta


def test_junk_in_a_delay_topic_is_dead_lettered_and_forwarding_goes_on(delay_env):
    ledger = Ledger()

    @actor(broker=delay_env.broker, topic=delay_env.topic)
    def ping(name):
        ledger.add(name)

    delay_env.start_worker()
    delay_env.broker.produce(delay_env.broker.delay_topics[0], b"k", b"not a delayed message", [])(10)
    ping.send_with_options(args=("after-junk",), key="k", delay=300)
    wait_for(lambda: ledger.names() == ["after-junk"], timeout=30, message=str(ledger.runs))
    wait_for(lambda: delay_env.dead_letters(), timeout=30)
    [letter] = delay_env.dead_letters()
    assert letter["reason"] == "undecodable" and letter["raw_value"] == b"not a delayed message"


# ---------------------------------------------------------------- ordered=False


def test_an_unordered_actor_retries_as_a_delayed_message_and_its_key_moves_on(delay_env):
    ledger = Ledger()
    failures: list[int] = []

    backoff_ms = 800 if delay_env.kind == "kafka" else 250

    @actor(broker=delay_env.broker, topic=delay_env.topic, ordered=False, max_retries=2, min_backoff=backoff_ms)
    def flaky(name):
        if name == "first" and len(failures) < 2:
            failures.append(now_ms())
            raise RuntimeError("not yet")
        ledger.add(name)

    delay_env.start_worker()
    flaky.send_with_options(args=("first",), key="k")
    for n in range(3):
        flaky.send_with_options(args=(f"next-{n}",), key="k")
    wait_for(lambda: len(ledger.runs) == 4, timeout=40, message=str(ledger.runs))
    # the key did not wait for the failed message's backoff
    assert ledger.names() == ["next-0", "next-1", "next-2", "first"]
    assert ledger.at("next-2") < failures[0] + backoff_ms
    # the backoff is unchanged: min_backoff, then twice it
    assert failures[1] - failures[0] >= backoff_ms and ledger.at("first") - failures[1] >= 2 * backoff_ms
    assert delay_env.dead_letters() == []


def test_an_unordered_actor_still_dead_letters_after_max_retries(delay_env):
    attempts: list[int] = []

    @actor(
        broker=delay_env.broker,
        topic=delay_env.topic,
        ordered=False,
        max_retries=2,
        min_backoff=200 if delay_env.kind == "kafka" else 100,
    )
    def doomed():
        attempts.append(now_ms())
        raise ValueError("never works")

    delay_env.start_worker()
    message = doomed.send()
    wait_for(lambda: delay_env.dead_letters(), timeout=40)
    [letter] = delay_env.dead_letters()
    assert len(attempts) == 3
    assert letter["message_id"] == message.message_id and letter["attempts"] == "3"
    assert letter["reason"] == "failed"


def test_ordered_must_be_a_boolean():
    with pytest.raises(ValueError, match="ordered"):

        @actor(broker=StubBroker(), ordered="no")
        def task():
            pass


@pytest.mark.parametrize("env", [pytest.param("kafka", marks=pytest.mark.stack)], indirect=True)
def test_a_delayed_message_for_a_deleted_topic_is_dead_lettered_and_does_not_hold_its_tier(
    delay_env, make_topic, kafka_admin
):
    ledger = Ledger()
    doomed_topic = make_topic(partitions=1)

    @actor(broker=delay_env.broker, topic=doomed_topic)
    def orphan():
        ledger.add("orphan")

    @actor(broker=delay_env.broker, topic=delay_env.topic)
    def ping(name):
        ledger.add(name)

    delay_env.start_worker()
    orphan.send_with_options(key="k", delay=1000)
    ping.send_with_options(args=("behind-it",), key="k", delay=1200)  # same key: the same tier partition
    kafka_admin.delete_topics([doomed_topic])
    wait_for(lambda: ledger.names() == ["behind-it"], timeout=90, message=str(ledger.runs))
    wait_for(lambda: delay_env.dead_letters(), timeout=30)
    [letter] = delay_env.dead_letters()
    assert letter["reason"] == "no_topic" and letter["original.topic"].startswith("delays-")


def test_a_batch_capable_actor_never_runs_an_early_message_in_a_batch(delay_env):
    ledger = Ledger()

    @actor(broker=delay_env.broker, topic=delay_env.topic)
    def store(name):
        ledger.add(name)

    @store.batched(max_size=10)
    def store_many(calls):
        for call in calls:
            ledger.add(call.args[0])

    delay_env.start_worker()
    eta = now_ms() + (1200 if delay_env.kind == "kafka" else 500)
    early = Message(actor_name="store", topic=delay_env.topic, args=("early",), key="e", options={"eta": eta})
    delay_env.produce_raw(early.encode(), key=b"e")
    store.send_many((f"now-{n}",) for n in range(5))
    wait_for(lambda: "early" in ledger.names(), timeout=30, message=str(ledger.runs))
    assert ledger.at("early") >= eta
