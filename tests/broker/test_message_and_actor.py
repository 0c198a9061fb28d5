"""Messages and actor declaration (no broker I/O)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

import broker as broker_module
from broker import DecodeError, DuplicateActor, Message, NoBrokerConfigured, StubBroker, actor, get_broker


def test_messages_round_trip_through_their_json_encoding():
    message = Message(
        actor_name="a", topic="t", args=(1, "x", {"k": [1.5]}), kwargs={"n": None}, key="d1", headers={"r": "1"}
    )
    decoded = Message.decode(message.encode())
    assert decoded == message
    assert decoded.enqueued_at.tzinfo is not None


def test_the_wire_format_is_versioned_json():
    doc = json.loads(Message(actor_name="a", topic="t", args=(1,)).encode())
    assert doc["v"] == 1
    assert set(doc) == {
        "v", "message_id", "actor_name", "topic", "key", "args", "kwargs", "options", "headers", "enqueued_at",
    }  # fmt: skip
    assert doc["enqueued_at"].endswith("Z")
    assert dt.datetime.fromisoformat(doc["enqueued_at"])


@pytest.mark.parametrize(
    "data, error",
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"v": 2}', "version"),
        (b'{"v": 1, "actor_name": "a"}', "lacks"),
        (b'{"v": 1, "message_id": "m", "actor_name": "a", "topic": "t", "args": {}, "kwargs": {}, '
         b'"enqueued_at": "2026-01-01T00:00:00Z"}', "args must be a list"),
        (b'{"v": 1, "message_id": "m", "actor_name": "a", "topic": "t", "args": [], "kwargs": {}, '
         b'"enqueued_at": "yesterday"}', "malformed"),
    ],
)  # fmt: skip
def test_decoding_bad_bytes_raises_a_decode_error_naming_the_problem(data, error):
    with pytest.raises(DecodeError, match=error):
        Message.decode(data)


def test_the_bare_decorator_registers_a_function_that_still_runs_in_process():
    stub = StubBroker()

    @actor(broker=stub)
    def double(x):
        return 2 * x

    assert double(21) == 42
    assert stub.get_actor("double") is double
    assert double.topic == "default"


def test_unknown_actor_options_fail_at_decoration_with_the_valid_ones_listed():
    with pytest.raises(ValueError, match=r"unknown option.*max_retry.*valid options are.*max_retries"):

        @actor(broker=StubBroker(), max_retry=3)
        def typo():
            pass


def test_two_actors_with_one_name_are_an_error():
    stub = StubBroker()

    @actor(broker=stub, actor_name="same")
    def first():
        pass

    with pytest.raises(DuplicateActor):

        @actor(broker=stub, actor_name="same")
        def second():
            pass


def test_there_is_no_silent_default_broker(monkeypatch):
    monkeypatch.setattr(broker_module.broker, "_broker", None)
    with pytest.raises(NoBrokerConfigured):
        get_broker()


def test_the_key_option_derives_the_kafka_key_from_the_arguments():
    stub = StubBroker()

    @actor(broker=stub, key=lambda event: event["device_id"])
    def handle(event):
        pass

    message = handle.send({"device_id": "d-7"})
    assert message.key == "d-7"
    (record,) = [r for part in stub.topics["default"] for r in part]
    assert record.key == b"d-7"


def test_the_stub_brokers_join_reraises_the_exception_of_a_dead_lettered_message():
    from broker import Worker

    stub = StubBroker()

    @actor(broker=stub, max_retries=0)
    def fails():
        raise LookupError("boom")

    worker = Worker(stub, worker_threads=2, commit_interval_ms=20)
    worker.start()
    try:
        fails.send()
        with pytest.raises(LookupError, match="boom"):
            stub.join("default", timeout=10_000)
        worker.join(timeout_ms=10_000)
        assert len(stub.dead_letters) == 1
    finally:
        worker.stop()


def test_a_copy_has_headers_of_its_own():
    original = Message(actor_name="a", topic="t", headers={"traceparent": "00-1-2-01"})
    copy = original.copy(options={"eta": 1})
    copy.headers["traceparent"] = "00-3-4-01"
    assert original.headers == {"traceparent": "00-1-2-01"}
