"""Dramatiq's features that had no counterpart here (issue 23, items 6-12), each checked by our own
tests: middleware and its hooks, AgeLimit, Callbacks, CurrentMessage, SkipMessage, Retry,
on_retry_exhausted, shutdown notifications, GenericActor, Message helpers, composition stats,
encoders, pause/resume, late declarations, a fresh broker per test. On Kafka too where a hook
is about Kafka (ack is the commit of a finished record, nack its dead letter): conftest.env.
Long because it is one test or more per feature of that list, each short.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import threading

import pytest

import broker as broker_package
from broker import GenericActor, Message, StubBroker, Worker, actor, group, pipeline, set_broker
from broker.encoder import JSONEncoder, get_encoder, set_encoder
from broker.errors import Retry
from broker.middleware import (
    AgeLimit,
    AsyncIO,
    CurrentMessage,
    Middleware,
    Shutdown,
    SkipMessage,
    TimeLimit,
)
from broker.rate_limits import Barrier
from broker.rate_limits.backends import StubBackend as StubLimits
from broker.results import Results
from broker.results.backends import StubBackend
from tests.helpers import wait_for


@pytest.fixture
def stub():
    """A fresh global StubBroker, as Dramatiq's tests use one (the previous global broker back after)."""
    previous = broker_package.broker._broker
    fresh = StubBroker()
    set_broker(fresh)
    yield fresh
    broker_package.broker._broker = previous


def run(stub_broker: StubBroker, topic: str = "default", **worker_options) -> Worker:
    """A started worker that polls and commits every 20 ms unless told (the defaults: 100 and
    200 ms), so a join sees the commit that much sooner."""
    worker_options.setdefault("poll_timeout_ms", 20)
    worker_options.setdefault("commit_interval_ms", 20)
    worker = Worker(stub_broker, **worker_options)
    worker.start()
    return worker


# ---------------------------------------------------------------- middleware


