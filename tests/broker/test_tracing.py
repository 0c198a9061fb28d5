"""Trace context through the broker (broker.middleware.tracing), each test on the StubBroker and on
real Kafka (conftest.env), with the SDK's in-memory exporter (the ``traced`` fixture)."""

from __future__ import annotations

import itertools
import json
import uuid
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from broker import Call, actor
from broker.brokers.kafka.admin import read_dead_letters
from broker.brokers.stub import StubBroker
from core import tracing
from tests.helpers import wait_for

FOREIGN_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
FOREIGN_SPAN_ID = "00f067aa0ba902b7"


def traced_env(env, traced) -> None:
    tracing.trace_broker(env.broker, traced.provider)


def foreign_value(actor_name: str, topic: str, args: list) -> bytes:
    """Our envelope as another language's producer writes it: no trace headers inside."""
    envelope = {"v": 1, "message_id": uuid.uuid4().hex, "actor_name": actor_name, "topic": topic}
    envelope.update(args=args, kwargs={}, enqueued_at="2026-12-04T10:00:00.000000Z")
    return json.dumps(envelope).encode()


def record_headers(env, message_id: str) -> dict[str, bytes]:
    """The Kafka headers of the record that carried ``message_id`` on the env's topic."""
    records: list[Any]
    if isinstance(env.broker, StubBroker):
        records = [r for log in env.broker.topics[env.topic] for r in log]
    else:
        from kafka import KafkaConsumer
        from kafka.structs import TopicPartition as KTP

        consumer = KafkaConsumer(**env.broker.client_options, enable_auto_commit=False)
        try:
            tps = [KTP(env.topic, p) for p in range(3)]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            records = []

            def fetched() -> list[Any]:
                records.extend(r for rs in consumer.poll(500).values() for r in rs)
                return records

            wait_for(fetched)
        finally:
            consumer.close()
    for r in records:
        if json.loads(r.value)["message_id"] == message_id:
            return dict(r.headers)
    raise AssertionError(f"no record for {message_id}")


def test_a_sent_message_carries_its_trace_in_the_record_headers_to_the_worker_span(env, traced):
    traced_env(env, traced)
    seen = []

    @actor(broker=env.broker, topic=env.topic, actor_name=f"traced-{uuid.uuid4().hex[:6]}")
    def work(n):
        seen.append(trace.get_current_span().get_span_context())

    env.start_worker()
    with traced.tracer.start_as_current_span("request") as request_span:
        message = work.send_with_options(args=(1,), key="device-1")
    wait_for(lambda: traced.finished(f"process {env.topic}"), message="a consumer span")

    (create,) = traced.finished(f"create {env.topic}")
    (process,) = traced.finished(f"process {env.topic}")
    assert create.kind is SpanKind.PRODUCER and process.kind is SpanKind.CONSUMER
    assert create.parent.span_id == request_span.get_span_context().span_id
    trace_id = request_span.get_span_context().trace_id
    assert create.context.trace_id == process.context.trace_id == trace_id
    assert process.parent.span_id == create.context.span_id  # the worker continues the producer's span
    assert seen[0].span_id == process.context.span_id  # the actor runs inside the consumer span

    headers = record_headers(env, message.message_id)
    version, header_trace, header_span, flags = headers["traceparent"].decode().split("-")
    assert (version, header_trace, header_span) == ("00", f"{trace_id:032x}", f"{create.context.span_id:016x}")
    assert int(flags, 16) & 1  # sampled
    assert message.headers["traceparent"] == headers["traceparent"].decode()  # and inside the message

    attributes = dict(process.attributes)
    assert attributes["messaging.system"] == "kafka"
    assert attributes["messaging.destination.name"] == env.topic
    assert attributes["messaging.message.id"] == message.message_id
    assert attributes["messaging.kafka.message.key"] == "device-1"
    assert attributes["messaging.consumer.group.name"] == env.group
    assert attributes["broker.attempt"] == 1
    assert isinstance(attributes["messaging.kafka.destination.partition"], int)
    assert isinstance(attributes["messaging.kafka.message.offset"], int)


