"""Per-message options (Dramatiq semantics: a message's options override its actor's), refused
options, and time limits that a task's own ``except Exception`` cannot swallow. Each test runs on
the StubBroker and on real Kafka (see conftest.env)."""

from __future__ import annotations

import time

import pytest

from broker import TimeLimitExceeded, actor
from tests.helpers import wait_for


def test_max_retries_set_on_a_message_overrides_the_actors(env):
    calls = []

    @actor(broker=env.broker, topic=env.topic, max_retries=3, min_backoff=10)
    def doomed(tag):
        calls.append(tag)
        raise ValueError("no")

    env.start_worker()
    doomed.send_with_options(args=("once",), max_retries=0)
    doomed.send_with_options(args=("twice",), max_retries=1)
    wait_for(lambda: len(env.dead_letters()) == 2, message="two dead letters")
    assert calls.count("once") == 1 and calls.count("twice") == 2
    assert sorted(d["attempts"] for d in env.dead_letters()) == ["1", "2"]


def test_a_time_limit_set_on_a_message_interrupts_it_and_except_exception_cannot_swallow_it(env):
    swallowed = []

    @actor(broker=env.broker, topic=env.topic, max_retries=0)
    def stubborn():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                time.sleep(0.01)
            except Exception as exc:  # what careless task code does; must not stop the interrupt
                swallowed.append(exc)
        raise AssertionError("the time limit never fired")

    env.start_worker()
    started = time.monotonic()
    stubborn.send_with_options(time_limit=300)
    wait_for(lambda: env.dead_letters(), timeout=20, message="dead-lettered by its time limit")
    assert time.monotonic() - started < 15
    (letter,) = env.dead_letters()
    assert letter["exception.type"] == "broker.errors.TimeLimitExceeded"
    assert swallowed == []
    assert not issubclass(TimeLimitExceeded, Exception)


@pytest.mark.parametrize(
    "options, error",
    [
        ({"throws": ValueError}, "throws cannot be set per message"),
        ({"retry_when": lambda n, e: False}, "retry_when cannot be set per message"),
        ({"priority": 1}, "priority cannot be set per message"),
        ({"max_retries": -1}, "non-negative integer"),
        ({"min_backoff": "2s"}, "non-negative integer"),
        ({"time_limit": 0}, "positive number of milliseconds"),
    ],
)
def test_options_a_message_cannot_carry_are_refused_before_anything_is_sent(env, options, error):
    @actor(broker=env.broker, topic=env.topic)
    def task():
        pass

    with pytest.raises(ValueError, match=error):
        task.send_with_options(**options)
    assert sum(env.end_offsets().values()) == 0
