"""Where the "Coming from Dramatiq" table (docs/tasks.md) says "the same", it is (issue 23, items 2-5):
each behaviour as Dramatiq 2.2 has it, checked by our own tests (on Kafka too where Kafka is
involved: conftest.env)."""

from __future__ import annotations

import datetime as dt
import logging
import time

import pytest

from broker import DuplicateActor, QueueJoinTimeout, StubBroker, Worker, actor, pipeline
from broker.delays import now_ms
from broker.results import ResultFailure, Results
from broker.results.backends import StubBackend
from tests.helpers import wait_for

# ---------------------------------------------------------------- StubBroker.flush / flush_all


@pytest.mark.parametrize("flush", ["flush_all", "flush"])
def test_flushing_the_stub_under_a_live_worker_keeps_it_consuming(flush):
    broker = StubBroker()
    ran = []

    @actor(broker=broker, topic="work")
    def record(n):
        ran.append(n)

    worker = Worker(broker, worker_threads=1)
    worker.start()
    try:
        record.send(1)
        broker.join("work", timeout=10_000)
        broker.flush_all() if flush == "flush_all" else broker.flush("work")
        record.send(2)
        broker.join("work", timeout=10_000)
        assert ran == [1, 2]
        assert worker.failure is None
    finally:
        worker.stop()


def test_flush_drops_messages_not_yet_consumed_and_join_returns():
    broker = StubBroker()
    ran = []

    @actor(broker=broker, topic="later")
    def record(n):
        ran.append(n)

    for n in range(3):
        record.send(n)
    broker.flush("later")
    worker = Worker(broker)
    worker.start()
    try:
        broker.join("later", timeout=10_000)  # nothing left to process
        record.send(99)
        broker.join("later", timeout=10_000)
    finally:
        worker.stop()
    assert ran == [99]


def test_flush_all_forgets_dead_letters():
    broker = StubBroker()

    @actor(broker=broker, topic="doomed", max_retries=0)
    def doomed():
        raise ValueError("no")

    worker = Worker(broker)
    worker.start()
    try:
        doomed.send()
        with pytest.raises(ValueError):
            broker.join("doomed", timeout=10_000)
        assert len(broker.dead_letters) == 1
        broker.flush_all()
        assert broker.dead_letters == []
        broker.join("doomed", timeout=10_000)  # nothing to re-raise any more
        doomed.send()  # and the next failure is seen again
        with pytest.raises(ValueError):
            broker.join("doomed", timeout=10_000)
    finally:
        worker.stop()


# ---------------------------------------------------------------- retries due now run now


def test_a_zero_backoff_retry_runs_without_waiting_for_the_next_poll(env):
    attempts = []

    @actor(broker=env.broker, topic=env.topic, max_retries=5, min_backoff=0, max_backoff=0)
    def flaky():
        attempts.append(time.monotonic())
        if len(attempts) < 4:
            raise RuntimeError("again")

    # a poll that waits 4 s for records: retries released only between polls would take 12 s
    env.start_worker(poll_timeout_ms=4000)
    flaky.send()
    wait_for(lambda: attempts, message="the first attempt")
    wait_for(lambda: len(attempts) >= 4, timeout=3.5, message="three retries within one poll timeout")
    assert len(attempts) == 4


# ---------------------------------------------------------------- throws is an expected outcome


def test_an_exception_the_actor_throws_is_logged_at_info_without_an_error_line(caplog):
    broker = StubBroker()

    @actor(broker=broker, topic="strict", throws=(KeyError,))
    def strict():
        raise KeyError("missing")

    worker = Worker(broker)
    worker.start()
    try:
        with caplog.at_level(logging.DEBUG):
            strict.send()
            with pytest.raises(KeyError):
                broker.join("strict", timeout=10_000)
    finally:
        worker.stop()
    assert len(broker.dead_letters) == 1  # still dead-lettered, without retries, as in Dramatiq
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert any(r.levelno == logging.INFO and "expected exception" in r.getMessage() for r in caplog.records)


