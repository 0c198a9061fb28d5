"""Periodic tasks (issue 12, item 6): cron expressions, and schedulers that enqueue each run once."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from broker import BrokerUnavailable, StubBroker, actor
from broker.cron import Cron
from broker.message import Message
from broker.scheduler import HEADER_RUN_AT, RedisScheduleStore, Scheduler, StubScheduleStore


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("expression", "now", "expected"),
    [
        ("*/5 * * * *", "2026-11-25 14:07:31", "2026-11-25 14:05:00"),
        ("*/5 * * * *", "2026-11-25 14:05:00", "2026-11-25 14:05:00"),
        ("0 2 * * *", "2026-11-25 01:59:59", "2026-11-24 02:00:00"),
        ("30 9 * * mon-fri", "2026-11-29 12:00:00", "2026-11-27 09:30:00"),  # Sunday: back to Friday
        ("0 0 1 jan *", "2026-11-25 00:00:00", "2026-01-01 00:00:00"),
        ("0 12 29 2 *", "2026-11-25 00:00:00", "2024-02-29 12:00:00"),
        ("0 0 13 * 5", "2026-11-25 00:00:00", "2026-11-20 00:00:00"),  # day 13 OR a Friday, as cron
        ("*/10 * * * * *", "2026-11-25 14:07:31", "2026-11-25 14:07:30"),  # seconds first
        ("@hourly", "2026-11-25 14:07:31", "2026-11-25 14:00:00"),
        ("0 0 * * 7", "2026-11-25 00:00:00", "2026-11-22 00:00:00"),  # 7 is Sunday too
    ],
)
def test_cron_previous_is_the_latest_time_at_or_before_now(expression, now, expected):
    assert Cron.parse(expression).previous(at(now)) == at(expected)


@pytest.mark.parametrize("bad", ["* * * *", "60 * * * *", "* 24 * * *", "*/0 * * * *", "a b c d e", "5-1 * * * *", 5])
def test_invalid_cron_expressions_are_refused_at_decoration(bad):
    with pytest.raises(ValueError, match="periodic"):

        @actor(broker=StubBroker(), periodic=bad)
        def task():
            pass


def make_broker():
    broker = StubBroker()

    @actor(broker=broker, topic="reports", periodic="*/5 * * * *")
    def report():
        pass

    @actor(broker=broker, topic="reports")
    def not_periodic():
        pass

    return broker


def sent_runs(broker):
    records = [r for part in broker.topics.get("reports", []) for r in part]
    return sorted(Message.decode(r.value).headers[HEADER_RUN_AT] for r in records)


def test_each_run_is_enqueued_once_by_many_schedulers():
    broker, store = make_broker(), StubScheduleStore()
    schedulers = [Scheduler(broker, store) for _ in range(3)]
    for second in range(0, 600, 7):  # ten minutes of ticks, all three schedulers ticking
        now = at("2026-11-25 14:00:00") + dt.timedelta(seconds=second)
        for scheduler in schedulers:
            scheduler.tick(now)
    assert sent_runs(broker) == [f"2026-11-25T14:{m:02d}:00.000000Z" for m in range(0, 10, 5)]
    messages = [a for p in broker.topics["reports"] for a in p]
    assert len({m.value for m in messages}) == 2


def test_a_run_has_a_message_id_derived_from_its_name():
    first, second = make_broker(), make_broker()
    now = at("2026-11-25 14:05:01")
    [a] = Scheduler(first, StubScheduleStore()).tick(now)
    [b] = Scheduler(second, StubScheduleStore()).tick(now)
    assert a.message_id == b.message_id and a.args == () and a.actor_name == "report"


def test_a_run_missed_by_more_than_the_grace_period_is_skipped_with_a_warning(caplog):
    broker = make_broker()
    scheduler = Scheduler(broker, StubScheduleStore(), grace_ms=60_000)
    with caplog.at_level(logging.WARNING, logger="broker.scheduler"):
        assert scheduler.tick(at("2026-11-25 14:06:30")) == []  # the 14:05 run is 90 s old
        assert scheduler.tick(at("2026-11-25 14:06:40")) == []
    assert [r.message for r in caplog.records].count(
        "a periodic run was missed by more than the grace period; skipped"
    ) == 1
    assert len(scheduler.tick(at("2026-11-25 14:10:20"))) == 1  # the schedule goes on


def test_a_short_outage_delays_a_run_rather_than_dropping_it():
    broker = make_broker()
    [message] = Scheduler(broker, StubScheduleStore()).tick(at("2026-11-25 14:08:59"))  # 4 min late, grace 5
    assert message.headers[HEADER_RUN_AT] == "2026-11-25T14:05:00.000000Z"


class FailingBroker(StubBroker):
    fail = True

    def _produce(self, topic, key, value, headers):
        if self.fail:
            raise BrokerUnavailable("Kafka is away")
        return super()._produce(topic, key, value, headers)


def test_a_claim_whose_scheduler_could_not_send_is_retried_by_it_and_expires_for_the_others():
    broker = FailingBroker()

    @actor(broker=broker, topic="reports", periodic="*/5 * * * *")
    def report():
        pass

    store = StubScheduleStore()
    first, second = Scheduler(broker, store, claim_ttl_ms=200), Scheduler(broker, store, claim_ttl_ms=200)
    now = at("2026-11-25 14:05:01")
    assert first.tick(now) == []  # claimed, but Kafka did not take it
    broker.fail = False
    assert second.tick(now) == []  # the first one's claim holds
    assert len(first.tick(now)) == 1  # its own claim: it sends on its next tick
    assert second.tick(now) == [] and first.tick(now) == []
    assert len(sent_runs(broker)) == 1


def test_a_dead_schedulers_claim_expires_and_another_sends_the_run():
    broker = FailingBroker()

    @actor(broker=broker, topic="reports", periodic="*/5 * * * *")
    def report():
        pass

    store = StubScheduleStore()
    dead = Scheduler(broker, store, claim_ttl_ms=100)
    assert dead.tick(at("2026-11-25 14:05:01")) == []  # claimed, then "died"
    broker.fail = False
    survivor = Scheduler(broker, store, claim_ttl_ms=100)
    assert survivor.tick(at("2026-11-25 14:05:02")) == []
    store._values = {k: (v, dt.datetime.now(dt.UTC)) for k, (v, _) in store._values.items()}  # time passes
    assert len(survivor.tick(at("2026-11-25 14:05:03"))) == 1


def test_the_redis_store_gives_a_run_to_one_scheduler(redis_client, unique):
    store = RedisScheduleStore(client=redis_client)
    key = f"periodic-test:{unique}"
    assert store.claim(key, "a", 5000) is True
    assert store.claim(key, "b", 5000) is False
    assert store.claim(key, "a", 5000) is True  # its own claim
    store.mark_sent(key, 5000)
    assert store.claim(key, "a", 5000) is False and store.claim(key, "b", 5000) is False
    redis_client.delete(key)
