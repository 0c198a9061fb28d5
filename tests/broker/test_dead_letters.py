"""What a dead letter says is written and read in one module (``broker.dead_letters``), so the
writers (worker, forwarder, operator skip) and the readers (commands, console) agree."""

from __future__ import annotations

from broker import Message
from broker.consumer import Record
from broker.dead_letters import (
    DLQ_HEADER_PREFIX,
    REASON_UNKNOWN_ACTOR,
    REPLAY_HEADER,
    dead_letter_headers,
    describe_dead_letter,
    replay_headers,
)


def _dead_letter(offset: int = 7) -> Record:
    message = Message(actor_name="ship", topic="orders", args=(1,), headers={"request_id": "r-1"})
    original = Record("orders", 2, 41, b"k", message.encode(), [("traceparent", b"00-ab")], 1_700_000_000_000)
    headers = dead_letter_headers(
        original, KeyError("ship"), message=message, attempts=0, host="w1", reason=REASON_UNKNOWN_ACTOR
    )
    return Record("orders-dlq", 0, offset, original.key, original.value, original.headers + headers, 0)


def test_the_headers_a_writer_builds_are_what_a_reader_describes():
    summary = describe_dead_letter(_dead_letter())
    assert summary["reason"] == REASON_UNKNOWN_ACTOR
    assert summary["actor"] == "ship" and summary["request_id"] == "r-1"
    assert summary["error"] == "builtins.KeyError: 'ship'"
    assert (summary["original.topic"], summary["original.partition"], summary["original.offset"]) == (
        "orders",
        "2",
        "41",
    )
    assert (summary["dlq_partition"], summary["dlq_offset"], summary["key"]) == (0, 7, "k")
    assert "body" not in summary and describe_dead_letter(_dead_letter(), show_body=True)["body"]["args"] == [1]


def test_a_replay_drops_the_error_headers_keeps_the_others_and_says_where_it_came_from():
    headers = replay_headers(_dead_letter(offset=9), "orders-dlq")
    assert not [k for k, _ in headers if k.startswith(DLQ_HEADER_PREFIX)]
    assert headers == [("traceparent", b"00-ab"), (REPLAY_HEADER, b"orders-dlq:0:9")]
