"""Worker semantics, each test run on the StubBroker and on real Kafka (see conftest.env)."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict

import pytest

from broker import actor
from tests.helpers import wait_for


def test_actors_can_perform_work(env):
    results = []

    @actor(broker=env.broker, topic=env.topic)
    def add(x, y):
        results.append(x + y)

    env.start_worker()
    add.send(1, 2)
    add.send_with_options(args=(3, 4), key="k")
    wait_for(lambda: sorted(results) == [3, 7], message=str(results))


def test_a_failing_message_is_retried_with_exponential_backoff_then_succeeds(env):
    attempts: list[float] = []

    @actor(broker=env.broker, topic=env.topic, max_retries=3, min_backoff=200, max_backoff=10000)
    def flaky():
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise RuntimeError("transient")

    env.start_worker()
    flaky.send()
    wait_for(lambda: len(attempts) == 3, message=f"{len(attempts)} attempts")
    first_wait, second_wait = attempts[1] - attempts[0], attempts[2] - attempts[1]
    assert 0.2 <= first_wait < 0.2 + 0.5  # retry 1 waits min_backoff
    assert 0.4 <= second_wait < 0.4 + 0.5  # retry 2 waits twice as long
    wait_for(lambda: sum(env.committed().values()) == 1, message="offset committed after success")
    assert env.dead_letters() == []


def test_exhausted_retries_go_to_the_dead_letter_topic_with_metadata_and_commit(env):
    calls = []

    @actor(broker=env.broker, topic=env.topic, max_retries=2, min_backoff=10)
    def doomed(event):
        calls.append(event)
        raise ValueError("bad things")

    env.start_worker()
    message = doomed.send_with_options(args=({"device_id": "d1"},), key="d1")
    wait_for(lambda: len(env.dead_letters()) == 1, message="a dead letter")
    (letter,) = env.dead_letters()
    assert len(calls) == 3  # the first attempt and two retries
    assert letter["exception.type"] == "builtins.ValueError"
    assert letter["exception.message"] == "bad things"
    assert "Traceback" in letter["exception.traceback"] and "bad things" in letter["exception.traceback"]
    assert letter["attempts"] == "3"
    assert letter["actor"] == "doomed" and letter["message_id"] == message.message_id
    assert letter["original.topic"] == env.topic
    assert letter["raw_key"] == b"d1" and letter["raw_value"] == message.encode()  # original, unchanged
    partition, offset = int(letter["original.partition"]), int(letter["original.offset"])
    wait_for(lambda: env.committed().get(partition) == offset + 1, message="source offset committed")
    assert letter["worker.host"] and letter["failed_at"] and letter["original.timestamp_ms"]


@pytest.mark.parametrize("raise_what", ["throws", "unknown_actor"])
def test_throws_and_unknown_actors_are_dead_lettered_without_retries(env, raise_what):
    calls = []

    @actor(broker=env.broker, topic=env.topic, throws=(KeyError,), min_backoff=10)
    def strict():
        calls.append(1)
        raise KeyError("missing")

    env.start_worker()
    if raise_what == "throws":
        strict.send()
        expected = "builtins.KeyError"
    else:
        ghost = strict.message().copy(actor_name="ghost")
        env.broker.enqueue(ghost)
        expected = "broker.errors.ActorNotFound"
    wait_for(lambda: len(env.dead_letters()) == 1)
    assert env.dead_letters()[0]["exception.type"] == expected
    assert len(calls) == (1 if raise_what == "throws" else 0)


def test_undecodable_messages_are_dead_lettered_and_the_partition_moves_on(env):
    seen = []

    @actor(broker=env.broker, topic=env.topic)
    def note(n):
        seen.append(n)

    env.start_worker()
    env.produce_raw(b"\xff not json", key=b"same")
    note.send_with_options(args=(1,), key="same")  # same key: same partition, after the bad one
    wait_for(lambda: seen == [1], message=str(seen))
    letters = wait_for(lambda: env.dead_letters())
    assert letters[0]["exception.type"] == "broker.errors.DecodeError"
    assert letters[0]["raw_value"] == b"\xff not json"
    assert letters[0]["attempts"] == "0"


def test_messages_with_the_same_key_run_in_order_under_concurrency(env):
    seen: dict[str, list[int]] = defaultdict(list)
    running: set[str] = set()
    overlap = []
    lock = threading.Lock()

    @actor(broker=env.broker, topic=env.topic, max_retries=1, min_backoff=20)
    def step(key, n):
        with lock:
            if key in running:
                overlap.append((key, n))
            running.add(key)
        try:
            if n % 17 == 0 and (key, n) not in failed_once:
                failed_once.add((key, n))
                raise RuntimeError("fail once; the retry must still come before n+1")
            time.sleep(0.001)
            seen[key].append(n)
        finally:
            with lock:
                running.discard(key)

    failed_once: set[tuple[str, int]] = set()
    keys = [f"device-{i}" for i in range(12)]
    per_key = 40
    step.send_many(step.message_with_options(args=(k, n), key=k) for n in range(per_key) for k in keys)
    env.start_worker(worker_threads=8)
    wait_for(lambda: sum(len(v) for v in seen.values()) == len(keys) * per_key, timeout=60)
    assert all(seen[k] == list(range(per_key)) for k in keys), {k: v[:10] for k, v in seen.items()}
    assert overlap == []


def test_a_message_in_backoff_does_not_stall_other_keys(env):
    finished: dict[str, float] = {}
    slow_attempts: list[float] = []

    # long enough for the other keys to run meanwhile: 0.5 s in memory, 5 s on real Kafka
    backoff_s = 0.5 if env.kind == "stub" else 5.0

    @actor(broker=env.broker, topic=env.topic, max_retries=1, min_backoff=int(backoff_s * 1000))
    def work(key):
        if key == "slow":
            slow_attempts.append(time.monotonic())
            if len(slow_attempts) == 1:
                raise RuntimeError("back off")
        finished[key] = time.monotonic()

    env.start_worker()
    work.send_with_options(args=("slow",), key="slow")
    wait_for(lambda: slow_attempts, message="first attempt of the slow key")
    others = [f"other-{i}" for i in range(30)]
    work.send_many(work.message_with_options(args=(k,), key=k) for k in others)
    wait_for(lambda: "slow" in finished, timeout=20, message="the slow key's retry")
    assert set(others) <= set(finished)
    retried_at = slow_attempts[1]
    assert retried_at - slow_attempts[0] >= backoff_s
    late = [k for k in others if finished[k] > retried_at]
    assert late == [], f"{len(late)} other keys waited for the backoff"


def test_send_rejects_arguments_json_cannot_carry(env):
    @actor(broker=env.broker, topic=env.topic)
    def takes(x):
        pass

    from broker import EncodeError

    with pytest.raises(EncodeError, match="not JSON-serializable"):
        takes.send({1, 2})
    with pytest.raises(EncodeError):
        takes.send(float("nan"))


def test_busy_partitions_are_paused_and_resumed_without_losing_messages(env):
    """A small buffer forces pause/resume cycles (on Kafka this covers the fetcher workaround)."""
    seen = []

    @actor(broker=env.broker, topic=env.topic)
    def slowish(n):
        time.sleep(0.0005)
        seen.append(n)

    slowish.send_many((n,) for n in range(1500))
    worker = env.start_worker(max_buffered_per_partition=20, worker_threads=2)
    wait_for(lambda: len(seen) == 1500, timeout=60, message=f"{len(seen)} of 1500")
    worker.join(timeout_ms=10_000)
    assert sorted(seen) == list(range(1500))
    assert env.committed() == env.end_offsets()


def test_a_member_joining_while_partitions_are_paused_loses_nothing(env):
    """Partitions paused for backpressure and kept across a rebalance must start fetching again."""
    seen = []
    work_s = 0.002 if env.kind == "stub" else 0.02  # keeps work in flight while the second member joins

    @actor(broker=env.broker, topic=env.topic)
    def slow(n):
        time.sleep(work_s)
        seen.append(n)

    slow.send_many((n,) for n in range(600))
    env.start_worker(max_buffered_per_partition=5, worker_threads=2)
    wait_for(lambda: len(seen) >= 30, timeout=30)
    env.start_worker(max_buffered_per_partition=5, worker_threads=2)  # rebalance while paused
    wait_for(lambda: len(set(seen)) == 600, timeout=90, message="all 600 processed")
    wait_for(lambda: env.committed() == env.end_offsets(), timeout=30, message="everything committed")


def test_a_clean_start_joins_once_and_runs_each_message_once(env):
    """A group leader that assigns without the topic's metadata assigned nothing (a stall of up to
    5 minutes), and a stale metadata snapshot forced a second rebalance right after the first
    (re-running messages): a clean start must do neither."""
    runs: list[int] = []
    revocations = []

    @actor(broker=env.broker, topic=env.topic)
    def once(n):
        runs.append(n)

    worker = env.start_worker()
    original = worker.revoke_partitions

    def counting(partitions):
        if partitions:  # kafka-python "revokes" the empty set before its first join
            revocations.append(partitions)
        return original(partitions)

    worker.revoke_partitions = counting
    once.send_many((n,) for n in range(30))
    wait_for(lambda: sorted(runs) == list(range(30)), timeout=20, message=f"{len(runs)} runs")
    wait_for(lambda: sum(env.committed().values()) == 30, message="all committed")
    assert revocations == [] and len(runs) == 30


def test_a_member_joining_mid_stream_does_not_run_finished_records_again(env):
    """Records of different keys finish out of order, so a partition's committed offset stays
    behind records that already ran; before, the partition's next owner (a second process
    joining: every clean start of `worker.py -p 2`) ran those again (1,300-2,100 of 20,000 on a
    clean start measured). The commit now names them in its metadata and the next owner skips them."""
    runs: list[int] = []
    lock = threading.Lock()

    @actor(broker=env.broker, topic=env.topic, key=lambda n: f"k{n % 12}")
    def record(n):
        time.sleep(0.02 if n % 12 == 0 else 0.001)  # one slow key holds back each partition's commit
        with lock:
            runs.append(n)

    record.send_many((n,) for n in range(1200))
    env.start_worker(worker_threads=4)
    wait_for(lambda: len(runs) >= 300, timeout=30, message="the first member is under way")
    env.start_worker(worker_threads=4)
    wait_for(lambda: len(set(runs)) == 1200, timeout=90, message=f"{len(set(runs))} of 1200")
    wait_for(lambda: env.committed() == env.end_offsets(), timeout=30, message="everything committed")
    twice = sorted(n for n, count in Counter(runs).items() if count > 1)
    assert twice == [], f"{len(twice)} records ran twice"


def test_a_record_nested_too_deeply_is_dead_lettered_even_where_priorities_decode_early(env):
    """Priorities make the consumer thread decode records: a value JSON cannot parse without
    exhausting the recursion limit must be dead-lettered there too, never stop the consumer."""
    seen = []

    @actor(broker=env.broker, topic=env.topic, priority=1)
    def note(n):
        seen.append(n)

    env.start_worker()
    env.produce_raw(b"[" * 100_000 + b"]" * 100_000, key=b"same")
    note.send_with_options(args=(1,), key="same")
    wait_for(lambda: seen == [1], message=str(seen))
    (letter,) = wait_for(lambda: env.dead_letters())
    assert letter["exception.type"] == "broker.errors.DecodeError" and letter["attempts"] == "0"


def test_a_before_hook_failing_fails_the_attempt_and_the_message_is_retried(env):
    """As in Dramatiq's worker, a before_process_message hook that raises fails that attempt (the
    after-hooks still run, the retry follows); the actor runs once the hook passes."""
    from broker.middleware import Middleware

    failures = {"left": 1}
    ran, after = [], []

    class Flaky(Middleware):
        def before_process_message(self, broker, message):
            if failures["left"]:
                failures["left"] -= 1
                raise RuntimeError("the hook's own dependency failed once")

        def after_process_message(self, broker, message, *, result=None, exception=None):
            after.append(type(exception).__name__ if exception else None)

    env.broker.add_middleware(Flaky())

    @actor(broker=env.broker, topic=env.topic, max_retries=2, min_backoff=10, max_backoff=10)
    def work(n):
        ran.append(n)

    env.start_worker()
    work.send(7)
    wait_for(lambda: ran == [7], message=str(ran))
    assert after == ["RuntimeError", None] and env.dead_letters() == []
