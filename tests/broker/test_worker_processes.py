"""worker.py as real processes on real Kafka: crashes, signals, rebalances, lag and dead letters.

Long because each fault gets its own test over the same few process helpers at the top.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import OffsetAndMetadata
from kafka.structs import TopicPartition as KTP

from broker import BrokerUnavailable, KafkaBroker, Message
from broker.brokers.kafka import client_options
from tests.helpers import stop_processes, wait_for, worker_environ

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.stack]


@pytest.fixture
def proc_env(settings, make_topic, unique, redis_client, tmp_path):
    """A topic, DLQ and group for one test, a producer of ``record`` messages and a worker launcher."""
    topic = make_topic(partitions=3)
    dlq = make_topic(partitions=3, name=f"dlq-{unique}")
    group = f"test-group-{unique}"
    broker = KafkaBroker(**settings.kafka_options, dead_letter_topic=dlq)
    env = worker_environ(settings, TEST_TOPIC=topic, KAFKA_TOPIC_DLQ=dlq)
    procs: list[subprocess.Popen] = []

    class Env:
        pass

    e = Env()
    e.topic, e.dlq, e.group, e.broker, e.env = topic, dlq, group, broker, env

    def send(n: int, keys: int = 10, sleep_ms: int = 0) -> set[str]:
        messages = [
            Message(actor_name="record", topic=topic, args=(f"k{i % keys}", i, sleep_ms), key=f"k{i % keys}")
            for i in range(n)
        ]
        broker.enqueue_many(messages)
        return {f"k{i % keys}:{i}" for i in range(n)}

    def start(*extra: str) -> subprocess.Popen:
        log = open(tmp_path / f"worker-{len(procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "worker.py", "run", "tests.broker.process_actors", "--group", group,
             "--topics", topic, "--threads", "4", "--shutdown-timeout", "10000", *extra],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        procs.append(proc)
        return proc

    def seen() -> list[str]:
        return [v.decode() for v in redis_client.lrange(f"{topic}:seen", 0, -1)]

    def started() -> list[str]:
        return [v.decode() for v in redis_client.lrange(f"{topic}:started", 0, -1)]

    def logs() -> str:
        return "\n".join(p.read_text() for p in sorted(tmp_path.glob("worker-*.log")))

    def log_of(index: int) -> str:
        path = tmp_path / f"worker-{index}.log"
        return path.read_text() if path.exists() else ""

    e.send, e.start, e.seen, e.started, e.logs, e.log_of = send, start, seen, started, logs, log_of
    yield e
    stop_processes(procs)
    broker.close()
    redis_client.delete(f"{topic}:seen", f"{topic}:started")


def committed_total(kafka_admin, group: str, topic: str) -> int:
    offsets = kafka_admin.list_group_offsets({group: None}).get(group, {})
    return sum(m.offset for tp, m in offsets.items() if tp.topic == topic)


def test_kill_9_mid_work_then_restart_processes_every_message_at_least_once(proc_env):
    expected = proc_env.send(300, keys=10, sleep_ms=10)
    worker = proc_env.start()
    wait_for(lambda: len(proc_env.seen()) >= 40, timeout=60, message="some progress")
    worker.kill()  # SIGKILL: no drain, no commit
    worker.wait()
    assert len(set(proc_env.seen())) < len(expected), "the crash should interrupt the work"
    proc_env.start()
    wait_for(lambda: set(proc_env.seen()) >= expected, timeout=90, message="every message after restart")


def test_sigterm_finishes_running_messages_commits_and_exits(proc_env, kafka_admin):
    expected = proc_env.send(200, keys=10, sleep_ms=30)
    worker = proc_env.start()
    wait_for(lambda: len(proc_env.seen()) >= 30, timeout=60)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    started, seen = proc_env.started(), proc_env.seen()
    assert sorted(started) == sorted(seen), "a message that started was not finished"
    committed = committed_total(kafka_admin, proc_env.group, proc_env.topic)
    assert 0 < committed <= len(seen)  # committed finished work (a restart below shows nothing was skipped)
    assert "worker stopped" in proc_env.logs()
    proc_env.start()
    wait_for(lambda: set(proc_env.seen()) >= expected, timeout=90)


def _logged(log: str, message: str, also: Callable[[dict], object] = lambda line: True) -> bool:
    """Whether ``log`` (JSON lines) has a line with ``message`` for which ``also`` holds."""
    lines = (json.loads(text) for text in log.splitlines() if text.startswith("{"))
    return any(line.get("message") == message and also(line) for line in lines)


def test_two_processes_share_partitions_and_a_third_joining_rebalances_without_loss(proc_env, kafka_admin):
    expected = proc_env.send(600, keys=30, sleep_ms=10)
    proc_env.start("--processes", "2")

    def members() -> int:
        group = kafka_admin.describe_groups([proc_env.group]).get(proc_env.group) or {}
        return len(group.get("members") or [])

    wait_for(lambda: members() == 2, timeout=60, message="two members")
    wait_for(lambda: len(proc_env.seen()) >= 100, timeout=60)
    proc_env.start()  # a third member joins while work is flowing
    wait_for(lambda: _logged(proc_env.log_of(1), "partitions assigned", lambda line: line.get("partitions")),
             timeout=60, message="the third member got partitions")  # fmt: skip
    expected |= proc_env.send(300, keys=30, sleep_ms=10)
    wait_for(lambda: set(proc_env.seen()) >= expected, timeout=120, message="nothing lost across the rebalance")
    assert _logged(proc_env.log_of(0), "partitions revoked"), "the first members gave partitions up cleanly"
    assert members() == 3


def test_children_leave_the_group_when_their_supervisor_is_killed(proc_env, kafka_admin):
    supervisor = proc_env.start("--processes", "2")

    def members() -> int:
        group = kafka_admin.describe_groups([proc_env.group]).get(proc_env.group) or {}
        return len(group.get("members") or [])

    wait_for(lambda: members() == 2, timeout=60, message="two members")
    supervisor.kill()  # SIGKILL: no chance to forward anything
    supervisor.wait()
    wait_for(lambda: members() == 0, timeout=60, message="orphaned children drained and left the group")


def test_lag_command_reports_the_true_lag(proc_env, settings):
    proc_env.send(50, keys=5)
    consumer = KafkaConsumer(**client_options(**settings.kafka_options), group_id=proc_env.group,
                             enable_auto_commit=False)  # fmt: skip
    consumer.commit({KTP(proc_env.topic, 0): OffsetAndMetadata(3, "", -1)})
    consumer.close()
    out = subprocess.run(
        [sys.executable, "worker.py", "lag", "tests.broker.process_actors", "--group", proc_env.group],
        cwd=ROOT, env=proc_env.env, capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    report = json.loads(out)
    assert report["group"] == proc_env.group
    assert report["total_lag"] == 50 - 3
    by_partition = {p["partition"]: p for p in report["partitions"]}
    assert by_partition[0]["committed"] == 3
    assert sum(p["end"] for p in report["partitions"]) == 50


def test_dead_letters_can_be_listed_and_replayed_once_the_cause_is_fixed(proc_env, redis_client):
    broken = f"{proc_env.topic}:broken"
    redis_client.set(broken, 1, ex=300)
    try:
        sent = Message(actor_name="guarded", topic=proc_env.topic, args=("secret-arg", 1), key="k",
                       headers={"request_id": "req-1"})  # fmt: skip
        proc_env.broker.enqueue(sent)
        proc_env.start()

        def run(*args: str) -> str:
            return subprocess.run(
                [sys.executable, "worker.py", "dlq", *args], cwd=ROOT, env=proc_env.env, capture_output=True,
                check=True, timeout=60, text=True,
            ).stdout  # fmt: skip

        listing = wait_for(lambda: run("list"), timeout=60, message="a dead letter")
        (letter,) = [json.loads(line) for line in listing.splitlines()]
        assert letter["actor"] == "guarded" and letter["message_id"] == sent.message_id
        assert letter["request_id"] == "req-1"  # the message's own header
        assert letter["error"] == "builtins.RuntimeError: downstream is broken" and letter["failed_at"]
        assert letter["exception.type"] == "builtins.RuntimeError"
        assert letter["original.topic"] == proc_env.topic
        assert "secret-arg" not in listing  # arguments (payloads) are printed only when asked for
        (shown,) = [json.loads(line) for line in run("list", "--show-body").splitlines()]
        assert shown["body"]["args"] == ["secret-arg", 1] and shown["body"]["actor_name"] == "guarded"
    finally:
        redis_client.delete(broken)

    first = json.loads(run("replay"))
    assert first["replayed"] == 1
    wait_for(lambda: proc_env.seen() == ["secret-arg:1"], timeout=60, message="the replayed message ran")
    second = json.loads(run("replay"))
    assert second["replayed"] == 0  # nothing new arrived: replaying twice in a row is a no-op


def test_sending_fails_fast_when_kafka_is_unreachable():
    broker = KafkaBroker(bootstrap_servers="127.0.0.1:1", send_timeout_ms=1000)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        broker.enqueue(Message(actor_name="a", topic="t"))
    assert time.monotonic() - started < 5


def test_lag_is_published_to_cloudwatch_for_autoscaling(proc_env, settings):
    """Against moto's CloudWatch in server mode: a real HTTP endpoint, read back with boto3."""
    import socket

    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    aws = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    try:
        proc_env.send(12, keys=4)
        out = subprocess.run(
            [sys.executable, "worker.py", "lag", "tests.broker.process_actors", "--group", proc_env.group,
             "--publish", "cloudwatch"],
            cwd=ROOT, env={**proc_env.env, **aws}, capture_output=True, check=True, timeout=60, text=True,
        ).stdout  # fmt: skip
        report = json.loads(out)
        assert report["published"] == 1 + 1 + 1 + 3  # total, backlog age, dead letters, one per partition
        assert report["oldest_age_s"] >= 0 and report["dead_letters"] == {proc_env.dlq: 0}
        cloudwatch = boto3.client("cloudwatch", endpoint_url=aws["AWS_ENDPOINT_URL"], region_name="us-east-1",
                                  aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
        now = time.time()
        stats = cloudwatch.get_metric_statistics(
            Namespace="DeviceBackend/Kafka", MetricName="ConsumerLag",
            Dimensions=[{"Name": "ConsumerGroup", "Value": proc_env.group}],
            StartTime=now - 600, EndTime=now + 600, Period=60, Statistics=["Maximum"],
        )  # fmt: skip
        assert [p["Maximum"] for p in stats["Datapoints"]] == [12.0]
        partitions = cloudwatch.list_metrics(Namespace="DeviceBackend/Kafka", MetricName="PartitionLag")["Metrics"]
        mine = [m for m in partitions if {"Name": "ConsumerGroup", "Value": proc_env.group} in m["Dimensions"]]
        assert len(mine) == 3
        ages = cloudwatch.list_metrics(Namespace="DeviceBackend/Kafka", MetricName="OldestUnprocessedAge")["Metrics"]
        assert [{"Name": "ConsumerGroup", "Value": proc_env.group}] in [m["Dimensions"] for m in ages]
    finally:
        server.stop()


def _command(proc_env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "worker.py", *args], cwd=ROOT, env=proc_env.env, capture_output=True, text=True, timeout=60
    )


