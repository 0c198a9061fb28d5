"""The chaos harness: the real system under load, a ledger of every ``202``, and the checks.

The system is what production runs: the API under gunicorn with gevent workers and ``worker.py``
with several processes, on the local stack (``scripts/stack``). Devices post events at a steady
rate, each with its own sequence number in the payload, and every answer goes into a ledger.
Faults are injected from outside (SIGKILL, stopping a server). Afterwards the harness waits for
the drain and checks, in PostgreSQL and through ``GET /resource``, that every acknowledged event
was stored exactly once and that every device's resource (and its cache entry) shows its newest
acknowledged event. With ``Run(..., async_actor=True)`` an ``async def`` actor
(:mod:`tests.chaos.async_actors`) runs in the same worker and is held to the same ledger: every
message it was sent and Kafka acknowledged is stored exactly once (the actor never fails by itself, so
a dead letter of it is a problem).

This module is the run (:class:`Run`) and its verdict (:class:`Result`), with the dead-letter topic
read as an outsider; the processes are :mod:`tests.chaos.system`'s, the load and the ledger
:mod:`tests.chaos.load`'s.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import redis
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.errors import TopicAlreadyExistsError
from kafka.structs import TopicPartition as KTP
from sqlalchemy import Engine, text

from broker import set_broker
from broker.brokers.kafka import client_options
from broker.message import Message
from broker.middleware import AsyncIO
from core.cache import cache_key
from core.db import make_engine
from core.settings import Settings
from core.wiring import make_broker
from tests.chaos.load import AsyncSender, Devices, Ledger, Post, Stored
from tests.chaos.system import ASYNC_MODULE, System, http_get, log, token, wait_until
from tests.helpers import position


def ensure_async_actor(settings: Settings, engine: Engine) -> None:
    """The async actor's topic (if missing: replication factor 1 on the single-broker stack, 3 on
    the cluster) and its table."""
    from tests.chaos import async_actors

    admin = KafkaAdminClient(**client_options(**settings.kafka_options))
    try:
        if async_actors.TOPIC not in admin.list_topics():
            replicas = min(3, len(admin.describe_cluster()["brokers"]))
            spec = {"num_partitions": async_actors.TOPIC_PARTITIONS, "replication_factor": replicas}
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics({async_actors.TOPIC: spec})
        admin.wait_for_topics([async_actors.TOPIC], timeout_ms=30000)
    finally:
        admin.close()
    async_actors.create_table(engine)


# ---------------------------------------------------------------- the dead-letter topic, as an outsider


def dead_letter_ends(settings: Settings) -> dict[KTP, int]:
    """The dead-letter topic's end offsets now: where a run's own dead letters will start."""
    consumer = KafkaConsumer(**client_options(**settings.kafka_options))
    try:
        tps = [KTP(settings.kafka_topic_dlq, p) for p in consumer.partitions_for_topic(settings.kafka_topic_dlq)]
        return consumer.end_offsets(tps)
    finally:
        consumer.close()


def dead_letters_since(settings: Settings, starts: dict[KTP, int]) -> list:
    """Every record written to the dead-letter topic after ``starts`` (its end offsets earlier)."""
    consumer = KafkaConsumer(**client_options(**settings.kafka_options), enable_auto_commit=False)
    try:
        consumer.assign(list(starts))
        ends = consumer.end_offsets(list(starts))
        for tp, offset in starts.items():
            consumer.seek(tp, offset)
        records: list = []
        deadline = time.monotonic() + 60
        while any(position(consumer, tp) < ends[tp] for tp in starts) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(r for r in batch if r.offset < ends[KTP(r.topic, r.partition)])
        return records
    finally:
        consumer.close()


# ---------------------------------------------------------------- the verdict


@dataclass
class Result:
    scenario: str
    acked: int = 0
    lost: int = 0
    dup: int = 0
    stale: int = 0
    dlq: int = 0
    fivexx: int = 0
    recovered_s: float | None = None
    recovery_measured: bool = True  # False for a scenario without a fault
    problems: list[str] = field(default_factory=list)
    figures: dict[str, object] = field(default_factory=dict)  # scenario-specific measurements

    @property
    def ok(self) -> bool:
        recovered = self.recovered_s is not None or not self.recovery_measured
        return not self.problems and not self.lost and not self.dup and not self.stale and recovered

    def line(self) -> str:
        recovered = "never" if self.recovered_s is None else f"{self.recovered_s:.1f}"
        if not self.recovery_measured:
            recovered = "n/a"
        return (
            f"{self.scenario} acked={self.acked} lost={self.lost} dup={self.dup} stale={self.stale} "
            f"dlq={self.dlq} 5xx={self.fivexx} recovered_s={recovered}"
            + "".join(f" {name}={value}" for name, value in self.figures.items())
        )


class Run:
    """One scenario's world: the system, its devices, the ledger and the PostgreSQL monitor."""

    def __init__(
        self,
        settings: Settings,
        scenario: str,
        *,
        worker_processes: int = 2,
        env: dict | None = None,
        static: bool = False,
        async_actor: bool = False,
    ):
        self.settings = settings
        self.scenario = scenario
        self.run_id = f"{scenario}-{uuid.uuid4().hex[:6]}"
        modules = ("tasks", ASYNC_MODULE) if async_actor else ("tasks",)
        self.system = System(
            settings, self.run_id, worker_processes=worker_processes, env=env, static=static, modules=modules
        )
        self.ledger = Ledger()
        self.engine = make_engine(settings, pool_size=2, max_overflow=0)
        self.redis = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
        self.stored = Stored(self.engine, f"chaos-{self.run_id}-")
        self.dlq_start = dead_letter_ends(settings)
        self.result = Result(scenario)
        self.sender: AsyncSender | None = None
        self._sender_broker = None
        if async_actor:
            ensure_async_actor(settings, self.engine)
            # this process only sends: a broker with AsyncIO, which an async actor's declaration needs
            self._sender_broker = make_broker(settings, middleware=[AsyncIO()])
            set_broker(self._sender_broker)
            importlib.import_module(ASYNC_MODULE)  # declares the actor on it
            self.sender = AsyncSender(self.run_id)

    @contextlib.contextmanager
    def running(self) -> Iterator[Run]:
        processes = self.system.worker_processes
        log(f"{self.scenario}: starting the API and worker.py -p {processes} (logs {self.system.logs})")
        self.system.start()
        self.stored.start()
        if self.sender:
            self.sender.start()
        try:
            yield self
        finally:
            if self.sender:
                self.sender.stop()
            if self._sender_broker:
                self._sender_broker.close()
            self.stored.stop()
            self.system.stop()
            self.engine.dispose()

    def devices(self, **options) -> Devices:
        return Devices(self.system.url, self.ledger, self.run_id, **options)

    def finish(
        self,
        devices: Devices,
        *,
        fault_end: float,
        drain_timeout: float = 120,
        max_recovery_s: float = 60,
        measure_recovery: bool = True,
    ) -> Result:
        """Stop the load, wait for the drain, and fill in the result (``measure_recovery=False``
        for a scenario without a fault: nothing to recover from)."""
        devices.stop()
        if self.sender:
            self.sender.stop()
        result = self.result
        acked = self.ledger.acked()
        result.acked = len(acked)
        result.fivexx = self.ledger.count(lambda p: p.status >= 500)
        wanted = {p.request_id for p in acked}
        drained = wait_until(lambda: wanted <= self.stored.first_seen.keys(), timeout=drain_timeout, interval=0.5)
        with contextlib.suppress(Exception):
            self.stored.poll()
        result.lost = len(wanted - self.stored.first_seen.keys())
        if not drained:
            result.problems.append(f"not drained within {drain_timeout:.0f}s")
        self._check_rows(acked, devices.ids)
        letters = dead_letters_since(self.settings, self.dlq_start)
        result.dlq = len(letters)
        result.recovery_measured = measure_recovery
        if measure_recovery:
            self._recovery(acked, fault_end, max_recovery_s)
        if self.sender:
            self._check_async(letters, drain_timeout)
        return result

    def _stored_async(self) -> dict[str, int]:
        """``{ledger_id: deliveries}`` of this run's rows in the async actor's table."""
        from tests.chaos import async_actors

        with self.engine.connect() as conn:
            rows = conn.execute(
                text(f"SELECT ledger_id, deliveries FROM {async_actors.TABLE} WHERE run_id = :r"), {"r": self.run_id}
            ).all()
        return {ledger_id: deliveries for ledger_id, deliveries in rows}

    def _check_async(self, letters: list, drain_timeout: float) -> None:
        """The async actor's ledger: every acknowledged send stored (its table's primary key makes
        a second store impossible; ``deliveries`` counts the redeliveries it absorbed). The actor
        never fails by itself, so a dead letter of it is a problem too. Figures: ``async_sent``
        (acknowledged), ``async_stored``, ``async_missing``, ``async_redelivered``, ``async_dlq``,
        ``async_send_failed``."""
        from tests.chaos import async_actors

        assert self.sender is not None
        wanted = set(self.sender.acked)

        def async_letters(records: list) -> dict[str, str]:
            dead: dict[str, str] = {}
            for record in records:
                with contextlib.suppress(Exception):  # another actor's letter, or an undecodable one
                    message = Message.decode(record.value)
                    if message.actor_name == async_actors.ACTOR_NAME and message.args[0] == self.run_id:
                        dead[message.args[1]] = dict(record.headers or []).get("dlq.reason", b"").decode()
            return dead

        dead = async_letters(letters)
        stored: dict[str, int] = {}

        def drained() -> bool:
            stored.clear()
            stored.update(self._stored_async())
            return wanted <= stored.keys() | dead.keys()

        if not wait_until(drained, timeout=drain_timeout, interval=0.5):
            dead = async_letters(dead_letters_since(self.settings, self.dlq_start))  # written meanwhile
            if not drained():
                self.result.problems.append(f"async actor not drained within {drain_timeout:.0f}s")
        missing = wanted - stored.keys() - dead.keys()
        figures = self.result.figures
        figures["async_sent"] = len(wanted)
        figures["async_stored"] = len(wanted & stored.keys())
        figures["async_missing"] = len(missing)
        figures["async_redelivered"] = sum(1 for i in wanted if stored.get(i, 0) > 1)
        figures["async_dlq"] = len(dead)
        figures["async_send_failed"] = self.sender.failed
        if missing:
            self.result.problems.append(f"{len(missing)} acknowledged async messages lost: {sorted(missing)[:5]}")
        if dead:  # the actor never fails by itself: a kill must lead to a redelivery, not a dead letter
            reasons = sorted(set(dead.values()))
            self.result.problems.append(f"{len(dead)} async messages dead-lettered (reasons {reasons})")

    def processing_latency(self) -> dict[str, float]:
        """Seconds from each acknowledged event's 202 until it was first seen stored: p50, p99, max."""
        seen = self.stored.first_seen
        waits = sorted(max(0.0, seen[p.request_id] - p.done) for p in self.ledger.acked() if p.request_id in seen)
        if not waits:
            return {}

        def at(q: float) -> float:
            return round(waits[min(len(waits) - 1, int(q * len(waits)))], 1)

        return {"latency_p50_s": at(0.50), "latency_p99_s": at(0.99), "latency_max_s": round(waits[-1], 1)}

    def first_stored_after(self, moments: list[float]) -> list[float]:
        """For each moment (a restart), seconds until the next event was first seen stored."""
        times = sorted(self.stored.first_seen.values())
        out = []
        for moment in moments:
            later = [t for t in times if t >= moment]
            out.append(round(later[0] - moment, 1) if later else float("inf"))
        return out

    def _check_rows(self, acked: list[Post], device_ids: list[str]) -> None:
        """dup: an acknowledged event stored more than once; stale: a resource (in PostgreSQL,
        through the API, or in the cache) behind its device's newest acknowledged event. Where
        several writers post for one id (stale-race), their sequence numbers do not say which
        event is newest: there the API and the cache must agree with the row, and the scenario
        checks the row against the newest stored event itself."""
        with self.engine.connect() as conn:
            dup = conn.execute(
                text(
                    "SELECT count(*) FROM (SELECT device_id, payload->>'writer', payload->>'seq' FROM events "
                    "WHERE device_id = ANY(:d) GROUP BY 1, 2, 3 HAVING count(*) > 1) twice"
                ),
                {"d": device_ids},
            ).scalar_one()
            rows = {
                r.id: r
                for r in conn.execute(
                    text("SELECT id, payload, version FROM resources WHERE id = ANY(:d)"), {"d": device_ids}
                )
            }
        self.result.dup = dup
        newest: dict[str, int] = defaultdict(int)
        writers: dict[str, set[str]] = defaultdict(set)
        for post in acked:
            newest[post.device] = max(newest[post.device], post.seq)
            writers[post.device].add(post.writer)
        headers = {"Authorization": f"Bearer {token()}"}
        stale = []
        for device, seq in newest.items():
            row = rows.get(device)
            status, body = http_get(self.system.url, f"/resource/{device}", headers)
            served = json.loads(body) if status == 200 else {}
            cached = self.redis.get(cache_key(device))
            cached_doc = json.loads(cached) if cached else None
            if len(writers[device]) > 1:
                behind = row is None or served.get("version") != row.version
            else:
                behind = row is None or row.payload["seq"] < seq or served.get("payload", {}).get("seq", -1) < seq
            if behind or (cached_doc is not None and row is not None and cached_doc["version"] != row.version):
                stale.append(device)
        self.result.stale = len(stale)
        if stale:
            self.result.problems.append(f"stale: {stale[:5]}")

    def _recovery(self, acked: list[Post], fault_end: float, max_recovery_s: float) -> None:
        """Seconds from the end of the fault until writers are answered again and everything
        acknowledged before then is stored."""
        writers = self.ledger.first_ack_after(fault_end)
        seen = self.stored.first_seen
        before = [seen.get(p.request_id) if p.request_id is not None else None for p in acked if p.done <= fault_end]
        if writers is None or None in before:
            self.result.recovered_s = None
            self.result.problems.append("did not recover")
            return
        stored_at = max([t for t in before if t is not None], default=fault_end)
        self.result.recovered_s = max(0.0, writers - fault_end, stored_at - fault_end)
        if self.result.recovered_s > max_recovery_s:
            self.result.problems.append(f"recovery took {self.result.recovered_s:.1f}s (limit {max_recovery_s:.0f}s)")
