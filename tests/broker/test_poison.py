"""No record can stop a worker: whatever bytes a record holds, and whatever fails in the worker
itself, the record ends in the dead-letter topic with its reason and the good ones flow on.
Each test runs on the StubBroker and on real Kafka (see conftest.env)."""

from __future__ import annotations

import json

import pytest

from broker import Middleware, actor
from tests.helpers import wait_for


def _envelope(**changes) -> bytes:
    doc = {"v": 1, "message_id": "m1", "actor_name": "note", "topic": "t", "key": "k", "args": [0],
           "kwargs": {}, "options": {}, "headers": {}, "enqueued_at": "2026-01-01T00:00:00Z"}  # fmt: skip
    doc.update(changes)
    return json.dumps(doc).encode()


POISON = {
    "tombstone": (None, "undecodable"),
    "not json": (b"\xff not json", "undecodable"),
    "a JSON list": (b"[1, 2]", "undecodable"),
    "another format version": (_envelope(v=2), "undecodable"),
    "headers not strings": (_envelope(headers={"request_id": 7}), "undecodable"),
    "headers a list": (_envelope(headers=["x"]), "undecodable"),
    "key not a string": (_envelope(key=5), "undecodable"),
    "options a list": (_envelope(options=[1]), "undecodable"),
    "unknown actor": (_envelope(actor_name="ghost"), "unknown_actor"),
}


def test_every_kind_of_poison_is_dead_lettered_with_its_reason_and_the_worker_keeps_going(env):
    seen = []

    @actor(broker=env.broker, topic=env.topic)
    def note(n):
        seen.append(n)

    worker = env.start_worker()
    for value, _ in POISON.values():
        env.produce_raw(value, key=b"same")  # one key: each bad record is in front of the good one
    note.send_with_options(args=(1,), key="same")
    wait_for(lambda: seen == [1], timeout=30, message=f"the good message ran after the poison: {seen}")
    letters = wait_for(lambda: len(env.dead_letters()) == len(POISON) and env.dead_letters(), timeout=30)
    assert [(d["raw_value"], d["reason"]) for d in letters] == list(POISON.values())
    assert all(d["attempts"] == "0" for d in letters)
    assert worker.failure is None and not worker.wait(0)
    wait_for(lambda: env.committed() == {p: e for p, e in env.end_offsets().items() if e}, message="all committed")


class _BrokenOnEleven(Middleware):
    """A middleware with a bug that only one message triggers."""

    def after_process_message(self, broker, message, *, result=None, exception=None):
        if message.args == (11,):
            raise RuntimeError("bug in a middleware")


def test_a_failure_of_the_worker_itself_dead_letters_the_record_instead_of_stopping(env):
    seen = []
    env.broker.add_middleware(_BrokenOnEleven())

    @actor(broker=env.broker, topic=env.topic)
    def note(n):
        seen.append(n)

    worker = env.start_worker()
    for n in (10, 11, 12):
        note.send_with_options(args=(n,), key="same")
    wait_for(lambda: seen == [10, 11, 12], message=str(seen))
    (letter,) = wait_for(lambda: env.dead_letters())
    assert letter["reason"] == "worker_error" and letter["exception.type"] == "builtins.RuntimeError"
    assert "bug in a middleware" in letter["exception.traceback"]
    assert worker.failure is None and not worker.wait(0)


@pytest.mark.parametrize("value", [None, b"", b"\x00", b"{}", b"null"])
def test_decode_raises_only_decode_errors(value):
    from broker import DecodeError, Message

    with pytest.raises(DecodeError):
        Message.decode(value)