def test_status_shows_the_members_and_what_each_process_on_this_host_is_doing(proc_env):
    proc_env.start("--processes", "2")

    def status() -> dict:
        out = _command(proc_env, "status", "--group", proc_env.group)
        return json.loads(out.stdout) if out.returncode == 0 else {}

    def settled(report: dict) -> bool:
        return (
            report.get("state") == "Stable"
            and len(report["members"]) == 2
            and len(report["processes_here"]) == 2
            and sum(len(p["partitions"]) for p in report["processes_here"]) == 3
        )

    report = wait_for(lambda: (r := status()) and settled(r) and r, timeout=60, message="a stable group of two")
    assert sorted(p for m in report["members"] for p in m["partitions"]) == [f"{proc_env.topic}-{i}" for i in range(3)]
    assert {p["state"] for p in report["processes_here"]} == {"running"}
    assert all(p["pid"] > 0 and p["group"] == proc_env.group for p in report["processes_here"])


def test_skip_dead_letters_one_record_and_moves_a_stopped_group_past_it(proc_env, settings):
    producer = KafkaProducer(**client_options(**settings.kafka_options), acks="all")
    for value in (b"stuck", b"next"):
        producer.send(proc_env.topic, key=b"k", value=value, partition=0).get(timeout=10)
    producer.close()
    args = ("skip", "--group", proc_env.group, "--topic", proc_env.topic, "--partition", "0")

    done = _command(proc_env, *args, "--offset", "0")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["committed"] == 1
    letters = [json.loads(line) for line in _command(proc_env, "dlq", "list").stdout.splitlines()]
    assert [(d["reason"], d["original.offset"]) for d in letters] == [("skipped", "0")]

    again = _command(proc_env, *args, "--offset", "0")
    assert again.returncode == 2 and "already at offset 1" in again.stderr

    proc_env.start()
    wait_for(lambda: _command(proc_env, "status", "--group", proc_env.group).stdout.count('"member_id"') == 1, 60)
    refused = _command(proc_env, *args, "--offset", "1")
    assert refused.returncode == 2 and "live member" in refused.stderr