class Recorder:
    """A middleware that is not a Middleware subclass and has only some hooks."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def _add(self, hook: str, what: object) -> None:
        with self.lock:
            self.calls.append((hook, str(what)))

    def after_declare_actor(self, broker, actor):
        self._add("after_declare_actor", actor.actor_name)

    def after_declare_queue(self, broker, topic):
        self._add("after_declare_queue", topic)

    def before_ack(self, broker, message):
        self._add("before_ack", message.actor_name)

    def after_ack(self, broker, message):
        self._add("after_ack", message.actor_name)

    def before_nack(self, broker, message):
        self._add("before_nack", message.actor_name)

    def after_nack(self, broker, message):
        self._add("after_nack", message.actor_name)

    def after_worker_thread_boot(self, broker, thread):
        self._add("after_worker_thread_boot", thread.name)

    def before_worker_thread_shutdown(self, broker, thread):
        self._add("before_worker_thread_shutdown", thread.name)

    def after_consumer_thread_boot(self, broker, thread):
        self._add("after_consumer_thread_boot", thread.name)

    def before_enqueue(self, broker, message, delay):
        self._add("before_enqueue", delay)

    def hooks(self, name: str) -> list[str]:
        with self.lock:
            return [what for hook, what in self.calls if hook == name]


def test_a_middleware_lacking_hooks_is_only_called_for_those_it_has_and_hooks_fire_where_they_mean_something(env):
    recorder = Recorder()
    env.broker.add_middleware(recorder)

    @actor(broker=env.broker, topic=env.topic)
    def fine():
        pass

    @actor(broker=env.broker, topic=env.topic, max_retries=0)
    def broken():
        raise ValueError("no")

    assert recorder.hooks("after_declare_actor") == ["fine", "broken"]
    assert recorder.hooks("after_declare_queue") == [env.topic]  # once per topic
    worker = env.start_worker(worker_threads=2)
    fine.send()
    broken.send()
    wait_for(lambda: len(env.dead_letters()) == 1, message="the failing message dead-lettered")
    wait_for(lambda: recorder.hooks("after_ack") == ["fine"], message=str(recorder.calls))
    wait_for(lambda: recorder.hooks("after_nack") == ["broken"], message=str(recorder.calls))
    assert recorder.hooks("before_ack") == ["fine"] and recorder.hooks("before_nack") == ["broken"]
    assert recorder.hooks("before_enqueue") == ["None", "None"]
    assert sorted(recorder.hooks("after_worker_thread_boot")) == ["worker-0", "worker-1"]
    assert recorder.hooks("after_consumer_thread_boot") == ["consumer"]
    worker.stop()
    assert sorted(recorder.hooks("before_worker_thread_shutdown")) == ["worker-0", "worker-1"]


def test_middleware_is_added_before_or_after_another_with_dramatiqs_errors(caplog):
    stub_broker = StubBroker()
    first, last = Recorder(), Recorder()
    stub_broker.add_middleware(first, before=AgeLimit)
    assert stub_broker.middleware[0] is first
    stub_broker.add_middleware(last, after=TimeLimit)
    assert stub_broker.middleware[-1] is last
    with pytest.raises(ValueError, match="not found"):
        stub_broker.add_middleware(Recorder(), before=CurrentMessage)  # not on this broker
    with pytest.raises(AssertionError):
        stub_broker.add_middleware(Recorder(), before=AgeLimit, after=TimeLimit)
    with caplog.at_level(logging.WARNING):
        stub_broker.add_middleware(TimeLimit())
    assert any("same type twice" in r.getMessage() for r in caplog.records)


def test_a_middleware_added_later_hears_of_the_actors_already_declared():
    stub_broker = StubBroker()

    @actor(broker=stub_broker, topic="early")
    def early():
        pass

    recorder = Recorder()
    stub_broker.add_middleware(recorder)
    assert recorder.hooks("after_declare_actor") == ["early"]
    assert recorder.hooks("after_declare_queue") == ["early"]


def test_age_limit_dead_letters_a_message_older_than_its_max_age_without_running_it():
    stub_broker = StubBroker()
    ran = []

    @actor(broker=stub_broker, topic="aging", max_age=60_000)
    def stale():
        ran.append(1)

    old = stale.message().copy(enqueued_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2))
    stub_broker.enqueue(old)
    stale.send()  # a fresh one runs
    worker = run(stub_broker)
    try:
        with pytest.raises(SkipMessage, match="age limit"):
            stub_broker.join("aging", timeout=10_000)
        stub_broker.join("aging", timeout=10_000)
    finally:
        worker.stop()
    assert ran == [1]
    (letter,) = stub_broker.dead_letters
    assert letter.message.message_id == old.message_id


def test_callbacks_get_the_message_and_its_result_or_each_failure():
    stub_broker = StubBroker()
    successes, failures = [], []

    @actor(broker=stub_broker, topic="cb")
    def succeeded(message, result):
        successes.append((message["actor_name"], result))

    @actor(broker=stub_broker, topic="cb")
    def failed(message, error):
        failures.append((message["options"]["retries"], error["type"]))

    @actor(broker=stub_broker, topic="cb", max_retries=2, min_backoff=1)
    def work(fail):
        if fail:
            raise RuntimeError("no")
        return 42

    worker = run(stub_broker)
    try:
        work.send_with_options(args=(False,), on_success=succeeded)
        work.send_with_options(args=(True,), on_failure=failed)
        stub_broker.join("cb", timeout=10_000, fail_fast=False)
    finally:
        worker.stop()
    assert successes == [("work", 42)]
    assert failures == [(1, "RuntimeError"), (2, "RuntimeError"), (3, "RuntimeError")]
    with pytest.raises(TypeError):
        work.message_with_options(on_success=print)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_current_message_is_the_running_message_inside_the_actor_and_none_outside(kind):
    stub_broker = StubBroker()
    stub_broker.add_middleware(CurrentMessage())
    stub_broker.add_middleware(AsyncIO())
    seen = []

    if kind == "sync":

        @actor(broker=stub_broker, topic="current")
        def where():
            seen.append(CurrentMessage.get_current_message().message_id)

    else:

        @actor(broker=stub_broker, topic="current")
        async def where():
            await asyncio.sleep(0)
            seen.append(CurrentMessage.get_current_message().message_id)

    worker = run(stub_broker)
    try:
        sent = where.send()
        stub_broker.join("current", timeout=10_000)
    finally:
        worker.stop()
    assert seen == [sent.message_id]
    assert CurrentMessage.get_current_message() is None


def test_a_skipped_message_is_finished_without_running():
    class SkipAll(Middleware):
        def before_process_message(self, broker, message):
            raise SkipMessage("not today")

    stub_broker = StubBroker()
    stub_broker.add_middleware(SkipAll())
    ran = []

    @actor(broker=stub_broker, topic="skipped")
    def never():
        ran.append(1)

    worker = run(stub_broker)
    try:
        never.send()
        stub_broker.join("skipped", timeout=10_000)  # committed, not dead-lettered
    finally:
        worker.stop()
    assert ran == [] and stub_broker.dead_letters == []


def test_retry_with_a_delay_and_on_retry_exhausted():
    stub_broker = StubBroker()
    attempts, exhausted = [], []

    @actor(broker=stub_broker, topic="retry")
    def report(message, info):
        exhausted.append((message["message_id"], info))

    @actor(broker=stub_broker, topic="retry", max_retries=2, min_backoff=60_000, on_retry_exhausted="report")
    def stubborn():
        attempts.append(1)
        raise Retry("again", delay=10)  # the backoff (a minute) is replaced by 10 ms

    worker = run(stub_broker)
    try:
        sent = stubborn.send()
        with pytest.raises(Retry):
            stub_broker.join("retry", timeout=10_000)
        stub_broker.join("retry", timeout=10_000)
    finally:
        worker.stop()
    assert len(attempts) == 3
    assert exhausted == [(sent.message_id, {"retries": 2, "max_retries": 2})]


def test_shutdown_notifications_interrupt_actors_that_ask_for_them():
    stub_broker = StubBroker()
    started, interrupted = threading.Event(), threading.Event()

    @actor(broker=stub_broker, topic="long", notify_shutdown=True, max_retries=0)
    def long_running():
        started.set()
        try:
            for _ in range(300):
                threading.Event().wait(0.1)
        except Shutdown:
            interrupted.set()
            raise

    worker = run(stub_broker)
    long_running.send()
    assert started.wait(10)
    worker.stop(timeout_ms=10_000)
    assert interrupted.is_set()


# ---------------------------------------------------------------- actors and messages


def test_generic_actors_run_perform_with_their_meta_options(stub):
    ran = []

    class Base(GenericActor):
        class Meta:
            abstract = True
            topic = "generic"
            max_retries = 7

        def perform(self, x):
            ran.append((type(self).__name__, x))

    class Double(Base):
        pass

    assert isinstance(Base, type)  # abstract: stays a class
    assert Double.actor_name == "Double" and Double.topic == "generic" and Double.options["max_retries"] == 7
    worker = run(stub)
    try:
        Double.send(21)
        stub.join("generic", timeout=10_000)
    finally:
        worker.stop()
    assert ran == [("Double", 21)]


def test_actor_class_priority_and_logger(stub):
    class Custom(broker_package.Actor):
        pass

    @actor(actor_class=Custom, priority=5)
    def named():
        pass

    assert isinstance(named, Custom) and named.priority == 5
    assert named.logger.name == f"{__name__}.named"
    assert str(named) == "Actor(named)"


def test_message_helpers_as_dramatiqs_named_tuple_has_them(stub):
    @actor
    def add(x, y):
        return x + y

    message = add.message(1, 2)
    assert message._asdict() == message.asdict()
    assert message._replace(topic="other").topic == "other"
    assert message.message_datetime.tzinfo is dt.UTC
    assert message.message_datetime.timestamp() == message.message_timestamp / 1000
    assert abs(message.message_timestamp - message.enqueued_at.timestamp() * 1000) < 1
    piped = add.message(1, 2) | add.message(3)
    assert isinstance(piped, pipeline) and len(piped) == 2


def test_groups_and_pipelines_say_how_much_has_completed(stub):
    stub.add_middleware(Results(backend=StubBackend()))
    release = threading.Event()

    @actor(store_results=True)
    def step(x):
        if x == 3:
            release.wait(10)
        return x

    worker = run(stub)
    try:
        jobs = group([step.message(1), step.message(2), step.message(3)]).run()
        pipe = (step.message(1) | step.message_with_options(args=(), pipe_ignore=False)).run()
        wait_for(lambda: jobs.completed_count == 2, message="two of three members done")
        assert not jobs.completed
        release.set()
        wait_for(lambda: jobs.completed, message="the group completed")
        wait_for(lambda: pipe.completed, message="the pipeline completed")
        assert pipe.completed_count == 2
        nested = group([group([step.message(5)]), step.message(6)]).run()
        assert list(nested.get_results(block=True, timeout=10_000)) == [[5], 6]
    finally:
        release.set()
        worker.stop()


def test_a_custom_encoder_is_used_for_every_message_and_json_is_the_default():
    class Reversed(JSONEncoder):
        """JSON, bytes reversed: not JSON on the wire, so only this encoder reads it back."""

        def encode(self, data):
            return super().encode(data)[::-1]

        def decode(self, data):
            return super().decode(data[::-1])

    message = Message(actor_name="a", topic="t", args=(1,))
    default_bytes = message.encode()
    assert json.loads(default_bytes)["args"] == [1]  # the envelope, unchanged
    previous = get_encoder()
    set_encoder(Reversed())
    try:
        assert message.encode() == default_bytes[::-1]
        assert Message.decode(message.encode()) == message
        stub_broker = StubBroker()
        ran = []

        @actor(broker=stub_broker, topic="encoded")
        def record(x):
            ran.append(x)

        worker = run(stub_broker)
        try:
            record.send(7)
            stub_broker.join("encoded", timeout=10_000)
        finally:
            worker.stop()
        assert ran == [7]
    finally:
        set_encoder(previous)


# ---------------------------------------------------------------- worker


def test_a_paused_worker_starts_nothing_until_resumed():
    stub_broker = StubBroker()
    ran = []

    @actor(broker=stub_broker, topic="paused")
    def work():
        ran.append(1)

    worker = run(stub_broker, worker_timeout=50)
    try:
        worker.pause()
        work.send()
        with pytest.raises(TimeoutError):
            stub_broker.join("paused", timeout=300)
        assert ran == []
        worker.resume()
        stub_broker.join("paused", timeout=10_000)
    finally:
        worker.stop()
    assert ran == [1]


def test_actors_declared_after_the_worker_started_are_consumed(stub):
    worker = run(stub)  # nothing declared yet
    ran = []
    try:

        @actor(topic="declared-late")
        def late():
            ran.append(1)

        late.send()
        stub.join("declared-late", timeout=10_000)
    finally:
        worker.stop()
    assert ran == [1]


def test_each_test_may_set_a_fresh_broker_and_declare_the_same_actor_name_again(stub):
    @actor(actor_name="same-name-twice")
    def first():
        return 1

    assert stub.actors["same-name-twice"] is first
    fresh = StubBroker()
    set_broker(fresh)
    assert fresh.actors["same-name-twice"] is first  # carried over to the new broker

    @actor(actor_name="same-name-twice")
    def second():
        return 2

    assert fresh.actors["same-name-twice"] is second  # and replaced by name on it
    with pytest.raises(ValueError):  # but twice on one broker is still an error

        @actor(actor_name="same-name-twice")
        def third():
            return 3


def test_a_value_nobody_stores_is_warned_about(caplog):
    stub_broker = StubBroker()

    @actor(broker=stub_broker, topic="values")
    def returns():
        return 1

    worker = run(stub_broker)
    try:
        with caplog.at_level(logging.WARNING):
            returns.send()
            stub_broker.join("values", timeout=10_000)
            worker.join(10_000)
    finally:
        worker.stop()
    assert any("Consider adding the Results middleware" in r.getMessage() for r in caplog.records)


def test_a_dramatiq_barrier_releases_every_waiting_party_when_the_last_arrives():
    barrier = Barrier(StubLimits(), "parties-of-two", ttl=30_000)
    assert barrier.create(parties=2)
    assert not barrier.create(parties=5)
    released = []
    waiter = threading.Thread(target=lambda: released.append(barrier.wait(timeout=10_000)))
    waiter.start()
    assert barrier.wait(block=False)  # the second party: the last
    waiter.join(10)
    assert released == [True]
    lonely = Barrier(StubLimits(), "never-full", ttl=30_000)
    lonely.create(parties=2)
    assert lonely.wait(timeout=100) is False


def test_lower_priority_actors_run_first_among_a_workers_ready_messages():
    stub_broker = StubBroker()
    calls = []

    @actor(broker=stub_broker, topic="prio", priority=10)
    def later():
        calls.append("later")

    @actor(broker=stub_broker, topic="prio", priority=0)
    def sooner():
        calls.append("sooner")

    worker = run(stub_broker, worker_threads=1)
    try:
        worker.pause()
        for _ in range(5):
            later.send()
            sooner.send()
        wait_for(lambda: worker.status()["buffered"] == 10, message="all fetched, none started")
        assert calls == []
        worker.resume()
        stub_broker.join("prio", timeout=10_000)
    finally:
        worker.stop()
    assert calls == ["sooner"] * 5 + ["later"] * 5


def test_a_retried_delivery_says_how_many_retries_came_before_and_when_it_was_requeued():
    stub_broker = StubBroker()
    stub_broker.add_middleware(CurrentMessage())
    seen = []

    @actor(broker=stub_broker, topic="requeued", max_retries=2, min_backoff=10)
    def failing():
        options = CurrentMessage.get_current_message().options
        seen.append((options.get("retries"), options.get("requeue_timestamp")))
        raise RuntimeError("again")

    worker = run(stub_broker)
    try:
        sent = failing.send()
        with pytest.raises(RuntimeError):
            stub_broker.join("requeued", timeout=10_000)
    finally:
        worker.stop()
    assert [retries for retries, _ in seen] == [None, 1, 2]
    first, second = seen[1][1], seen[2][1]
    assert sent.message_timestamp <= first < second
    assert stub_broker.dead_letters[0].record.value == sent.encode()  # the record itself is unchanged


def test_hooks_reach_middleware_however_it_was_added():
    stub_broker = StubBroker()
    added, appended = Recorder(), Recorder()
    stub_broker.add_middleware(added)
    stub_broker.emit_before("enqueue", None, 5)  # the hooks are known now...
    stub_broker.middleware.append(appended)  # ...and the list changed behind the broker's back
    stub_broker.emit_before("enqueue", None, 7)
    assert added.hooks("before_enqueue") == ["5", "7"] and appended.hooks("before_enqueue") == ["7"]