def test_each_attempt_is_a_span_of_the_same_trace_and_the_failed_one_says_retry(env, traced):
    traced_env(env, traced)
    calls = []

    @actor(broker=env.broker, topic=env.topic, max_retries=3, min_backoff=10)
    def flaky():
        calls.append(1)
        if len(calls) < 2:
            raise RuntimeError("secret payload text")

    env.start_worker()
    flaky.send()
    wait_for(lambda: len(traced.finished(f"process {env.topic}")) == 2, message="two attempts")
    first, second = sorted(traced.finished(f"process {env.topic}"), key=lambda s: s.attributes["broker.attempt"])
    (create,) = traced.finished(f"create {env.topic}")
    assert first.parent.span_id == second.parent.span_id == create.context.span_id
    assert (first.attributes["broker.attempt"], second.attributes["broker.attempt"]) == (1, 2)
    assert first.status.status_code is StatusCode.ERROR
    (event,) = first.events
    assert event.name == "retry" and event.attributes["broker.retry.delay_ms"] == 10
    assert event.attributes["exception.type"] == "builtins.RuntimeError"
    assert "secret" not in str(first.to_json())  # the error's text can hold a payload: never recorded
    assert second.status.status_code is StatusCode.UNSET


def test_a_foreign_record_with_only_a_traceparent_header_continues_its_trace(env, traced):
    traced_env(env, traced)
    done = []

    @actor(broker=env.broker, topic=env.topic, actor_name="foreign_target")
    def target(x):
        done.append(x)

    env.start_worker()
    # what a Go or Java producer writes: W3C trace context in Kafka's headers only
    value = foreign_value("foreign_target", env.topic, [7])
    traceparent = f"00-{FOREIGN_TRACE_ID}-{FOREIGN_SPAN_ID}-01".encode()
    env.broker.produce(env.topic, b"k", value, [("traceparent", traceparent)])(10)
    wait_for(lambda: traced.finished(f"process {env.topic}"), message="a consumer span")
    (process,) = traced.finished(f"process {env.topic}")
    assert f"{process.context.trace_id:032x}" == FOREIGN_TRACE_ID
    assert f"{process.parent.span_id:016x}" == FOREIGN_SPAN_ID and process.parent.is_remote
    assert done == [7]


def test_the_dead_letter_keeps_the_original_records_trace_headers(env, traced):
    traced_env(env, traced)

    @actor(broker=env.broker, topic=env.topic, throws=(ValueError,))
    def doomed():
        raise ValueError("no")

    env.start_worker()
    message = doomed.send()
    wait_for(lambda: len(env.dead_letters()) == 1, message="a dead letter")
    if isinstance(env.broker, StubBroker):
        headers = dict(env.broker.dead_letters[0].record.headers)
    else:
        (letter,) = read_dead_letters(env.broker.client_options, env.broker.dead_letter_topic, timeout_s=10)
        headers = dict(letter.headers)
    assert headers["traceparent"].decode() == message.headers["traceparent"]
    (process,) = traced.finished(f"process {env.topic}")
    assert [e.name for e in process.events] == ["dead_letter"]


def test_an_unsampled_trace_stays_unsampled_in_the_worker(env, traced):
    """Parent-based sampling: the API's decision travels in traceparent's flags."""
    traced_env(env, traced)
    done = []

    @actor(broker=env.broker, topic=env.topic, actor_name="unsampled_target")
    def target():
        done.append(trace.get_current_span().get_span_context())

    env.start_worker()
    value = foreign_value("unsampled_target", env.topic, [])
    unsampled = f"00-{FOREIGN_TRACE_ID}-{FOREIGN_SPAN_ID}-00".encode()
    env.broker.produce(env.topic, None, value, [("traceparent", unsampled)])(10)
    wait_for(lambda: done, message="the message ran")
    assert not done[0].trace_flags.sampled and f"{done[0].trace_id:032x}" == FOREIGN_TRACE_ID
    assert traced.finished(f"process {env.topic}") == []


def test_a_batch_gets_a_span_linking_every_message_with_its_work_below_it(traced):
    broker = StubBroker()
    tracing.trace_broker(broker, traced.provider)
    inside = []

    @actor(broker=broker, topic="batch-topic", actor_name="batched_actor")
    def one(x):
        inside.append(("one", x))

    @one.batched(max_size=10)
    def many(calls: list[Call]):
        inside.append(("many", trace.get_current_span().get_span_context()))

    messages = [one.send_with_options(args=(i,), key=f"k{i}") for i in range(4)]
    from broker import Worker

    worker = Worker(broker, topics=["batch-topic"], worker_threads=1, commit_interval_ms=20)
    worker.start()
    try:
        broker.join("batch-topic", timeout=10000)
    finally:
        worker.stop()
    batches = [s for s in traced.finished("process batch-topic") if "messaging.batch.message_count" in s.attributes]
    assert batches, [s.attributes for s in traced.finished()]
    carried = sum(b.attributes["messaging.batch.message_count"] for b in batches)
    linked = {link.context.span_id for b in batches for link in b.links}
    singles = [s for s in traced.finished("process batch-topic") if "messaging.message.id" in s.attributes]
    assert {s.attributes["messaging.message.id"] for s in singles} == {m.message_id for m in messages}
    assert carried == len(linked) <= len(singles)
    batch_contexts = {b.context.span_id for b in batches}
    assert all(ctx.span_id in batch_contexts for kind, ctx in inside if kind == "many")