def test_a_clean_start_of_two_processes_runs_each_message_once(proc_env):
    """The second child joins while the first already works: the rebalance moves partitions whose
    committed offset lags behind records that finished out of order (other keys). Before, their new
    owner ran those again (heartbeats every second; 1,600-2,200 of 20,000 in 2 of 3 runs of this
    test). The commit's metadata now names them and the new owner skips them."""
    proc_env.env.update(LOG_LEVEL="WARNING")  # and heartbeats every second, the default
    expected = proc_env.send(20000, keys=500)
    proc_env.start("--processes", "2", "--threads", "8")
    wait_for(lambda: set(proc_env.seen()) >= expected, timeout=120, message="every message ran")
    seen = proc_env.seen()
    assert len(seen) == len(expected), f"{len(seen) - len(expected)} messages ran twice"


def test_a_concurrency_limit_of_one_holds_across_worker_processes(proc_env, redis_client):
    """Issue 12, item 5: a ConcurrentRateLimiter(limit=1) on Redis is a mutex for every process of
    the group; the messages that find it taken run later, none is dead-lettered."""
    messages = [Message(actor_name="exclusive", topic=proc_env.topic, args=(f"k{i % 6}", i), key=f"k{i % 6}")
                for i in range(40)]  # fmt: skip
    proc_env.broker.enqueue_many(messages)
    proc_env.start("--processes", "2", "--threads", "4")
    wait_for(lambda: len(set(proc_env.seen())) == 40, timeout=120, message=f"{len(set(proc_env.seen()))} of 40")
    assert redis_client.get(f"{proc_env.topic}:overlap") is None, "two processes held the mutex at once"
    assert "dead-lettered" not in proc_env.logs()
    redis_client.delete(f"{proc_env.topic}:overlap", f"{proc_env.topic}:inside", f"{proc_env.topic}:mutex")


