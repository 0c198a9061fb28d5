"""Where the "Coming from Dramatiq" table (docs/tasks.md) says "the same", it is (issue 23, items 2-5):
each behaviour as Dramatiq 2.2 has it, checked by our own tests (on Kafka too where Kafka is
involved: conftest.env). Long because it is one short test or more per "the same" row.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import time

import pytest

from broker import DuplicateActor, Message, QueueJoinTimeout, QueueNotFound, StubBroker, Worker, actor, pipeline
from broker import worker as broker_worker
from broker.delays import now_ms
from broker.results import ResultFailure, Results
from broker.results.backends import StubBackend
from tests.helpers import wait_for

# Workers here poll and commit every 20 ms (the defaults: 100 and 200 ms): a join sees the commit
# that much sooner; nothing below is about those intervals.
QUICK = {"poll_timeout_ms": 20, "commit_interval_ms": 20}

# ---------------------------------------------------------------- StubBroker.flush / flush_all


@pytest.mark.parametrize("flush", ["flush_all", "flush"])
def test_flushing_the_stub_under_a_live_worker_keeps_it_consuming(flush):
    broker = StubBroker()
    ran = []

    @actor(broker=broker, topic="work")
    def record(n):
        ran.append(n)

    worker = Worker(broker, worker_threads=1, **QUICK)
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
    worker = Worker(broker, **QUICK)
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

    worker = Worker(broker, **QUICK)
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

    # a poll that waits 4 s for records: retries released only between polls would take three
    # poll timeouts (12 s); stop() wakes the stub's poll, so its 4 s cost nothing at the end
    poll_s = 4.0
    env.start_worker(poll_timeout_ms=int(poll_s * 1000))
    flaky.send()
    wait_for(lambda: attempts, message="the first attempt")
    wait_for(lambda: len(attempts) >= 4, timeout=poll_s - 0.5, message="three retries within one poll timeout")
    assert len(attempts) == 4


# ---------------------------------------------------------------- throws is an expected outcome


def test_an_exception_the_actor_throws_is_logged_at_info_without_an_error_line(caplog):
    broker = StubBroker()

    @actor(broker=broker, topic="strict", throws=(KeyError,))
    def strict():
        raise KeyError("missing")

    worker = Worker(broker, **QUICK)
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

    worker = Worker(broker, **QUICK)
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

    worker = Worker(broker, topics=["unrelated"], **QUICK)
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

    worker = Worker(broker, **QUICK)
    worker.start()
    try:
        sent = remind.send_with_options(args=("later",), delay=dt.timedelta(milliseconds=200))
        assert 0 < sent.options["eta"] - now_ms() <= 200
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

    worker = Worker(broker, **QUICK)
    worker.start()
    try:
        pipe = pipeline(
            [step.message("a"), step.message_with_options(args=("b",), delay=dt.timedelta(milliseconds=300))],
            broker=broker,
        ).run()
        assert pipe.get_result(block=True, timeout=10_000) == "b"
    finally:
        worker.stop()
    (first, at_a), (second, at_b) = ran
    assert (first, second) == ("a", "b")
    assert at_b - at_a >= 300


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


# ---------------------------------------------------------------- broker.consume(queue_name)


def _next_message(consumer, timeout: float = 30.0):
    """The next MessageProxy a QueueConsumer yields (it yields None while idle, e.g. joining)."""
    return wait_for(lambda: next(consumer), timeout=timeout, message="a message from the consumer")


def test_consume_without_a_listener_yields_messages_to_ack_or_nack_and_commits_only_those(env):
    @actor(broker=env.broker, topic=env.topic)
    def step(n):
        pass

    sent = [step.send_with_options(args=(n,), key="one-key") for n in range(3)]  # one partition, in order
    consumer = env.broker.consume(env.topic, group_id=env.group, prefetch=10, timeout=200)
    try:
        first, second, third = (_next_message(consumer) for _ in range(3))
        assert [p.message.message_id for p in (first, second, third)] == [m.message_id for m in sent]
        assert repr(first.message) in repr(first) and str(first) == str(sent[0])
        partition = first.record.partition
        consumer.ack(first)
        consumer.nack(second)  # dead-lettered, then committed past
        assert env.committed().get(partition) == first.record.offset + 2  # the unacked third holds the commit
    finally:
        consumer.close()
    letters = env.dead_letters()
    assert [(d["message_id"], d["reason"]) for d in letters] == [(sent[1].message_id, "failed")]

    # the third was handed out but never acked: the group's next consumer gets it again
    again = env.broker.consume(env.topic, group_id=env.group, timeout=200)
    try:
        redelivered = _next_message(again)
        assert redelivered.message.message_id == sent[2].message_id
        again.ack(redelivered)
        assert env.committed().get(partition) == third.record.offset + 1
    finally:
        again.close()


def test_consume_dead_letters_a_record_that_is_not_a_message_and_goes_on(env):
    @actor(broker=env.broker, topic=env.topic)
    def step():
        pass

    env.produce_raw(b"not json", key=b"k")
    sent = step.send_with_options(key="k")
    consumer = env.broker.consume(env.topic, group_id=env.group, timeout=200)
    try:
        proxy = _next_message(consumer)
        assert proxy.message.message_id == sent.message_id
        consumer.ack(proxy)
    finally:
        consumer.close()
    assert [d["reason"] for d in env.dead_letters()] == ["undecodable"]
    assert env.committed() == {p: o for p, o in env.end_offsets().items() if o}


def test_consume_of_a_topic_that_does_not_exist_raises_queue_not_found(env, unique):
    with pytest.raises(QueueNotFound):
        env.broker.consume(f"missing-{unique}")


# ---------------------------------------------------------------- the stub's queues and dead letters by topic


def test_the_stubs_queues_view_reads_without_taking_and_counts_what_the_group_has_not_done():
    broker = StubBroker()
    ran = []

    @actor(broker=broker, topic="work")
    def record(n):
        ran.append(n)

    with pytest.raises(KeyError):
        broker.queues["never-used"]
    assert "work" in broker.queues  # declared by its actor, nothing written yet
    sent = record.send(1)
    view = broker.queues["work"]
    assert view.qsize() == 1 and view.unfinished_tasks == 1  # no group consumes it yet
    assert Message.decode(view.get(timeout=1)) == sent
    with pytest.raises(queue.Empty):
        view.get(timeout=0.05)  # read once by the view...
    view.put(record.message_with_options(args=(2,), key="k").encode())  # ...and a record written raw
    worker = Worker(broker, worker_threads=2, **QUICK)
    worker.start()
    try:
        broker.join("work", timeout=10_000)
        worker.join()
        assert sorted(ran) == [1, 2]  # the view's get took nothing from the workers
        assert view.qsize() == 0 and view.unfinished_tasks == 0
        keyed = [r for log in broker.topics["work"] for r in log if r.key == b"k"]
        assert len(keyed) == 1  # put keyed the raw message by its key, as send does
    finally:
        worker.stop()
    record.send(3)
    broker.flush_all()
    assert broker.queues["work"].qsize() == 0


def test_the_stubs_dead_letters_by_topic_are_a_view_of_its_dead_letters():
    broker = StubBroker()

    @actor(broker=broker, topic="a", max_retries=0)
    def fails_a():
        raise ValueError("a")

    @actor(broker=broker, topic="b", max_retries=0)
    def fails_b():
        raise ValueError("b")

    worker = Worker(broker, worker_threads=1, **QUICK)
    worker.start()
    try:
        sent = []
        for failing in (fails_a, fails_b, fails_a):  # one at a time: dead-lettered in this order
            sent.append(failing.send())
            wait_for(lambda: sent[-1] in [d.message for d in broker.dead_letters])
        first, second, third = sent
    finally:
        worker.stop()
    assert [d.message for d in broker.dead_letters] == [first, second, third]  # in the order they came
    by_topic = broker.dead_letters_by_queue
    assert [d.message for d in by_topic["a"]] == [first, third]
    assert [d.message for d in by_topic["b"]] == [second]
    assert set(by_topic) == {"a", "b"} and len(by_topic["never"]) == 0
    del by_topic["a"][0]
    assert [d.message for d in broker.dead_letters] == [second, third]
    broker.flush_all()
    assert broker.dead_letters == [] and len(broker.dead_letters_by_queue["b"]) == 0


# ---------------------------------------------------------------- a foreign eta, QUEUE_PREFETCH


def test_a_message_whose_eta_is_not_epoch_ms_runs_now_with_dramatiqs_warning(env, caplog):
    ran = []

    @actor(broker=env.broker, topic=env.topic)
    def record():
        ran.append(True)

    with pytest.raises(ValueError):
        record.send_with_options(eta="soon")  # our senders refuse it...
    env.start_worker()
    with caplog.at_level(logging.WARNING, logger="broker.worker"):
        env.produce_raw(record.message_with_options(eta="soon").encode())  # ...another producer may not
        wait_for(lambda: ran, message="the message ran")
    assert any("Invalid eta value for message" in r.getMessage() for r in caplog.records)
    assert env.dead_letters() == []


def test_queue_prefetch_is_the_default_of_max_buffered_per_partition(monkeypatch):
    broker = StubBroker()
    assert Worker(broker).max_buffered == broker_worker.QUEUE_PREFETCH == 2000
    monkeypatch.setattr(broker_worker, "QUEUE_PREFETCH", 20)
    assert Worker(broker).max_buffered == 20  # read when a worker is built, as Dramatiq's
    assert Worker(broker, max_buffered_per_partition=5).max_buffered == 5


# ---------------------------------------------------------------- use_namespace_prefix_keys


@pytest.mark.parametrize("kind", ["stub", pytest.param("redis", marks=pytest.mark.stack)])
def test_namespace_prefix_keys_name_topic_actor_and_id_and_results_are_found_by_message(kind, request, unique):
    from broker.results.backends import RedisBackend

    namespace = f"ns-{unique}"
    if kind == "stub":
        backend = StubBackend(namespace=namespace, use_namespace_prefix_keys=True)
    else:
        redis_client = request.getfixturevalue("redis_client")
        backend = RedisBackend(client=redis_client, namespace=namespace, use_namespace_prefix_keys=True)
    broker = StubBroker()
    broker.add_middleware(Results(backend=backend))

    @actor(broker=broker, topic="sums", store_results=True)
    def add(x, y):
        return x + y

    worker = Worker(broker, **QUICK)
    worker.start()
    try:
        sent = add.send(1, 2)
        assert backend.get_result(sent, block=True, timeout=10_000) == 3
    finally:
        worker.stop()
    key = backend.build_message_key(sent)
    assert key == f"{namespace}:sums:add:{sent.message_id}"
    if kind == "redis":
        assert redis_client.exists(key)
        redis_client.delete(key)
    with pytest.raises(TypeError, match="pass the message"):
        backend.get_result(sent.message_id)  # an id alone does not name the key any more
    assert StubBackend(namespace=namespace).build_message_key(sent) == f"{namespace}:{sent.message_id}"  # the default
