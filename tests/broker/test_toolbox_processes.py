"""Issue 12 on real processes and real Kafka: a pipeline handed between two ``worker.py``
processes, a delayed message surviving a ``kill -9`` of its worker, and two ``worker.py
scheduler`` processes enqueuing each periodic run once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer

from broker import KafkaBroker, Message, pipeline
from broker.delays import now_ms, tier_topics
from broker.scheduler import HEADER_RUN_AT
from tests.helpers import stop_processes, wait_for, worker_environ

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.stack]


@pytest.fixture
def toolbox(settings, make_topic, unique, redis_client, tmp_path):
    """Two topics, delay topics of their own, a broker to send with and a process launcher."""
    topic, topic_b = make_topic(partitions=2), make_topic(partitions=2)
    dlq = make_topic(partitions=1, name=f"dlq-{unique}")
    prefix = f"delays-{unique}"
    for name in tier_topics(prefix):
        make_topic(partitions=2, name=name)
    broker = KafkaBroker(**settings.kafka_options, dead_letter_topic=dlq, delay_prefix=prefix)
    env = worker_environ(settings, TEST_TOPIC=topic, TEST_TOPIC_B=topic_b, KAFKA_TOPIC_DLQ=dlq,
                         KAFKA_DELAY_TOPIC_PREFIX=prefix)  # fmt: skip
    procs: list[subprocess.Popen] = []

    class Toolbox:
        pass

    t = Toolbox()
    t.topic, t.topic_b, t.broker, t.group = topic, topic_b, broker, f"test-group-{unique}"

    def start(command: str, *extra: str, **more_env: str) -> subprocess.Popen:
        log = open(tmp_path / f"proc-{len(procs)}.log", "wb")  # noqa: SIM115
        argv = [sys.executable, "worker.py", command, "tests.broker.toolbox_actors", *extra]
        if command == "run":
            argv += ["--group", t.group, "--threads", "2", "--shutdown-timeout", "5000"]
        proc = subprocess.Popen(argv, cwd=ROOT, env={**env, **more_env}, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    def calls() -> list[tuple[str, int, list]]:
        return [tuple(json.loads(v)) for v in redis_client.lrange(f"{topic}:calls", 0, -1)]

    def logs() -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(tmp_path.glob("proc-*.log")))

    t.start, t.calls, t.logs = start, calls, logs
    yield t
    stop_processes(procs)
    broker.close()
    redis_client.delete(f"{topic}:calls")


def message(actor_name: str, topic: str, *args) -> Message:
    return Message(actor_name=actor_name, topic=topic, args=args)


def test_a_pipeline_is_handed_between_two_worker_processes(toolbox):
    a = toolbox.start("run", "--topics", toolbox.topic)  # double, note
    b = toolbox.start("run", "--topics", toolbox.topic_b)  # add_one
    steps = [message("double", toolbox.topic, 3), message("add_one", toolbox.topic_b),
             message("double", toolbox.topic), message("add_one", toolbox.topic_b),
             message("note", toolbox.topic)]  # fmt: skip
    pipeline(steps, broker=toolbox.broker).run()
    wait_for(lambda: len(toolbox.calls()) == 5, timeout=90, message=str(toolbox.calls()))
    calls = toolbox.calls()
    assert [(name, args) for name, _, args in calls] == [
        ("double", [3]), ("add_one", [6]), ("double", [7]), ("add_one", [14]), ("note", [15]),
    ]  # fmt: skip
    pids = [pid for _, pid, _ in calls]
    assert pids == [a.pid, b.pid, a.pid, b.pid, a.pid]


def test_a_delayed_message_survives_a_kill_9_of_its_worker(toolbox):
    first = toolbox.start("run", "--topics", toolbox.topic)
    wait_for(lambda: "worker started" in toolbox.logs(), timeout=60)
    eta_floor = now_ms() + 6000
    sent = [toolbox.broker.enqueue(message("note", toolbox.topic, f"late-{n}"), delay=6000 + 300 * n) for n in range(3)]
    time.sleep(1.5)  # the fault comes while they wait: the forwarder has read them and holds their partition
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert toolbox.calls() == []
    toolbox.start("run", "--topics", toolbox.topic)
    wait_for(lambda: len(toolbox.calls()) >= 3, timeout=90, message=str(toolbox.calls()))
    labels = [args[0] for _, _, args in toolbox.calls()]
    assert sorted(set(labels)) == ["late-0", "late-1", "late-2"]
    assert all(m.options["eta"] >= eta_floor for m in sent)


def test_two_schedulers_enqueue_each_periodic_run_once(toolbox, settings):
    schedulers = [toolbox.start("scheduler", TEST_PERIODIC="* * * * * *") for _ in range(2)]
    wait_for(lambda: toolbox.logs().count("scheduler started") == 2, timeout=60, message=toolbox.logs())
    wait_for(lambda: toolbox.logs().count("periodic run enqueued") >= 6, timeout=30, message=toolbox.logs())
    for proc in schedulers:
        proc.send_signal(signal.SIGTERM)
    for proc in schedulers:
        assert proc.wait(timeout=30) == 0
    consumer = KafkaConsumer(toolbox.topic, bootstrap_servers=settings.kafka_bootstrap_servers,
                             auto_offset_reset="earliest", consumer_timeout_ms=3000)  # fmt: skip
    runs = [Message.decode(r.value).headers[HEADER_RUN_AT] for r in consumer]
    consumer.close()
    assert len(runs) >= 5, runs
    assert len(runs) == len(set(runs)), f"a run was enqueued twice: {sorted(runs)}"
    seconds = sorted(int(run[17:19]) for run in runs)
    assert len(seconds) == len(set(seconds))
    enqueuers = {line for line in toolbox.logs().splitlines() if "periodic run enqueued" in line}
    assert len(enqueuers) == len(runs)