def _assigned(log: str) -> list[list[str]]:
    """Each "partitions assigned" line's partitions, in order."""
    lines = (json.loads(text) for text in log.splitlines() if text.startswith("{"))
    return [line.get("partitions") for line in lines if line.get("message") == "partitions assigned"]


def _rebalance_lines(log: str) -> int:
    lines = (json.loads(text) for text in log.splitlines() if text.startswith("{"))
    return sum(1 for line in lines if line.get("message") in ("partitions assigned", "partitions revoked"))


def _by_instance(kafka_admin, group_id: str) -> dict[str, list[str]]:
    """The group's members as Kafka sees them: ``{group_instance_id: its partitions}``."""
    group = kafka_admin.describe_groups([group_id]).get(group_id) or {}
    out = {}
    for member in group.get("members") or []:
        assignment = member.get("member_assignment") or {}
        partitions = [f"{a['topic']}-{p}" for a in assignment.get("assigned_partitions") or [] for p in a["partitions"]]
        out[member.get("group_instance_id")] = sorted(partitions)
    return out


def _split_between(kafka_admin, group_id: str, *instances: str) -> dict[str, list[str]] | None:
    """The assignment once every partition (3) is owned and each of ``instances`` owns some."""
    owners = _by_instance(kafka_admin, group_id)
    if set(owners) == set(instances) and all(owners.values()) and sum(map(len, owners.values())) == 3:
        return owners
    return None