def test_an_unexpected_exception_is_still_logged_as_an_error(caplog):
    broker = StubBroker()

    @actor(broker=broker, topic="loose", throws=(KeyError,), max_retries=0)
    def loose():
        raise ValueError("surprise")

    worker = Worker(broker)
    worker.start()
    try:
        with caplog.at_level(logging.INFO):
            loose.send()
            with pytest.raises(ValueError):
                broker.join("loose", timeout=10_000)
    finally:
        worker.stop()
    assert any(r.levelno == logging.ERROR and "dead-lettered" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- results


def test_a_result_backend_reads_by_message_or_by_its_id(env):
    backend = StubBackend()
    env.broker.add_middleware(Results(backend=backend))

    @actor(broker=env.broker, topic=env.topic, store_results=True)
    def add(x, y):
        return x + y

    env.start_worker()
    message = add.send(1, 2)
    assert backend.get_result(message, block=True, timeout=20_000) == 3  # as Dramatiq's backends
    assert backend.get_result(message.message_id) == 3


def test_a_result_failure_reads_as_dramatiqs():
    backend = StubBackend()
    backend.store_exception(_message(), RuntimeError("the relay refused"), 60_000)
    with pytest.raises(ResultFailure) as failure:
        backend.get_result(_message())
    assert str(failure.value) == "actor raised RuntimeError: the relay refused"
    assert failure.value.orig_exc_type == "RuntimeError"
    assert failure.value.orig_exc_msg == "the relay refused"


def _message():
    broker = StubBroker()

    @actor(broker=broker, actor_name="relay")
    def relay():
        pass

    return relay.message().copy(message_id="fixed-id")


# ---------------------------------------------------------------- errors


def test_a_duplicate_actor_is_also_a_value_error():
    broker = StubBroker()

    @actor(broker=broker, actor_name="twice")
    def first():
        pass

    with pytest.raises(ValueError) as raised:

        @actor(broker=broker, actor_name="twice")
        def second():
            pass

    assert isinstance(raised.value, DuplicateActor)


def test_a_join_timeout_is_a_queue_join_timeout_and_a_timeout_error():
    broker = StubBroker()

    @actor(broker=broker, topic="never-consumed-by-anyone")
    def idle():
        pass

    worker = Worker(broker, topics=["unrelated"])
    worker.start()
    try:
        broker.consume(["never-consumed-by-anyone"], "nobody-polls", listener=worker).poll(0, 1)
        idle.send()
        with pytest.raises(QueueJoinTimeout) as raised:
            broker.join("never-consumed-by-anyone", timeout=100)
        assert isinstance(raised.value, TimeoutError)
    finally:
        worker.stop()


# ---------------------------------------------------------------- delays as timedelta, eta


def test_a_delay_may_be_a_timedelta():
    broker = StubBroker()
    ran = []

    @actor(broker=broker, topic="reminders")
    def remind(text):
        ran.append((text, now_ms()))

    worker = Worker(broker)
    worker.start()
    try:
        sent = remind.send_with_options(args=("later",), delay=dt.timedelta(milliseconds=400))
        assert 0 < sent.options["eta"] - now_ms() <= 400
        broker.join("reminders", timeout=10_000)
    finally:
        worker.stop()
    assert ran[0][1] >= sent.options["eta"]


def test_eta_may_be_an_aware_datetime_or_a_timedelta_and_is_carried_in_epoch_ms():
    broker = StubBroker()

    @actor(broker=broker)
    def remind():
        pass

    moment = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert remind.message_with_options(eta=moment).options["eta"] == int(moment.timestamp() * 1000)
    soon = remind.message_with_options(eta=dt.timedelta(seconds=5)).options["eta"]
    assert 4_000 <= soon - now_ms() <= 5_000
    with pytest.raises(ValueError, match="aware"):
        remind.message_with_options(eta=dt.datetime(2030, 1, 1))


def test_each_pipeline_step_waits_its_own_delay():
    broker = StubBroker()
    broker.add_middleware(Results(backend=StubBackend()))
    ran = []

    @actor(broker=broker, topic="steps", store_results=True)
    def step(label, previous=None):
        ran.append((label, now_ms()))
        return label

    worker = Worker(broker)
    worker.start()
    try:
        pipe = pipeline(
            [step.message("a"), step.message_with_options(args=("b",), delay=dt.timedelta(milliseconds=600))],
            broker=broker,
        ).run()
        assert pipe.get_result(block=True, timeout=10_000) == "b"
    finally:
        worker.stop()
    (first, at_a), (second, at_b) = ran
    assert (first, second) == ("a", "b")
    assert at_b - at_a >= 600


@pytest.mark.stack
def test_a_redis_result_backend_keeps_results_under_its_namespace(redis_client, unique):
    from broker.results.backends import RedisBackend

    backend = RedisBackend(client=redis_client, namespace=f"ns-{unique}")
    message = _message()
    backend.store_result(message, {"ok": True}, 60_000)
    key = backend.build_message_key(message)
    assert key == f"ns-{unique}:fixed-id" and redis_client.exists(key)
    assert backend.get_result(message) == {"ok": True}
    assert RedisBackend(client=redis_client, namespace=f"other-{unique}").build_message_key(message) != key
    redis_client.delete(key)