def test_a_delayed_message_keeps_its_trace_through_the_delay_topics(delay_env, traced):
    traced_env(delay_env, traced)
    done = []

    @actor(broker=delay_env.broker, topic=delay_env.topic, actor_name="delayed_traced")
    def later():
        done.append(1)

    delay_env.start_worker()
    with traced.tracer.start_as_current_span("request") as request_span:
        later.send_with_options(delay=300)
    wait_for(lambda: traced.finished(f"process {delay_env.topic}"), timeout=30, message="the delayed message ran")
    (create,) = traced.finished(f"create {delay_env.topic}")
    (process,) = traced.finished(f"process {delay_env.topic}")
    assert process.context.trace_id == request_span.get_span_context().trace_id
    assert process.parent.span_id == create.context.span_id


def test_a_retry_sent_as_a_delayed_message_stays_in_the_trace(delay_env, traced):
    traced_env(delay_env, traced)
    calls = []

    @actor(broker=delay_env.broker, topic=delay_env.topic, ordered=False, max_retries=2, min_backoff=200)
    def unordered():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("once")

    delay_env.start_worker()
    with traced.tracer.start_as_current_span("request") as request_span:
        unordered.send()
    wait_for(lambda: len(traced.finished(f"process {delay_env.topic}")) == 2, timeout=30, message="two attempts")
    attempts = sorted(traced.finished(f"process {delay_env.topic}"), key=lambda s: s.attributes["broker.attempt"])
    assert [s.attributes["broker.attempt"] for s in attempts] == [1, 2]
    assert {s.context.trace_id for s in attempts} == {request_span.get_span_context().trace_id}
    assert attempts[0].events[0].name == "retry"


def test_each_step_of_a_pipeline_is_a_child_of_the_step_before(traced):
    from broker import Worker, pipeline

    broker = StubBroker()
    tracing.trace_broker(broker, traced.provider)

    @actor(broker=broker, topic="pipe-topic")
    def add(x, y):
        return x + y

    @actor(broker=broker, topic="pipe-topic")
    def double(x):
        return 2 * x

    worker = Worker(broker, topics=["pipe-topic"], worker_threads=2, commit_interval_ms=20)
    worker.start()
    try:
        with traced.tracer.start_as_current_span("request") as request_span:
            pipeline([add.message(1, 2), double.message(), add.message(10)], broker=broker).run()
        wait_for(lambda: len(traced.finished("process pipe-topic")) == 3, timeout=10, message="three steps")
    finally:
        worker.stop()
    steps = sorted(traced.finished("process pipe-topic"), key=lambda s: s.start_time)
    creates = {s.context.span_id: s for s in traced.finished("create pipe-topic")}
    assert {s.context.trace_id for s in steps} == {request_span.get_span_context().trace_id}
    for before, after in itertools.pairwise(steps):
        create = creates[after.parent.span_id]  # the next step was sent inside the step before
        assert create.parent.span_id == before.context.span_id


def test_a_dependency_failure_is_marked_as_a_wait_not_an_attempt(traced):
    from broker import Worker

    broker = StubBroker()
    tracing.trace_broker(broker, traced.provider)
    calls = []

    class DatabaseAway(Exception):
        pass

    @actor(broker=broker, topic="dep-topic", transient=(DatabaseAway,))
    def needs_db():
        calls.append(1)
        if len(calls) == 1:
            raise DatabaseAway("down")

    worker = Worker(broker, topics=["dep-topic"], worker_threads=1, dependency_min_backoff_ms=10)
    worker.start()
    try:
        needs_db.send()
        wait_for(lambda: len(traced.finished("process dep-topic")) == 2, timeout=10, message="two tries")
    finally:
        worker.stop()
    first, second = sorted(traced.finished("process dep-topic"), key=lambda s: s.start_time)
    assert [e.name for e in first.events] == ["dependency_wait"]
    assert first.attributes["broker.attempt"] == second.attributes["broker.attempt"] == 1  # not counted
    assert second.events == ()