def test_a_static_member_killed_and_restarted_takes_its_partitions_back_without_a_rebalance(proc_env, kafka_admin):
    # a long session, so that "without waiting for the dead member's session to expire" is plain
    proc_env.env["KAFKA_SESSION_TIMEOUT_MS"] = "45000"
    a_id, b_id = f"{proc_env.group}-a", f"{proc_env.group}-b"
    a = proc_env.start("--instance-id", a_id)
    proc_env.start("--instance-id", b_id)
    before = wait_for(lambda: _split_between(kafka_admin, proc_env.group, a_id, b_id), timeout=60,
                      message="both members own partitions")  # fmt: skip
    wait_for(lambda: _assigned(proc_env.log_of(1)), timeout=30)
    b_before = _rebalance_lines(proc_env.log_of(1))
    expected = proc_env.send(300, keys=12, sleep_ms=5)
    wait_for(lambda: len(proc_env.seen()) >= 30, timeout=60, message="some progress")
    a.kill()  # SIGKILL: no drain, no commit, no leaving
    a.wait()
    restarted = time.monotonic()
    proc_env.start("--instance-id", a_id)
    wait_for(lambda: _assigned(proc_env.log_of(2)), timeout=40, message="the restarted member rejoined")
    took = time.monotonic() - restarted
    assert sorted(_assigned(proc_env.log_of(2))[-1]) == before[a_id], "its partitions came back to the same identity"
    assert took < 30, f"took {took:.1f}s: it waited for the dead member's 45 s session to expire"
    wait_for(lambda: set(proc_env.seen()) >= expected, timeout=90, message="every message after the restart")
    assert _by_instance(kafka_admin, proc_env.group) == before
    assert _rebalance_lines(proc_env.log_of(1)) == b_before, "the other member saw a rebalance"


def test_a_static_member_stopped_with_sigterm_leaves_so_its_partitions_move_at_once(proc_env, kafka_admin):
    proc_env.env["KAFKA_SESSION_TIMEOUT_MS"] = "45000"
    a_id, b_id = f"{proc_env.group}-a", f"{proc_env.group}-b"
    a = proc_env.start("--instance-id", a_id)
    proc_env.start("--instance-id", b_id)
    wait_for(lambda: _split_between(kafka_admin, proc_env.group, a_id, b_id), timeout=60,
             message="both members own partitions")  # fmt: skip
    a.send_signal(signal.SIGTERM)
    assert a.wait(timeout=30) == 0
    left = time.monotonic()
    wait_for(lambda: len(_by_instance(kafka_admin, proc_env.group).get(b_id, [])) == 3, timeout=40,
             message="the remaining member took every partition")  # fmt: skip
    assert time.monotonic() - left < 30, "the stopped static member's partitions waited for its session to expire"
    assert "could not leave" not in proc_env.log_of(0)
    expected = proc_env.send(60, keys=6)
    wait_for(lambda: set(proc_env.seen()) >= expected, timeout=60)


