"""The ECS worker scaling policy, acted out with real ``worker.py`` processes under a load ramp.

Each "task" is a real ``worker.py run`` process in one consumer group on a fresh topic. A
controller plays Application Auto Scaling (:class:`~tests.scaling.target_tracking.TargetTracking`
with the policy files' target, bounds and cooldowns, ``time_factor`` times faster): once per
period it averages the ``ConsumerLag`` datapoints the lag publisher would have sent
(:func:`core.cloudwatch.lag_metric_data` over :func:`broker.brokers.kafka.admin.consumer_lag`, sampled every
second), divides by the running tasks, and starts tasks or stops them as ECS does: SIGTERM, then
SIGKILL after the task definition's ``stopTimeout``. A producer sends events at the ramp's rates;
the actor (:mod:`tests.scaling.actors`) sleeps 20 ms per event and records each run.

It records lag, tasks and processing latency (sent -> finished) over time and checks: nothing
lost, re-runs rare (delivery is at least once: an offset whose commit a rebalance refused is
delivered again; at most 1 in 1,000), every scale-in drained inside the stop timeout, the backlog per
task back under the target within a bound after the load rose, and the tasks back at the
minimum once it fell.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import redis
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from broker import KafkaBroker, Message
from broker.brokers.kafka import client_options
from broker.brokers.kafka.admin import consumer_lag
from core.cloudwatch import lag_metric_data
from core.settings import Settings
from tests.scaling.target_tracking import HIGH_DATAPOINTS, TargetTracking

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 6
KEYS = 60


@dataclass(frozen=True)
class Step:
    seconds: float
    rate: float  # events per second


@dataclass
class Sample:
    t: float  # seconds since the start
    rate: float
    lag: int
    tasks: int


@dataclass
class Report:
    time_factor: float
    target: float
    steps: list[dict]
    sent: int = 0
    lost: int = 0
    duplicates: int = 0
    scale_events: list[dict] = field(default_factory=list)  # {t, from, to, metric}
    drains_s: list[float] = field(default_factory=list)
    over_target_s: list[float] = field(default_factory=list)  # each stretch above the target
    latency_p50_s: float | None = None
    latency_p99_s: float | None = None
    latency_max_s: float | None = None
    samples: list[dict] = field(default_factory=list)
    latency_by_second: list[list[float]] = field(default_factory=list)  # [t, p99]
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        moves = " ".join(f"{e['from']}->{e['to']}@{e['t']:.0f}s" for e in self.scale_events)
        return (
            f"scaling sent={self.sent} lost={self.lost} dup={self.duplicates} scale=[{moves}] "
            f"drain_max_s={max(self.drains_s, default=0):.1f} "
            f"over_target_max_s={max(self.over_target_s, default=0):.0f} "
            f"latency_p50_s={self.latency_p50_s} p99={self.latency_p99_s} max={self.latency_max_s}"
        )


class Tasks:
    """The service's tasks: ``worker.py run`` processes, started and stopped as ECS would."""

    def __init__(self, env: dict[str, str], topic: str, group: str, logs: Path, stop_timeout_s: float):
        self.env, self.topic, self.group, self.logs = env, topic, group, logs
        self.stop_timeout_s = stop_timeout_s
        self.running: list[subprocess.Popen] = []
        self.drains_s: list[float] = []
        self._threads: list[threading.Thread] = []
        self._count = 0

    def scale_to(self, count: int) -> None:
        while len(self.running) < count:
            self._count += 1
            log = open(self.logs / f"task-{self._count}.log", "wb")  # noqa: SIM115
            argv = [sys.executable, "worker.py", "run", "tests.scaling.actors", "--topics", self.topic,
                    "--group", self.group, "--threads", "8", "--shutdown-timeout", "10000"]  # fmt: skip
            self.running.append(subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT))
        while len(self.running) > count:
            task = self.running.pop()  # the newest, as ECS picks by its own rules: any one will do
            thread = threading.Thread(target=self._stop, args=(task,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _stop(self, task: subprocess.Popen) -> None:
        began = time.monotonic()
        task.send_signal(signal.SIGTERM)
        try:
            task.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            task.kill()  # what ECS does after stopTimeout
            task.wait()
            self.drains_s.append(math.inf)
            return
        self.drains_s.append(time.monotonic() - began)

    def close(self) -> None:
        self.scale_to(0)
        for thread in self._threads:
            thread.join(self.stop_timeout_s + 10)


class Producer(threading.Thread):
    """Sends ``io_event`` messages at the current rate (set by the ramp), in 50 ms slices."""

    def __init__(self, broker: KafkaBroker, topic: str):
        super().__init__(daemon=True)
        self.broker, self.topic = broker, topic
        self.rate = 0.0
        self.sent = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        owed, last = 0.0, time.monotonic()
        try:
            while not self.stop.wait(0.05):
                now = time.monotonic()
                owed += self.rate * (now - last)
                last = now
                count, owed = int(owed), owed - int(owed)
                if count:
                    sent_ms = int(time.time() * 1000)
                    messages = [
                        Message(actor_name="io_event", topic=self.topic, args=(self.sent + i, sent_ms),
                                key=f"k{(self.sent + i) % KEYS}")
                        for i in range(count)
                    ]  # fmt: skip
                    self.broker.enqueue_many(messages)
                    self.sent += count
        except BaseException as exc:  # reported as a problem of the run
            self.error = exc


def run(settings: Settings, steps: list[Step], *, time_factor: float, logs: Path | None = None) -> Report:
    """Run the ramp through the policy; returns the report (``report.problems`` empty when every check held)."""
    policy = TargetTracking.from_policy_files(time_factor)
    task_definition = json.loads((ROOT / "deploy" / "ecs" / "worker-task-definition.json").read_text())
    stop_timeout_s = next(c for c in task_definition["containerDefinitions"] if c["name"] == "worker")["stopTimeout"]
    run_id = uuid.uuid4().hex[:8]
    topic, group = f"scaling-{run_id}", f"scaling-{run_id}"
    logs = logs or Path(tempfile.mkdtemp(prefix=f"scaling-{run_id}-"))
    options = client_options(**settings.kafka_options)
    admin = KafkaAdminClient(**options)
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    admin.wait_for_topics([topic], timeout_ms=30000)
    store = redis.Redis.from_url(settings.redis_url)
    env = {**os.environ, "SCALE_TOPIC": topic, "KAFKA_TOPIC_DLQ": topic, "LOG_LEVEL": "WARNING",
           "POSTGRES_PASSWORD": settings.postgres_password, "REDIS_URL": settings.redis_url,
           "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers}  # fmt: skip
    report = Report(time_factor=time_factor, target=policy.target, steps=[asdict(s) for s in steps])
    tasks = Tasks(env, topic, group, logs, stop_timeout_s)
    broker = KafkaBroker(**settings.kafka_options, dead_letter_topic=topic)
    producer = Producer(broker, topic)
    samples: list[Sample] = []
    try:
        tasks.scale_to(policy.minimum)
        producer.start()
        began, began_ms = time.monotonic(), int(time.time() * 1000)
        ends = list(_accumulate([s.seconds for s in steps]))
        next_period = began + policy.period_s
        period_lags: list[int] = []
        while (now := time.monotonic()) < began + ends[-1]:
            elapsed = now - began
            producer.rate = next(s.rate for s, end in zip(steps, ends, strict=True) if elapsed < end)
            lag = _lag(options, group, topic)
            samples.append(Sample(round(elapsed, 1), producer.rate, lag, len(tasks.running)))
            period_lags.append(lag)
            if now >= next_period:
                metric = (sum(period_lags) / len(period_lags)) / max(1, len(tasks.running))
                capacity = policy.datapoint(now, len(tasks.running), metric)
                if capacity != len(tasks.running):
                    report.scale_events.append(
                        {"t": round(elapsed, 1), "from": len(tasks.running), "to": capacity, "metric": round(metric)}
                    )
                    tasks.scale_to(capacity)
                period_lags, next_period = [], next_period + policy.period_s
            time.sleep(max(0.0, 1.0 - (time.monotonic() - now)))
        producer.stop.set()
        producer.join(10)
        broker.flush()
        report.sent = producer.sent
        _wait_for_drain(store, topic, producer.sent, timeout_s=120)
    finally:
        producer.stop.set()
        tasks.close()
        broker.close()
    _fill(report, store, topic, samples, tasks, policy, began_ms)
    if producer.error is not None:
        report.problems.append(f"the producer failed: {producer.error!r}")
    store.delete(f"{topic}:runs", f"{topic}:done")
    admin.delete_topics([topic])
    admin.close()
    return report


def _accumulate(values: list[float]) -> list[float]:
    total, out = 0.0, []
    for value in values:
        total += value
        out.append(total)
    return out


def _lag(options: dict, group: str, topic: str) -> int:
    """``ConsumerLag`` as the lag publisher would send it."""
    (datum,) = [d for d in lag_metric_data(consumer_lag(options, group, [topic])) if d["MetricName"] == "ConsumerLag"]
    return int(datum["Value"])


def _wait_for_drain(store: redis.Redis, topic: str, sent: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while store.hlen(f"{topic}:runs") < sent and time.monotonic() < deadline:
        time.sleep(0.5)


def _fill(report: Report, store, topic, samples, tasks: Tasks, policy: TargetTracking, began_ms: int) -> None:
    runs = {int(k): int(v) for k, v in store.hgetall(f"{topic}:runs").items()}
    report.lost = sum(1 for seq in range(report.sent) if seq not in runs)
    report.duplicates = sum(1 for count in runs.values() if count > 1)
    report.drains_s = [round(d, 1) for d in tasks.drains_s]
    report.samples = [asdict(s) for s in samples]
    done = [tuple(map(int, v.split(b","))) for v in store.lrange(f"{topic}:done", 0, -1)]
    if done:
        waits = sorted(latency / 1000 for _, latency in done)
        report.latency_p50_s = round(waits[len(waits) // 2], 2)
        report.latency_p99_s = round(waits[min(len(waits) - 1, int(0.99 * len(waits)))], 2)
        report.latency_max_s = round(waits[-1], 2)
        by_second: dict[int, list[int]] = {}
        for finished, latency in done:
            by_second.setdefault((finished - began_ms) // 1000, []).append(latency)
        report.latency_by_second = [
            [second, sorted(values)[min(len(values) - 1, int(0.99 * len(values)))] / 1000]
            for second, values in sorted(by_second.items())
        ]
    # stretches with the backlog per task above the target
    stretch_start = None
    for sample in samples:
        over = sample.lag / max(1, sample.tasks) > policy.target
        if over and stretch_start is None:
            stretch_start = sample.t
        elif not over and stretch_start is not None:
            report.over_target_s.append(round(sample.t - stretch_start, 1))
            stretch_start = None
    if stretch_start is not None:
        report.over_target_s.append(math.inf)
    # the checks
    if report.lost:
        report.problems.append(f"{report.lost} events never ran")
    # delivery is at least once: an offset whose commit failed in a rebalance (RebalanceInProgress)
    # is delivered again, and effects are made idempotent by key (as tasks.events does by
    # request_id). So a rare re-run is the contract; many would mean scaling loses commits.
    allowed = max(10, report.sent // 1000)
    if report.duplicates > allowed:
        report.problems.append(f"{report.duplicates} events ran more than once (at most {allowed} allowed)")
    if any(d > tasks.stop_timeout_s for d in report.drains_s):
        report.problems.append(f"a scale-in did not drain within the stop timeout: {report.drains_s}")
    # the policy needs HIGH_DATAPOINTS periods above the target to act, then a task starts and joins
    bound = (HIGH_DATAPOINTS + 3) * policy.period_s + 30
    if any(stretch > bound for stretch in report.over_target_s):
        report.problems.append(
            f"backlog per task above the target for {max(report.over_target_s)}s (bound {bound:.0f}s)"
        )
    if not any(e["to"] > e["from"] for e in report.scale_events):
        report.problems.append("the burst never scaled out")
    if not samples or samples[-1].tasks != policy.minimum:
        report.problems.append(f"not back at the minimum ({policy.minimum}) after the load fell")


def chart(report: Report, path: Path) -> None:
    """A PNG of rate, tasks, backlog per task and latency over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] for s in report.samples]
    fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    top.plot(t, [s["rate"] for s in report.samples], color="tab:gray", label="events/s offered")
    top.set_ylabel("events/s")
    tasks_axis = top.twinx()
    tasks_axis.step(t, [s["tasks"] for s in report.samples], where="post", color="tab:blue", label="tasks")
    tasks_axis.set_ylabel("tasks")
    top.set_title(f"worker scaling policy, {report.time_factor:g}x faster: rate and tasks")
    middle.plot(t, [s["lag"] / max(1, s["tasks"]) for s in report.samples], color="tab:orange")
    middle.axhline(report.target, color="tab:red", linestyle="--", label=f"target {report.target:g}")
    middle.set_ylabel("backlog per task")
    middle.legend(loc="upper right")
    for event in report.scale_events:
        for axis in (top, middle, bottom):
            axis.axvline(event["t"], color="tab:green", alpha=0.4)
    bottom.plot([p[0] for p in report.latency_by_second], [p[1] for p in report.latency_by_second], color="tab:purple")
    bottom.set_ylabel("p99 sent -> done, s")
    bottom.set_xlabel("seconds (green: scaling events)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
