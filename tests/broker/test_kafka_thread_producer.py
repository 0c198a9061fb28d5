"""``KafkaBroker(producer_thread=True)`` under gevent: the producer runs on a native OS thread of
its own, and the broker's promises hold as before: a send returns only once Kafka acknowledged
it (every acknowledged record is in the topic), a record too large is the message's fault, and
an unreachable Kafka is a ``BrokerUnavailable`` in bounded time. Each case runs in a fresh
interpreter that gevent has patched, as a gunicorn gevent worker is."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from kafka import KafkaConsumer

from broker.brokers.kafka import client_options
from tests.helpers import ROOT

pytestmark = pytest.mark.stack

SCRIPT = """
from gevent import monkey
monkey.patch_all()
import json, os, sys, time
import gevent
from broker import BrokerUnavailable, KafkaBroker, MessageTooLarge, actor

servers, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
broker = KafkaBroker(bootstrap_servers=servers, send_timeout_ms=3000, producer_thread=True)
out = {}
started = time.monotonic()
try:
    @actor(broker=broker, topic=topic)
    def note(n):
        pass

    threads_before = len(os.listdir("/proc/self/task"))
    jobs = [gevent.spawn(note.send_with_options, args=(i,), key=f"k{i % 7}") for i in range(count)]
    gevent.joinall(jobs, raise_error=True)
    out["producer"] = type(broker._producer).__name__
    out["threads_added"] = len(os.listdir("/proc/self/task")) - threads_before
    out["acked"] = count
    try:
        note.send("x" * 2_000_000)
    except MessageTooLarge:
        out["too_large"] = True
    note.send(-1)  # the producer still works
    broker.flush()
except BrokerUnavailable as exc:
    out["unavailable"] = str(exc)
out["seconds"] = time.monotonic() - started
broker.close()
print(json.dumps(out))
"""


def _run(servers: str, topic: str, count: int) -> dict:
    done = subprocess.run([sys.executable, "-c", SCRIPT, servers, topic, str(count)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_sends_are_acknowledged_from_a_native_thread_and_every_acknowledged_record_is_in_kafka(settings, make_topic):
    topic = make_topic(partitions=3)
    servers = settings.kafka_options["bootstrap_servers"]
    out = _run(servers, topic, 200)
    assert out["producer"] == "ThreadedProducer" and out["threads_added"] >= 1
    assert out["acked"] == 200 and out["too_large"] is True
    consumer = KafkaConsumer(topic, **client_options(**settings.kafka_options), auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=5000)  # fmt: skip
    try:
        bodies = [json.loads(record.value)["args"][0] for record in consumer]
    finally:
        consumer.close()
    assert sorted(n for n in bodies if n >= 0) == list(range(200)) and -1 in bodies


def test_an_unreachable_kafka_is_unavailable_in_bounded_time():
    out = _run("127.0.0.1:1", "nowhere", 1)
    assert "unavailable" in out and out["seconds"] < 15