def test_supervised_processes_get_one_static_identity_each(proc_env, kafka_admin):
    proc_env.start("--processes", "2", "--instance-id", "{host}-" + proc_env.group)
    host = socket.gethostname()
    wanted = {f"{host}-{proc_env.group}-0", f"{host}-{proc_env.group}-1"}
    wait_for(lambda: set(_by_instance(kafka_admin, proc_env.group)) == wanted, timeout=60,
             message="two static members named host-id-index")  # fmt: skip


def test_autoscale_adds_processes_for_a_backlog_replaces_a_crashed_one_and_scales_back_in(proc_env, kafka_admin):
    expected = proc_env.send(900, keys=30, sleep_ms=20)  # ~18 s of work for one single-threaded process
    supervisor = proc_env.start(
        "--autoscale", "1,3", "--autoscale-target", "60", "--autoscale-interval", "0.5",
        "--scale-out-cooldown", "1", "--scale-in-cooldown", "3", "--threads", "1",
    )  # fmt: skip

    def members() -> int:
        group = kafka_admin.describe_groups([proc_env.group]).get(proc_env.group) or {}
        return len(group.get("members") or [])

    def autoscale_lines() -> list[dict]:
        lines = (json.loads(text) for text in proc_env.log_of(0).splitlines() if text.startswith("{"))
        return [line for line in lines if line.get("message", "").startswith("autoscale")]

    wait_for(lambda: members() == 3, timeout=60, message="scaled out to the maximum (3 partitions)")
    assert any(line.get("to") == 3 for line in autoscale_lines())
    started = [line["pid"] for line in autoscale_lines() if line["message"] == "autoscale: started a worker process"]
    os.kill(started[-1], signal.SIGKILL)  # a child crashes: it is replaced, the count holds
    wait_for(lambda: any("exited on its own" in line["message"] for line in autoscale_lines()), timeout=30)
    wait_for(lambda: set(proc_env.seen()) >= expected, timeout=120, message="the backlog drained")
    wait_for(lambda: members() == 1, timeout=60, message="scaled back in to the minimum")
    stops = [line for line in autoscale_lines() if line["message"] == "autoscale: stopping a worker process"]
    assert len(stops) == 2, "one process at a time"
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=60) == 0
    wait_for(lambda: members() == 0, timeout=30, message="the last process left the group")


def test_async_actors_run_in_every_worker_process_and_a_kill_9_loses_none(proc_env):
    """Issue 23: an async def actor under worker.py, as the chaos suite's worker-kill does to any
    actor: killed mid-work, restarted as two processes, every message ran (none acked unrun)."""
    messages = [
        Message(actor_name="record_async", topic=proc_env.topic, args=(f"k{i % 10}", i, 20), key=f"k{i % 10}")
        for i in range(200)
    ]
    proc_env.broker.enqueue_many(messages)
    expected = {f"k{i % 10}:{i}" for i in range(200)}
    worker = proc_env.start()
    wait_for(lambda: len(proc_env.seen()) >= 20, timeout=60, message="some progress")
    worker.kill()  # SIGKILL: no drain, no commit
    worker.wait()
    assert len(set(proc_env.seen())) < len(expected), "the crash should interrupt the work"
    proc_env.start("--processes", "2")
    wait_for(lambda: set(proc_env.seen()) >= expected, timeout=90, message="every async message after restart")
    logs = proc_env.logs()
    assert "never awaited" not in logs and "dead-lettered" not in logs
