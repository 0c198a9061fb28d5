"""The chaos scenarios. Each runs the real system under load, injects one fault from outside, and
returns a :class:`~tests.chaos.harness.Result`. ``short`` is the CI version: the same fault,
fewer repetitions and shorter outages."""

from __future__ import annotations

import http.client
import json
import random
import subprocess
import threading
import time
import uuid
from collections.abc import Callable

from kafka import KafkaAdminClient, KafkaProducer
from sqlalchemy import text

from broker.brokers.kafka import client_options
from broker.message import Message
from core.cache import cache_key
from core.settings import Settings
from tests.chaos.hangs import HANG_SCENARIOS
from tests.chaos.harness import Result, Run, dead_letters_since
from tests.chaos.load import Readers
from tests.chaos.system import INPUT_TOPIC, ROOT, http_get, log, stack, token, wait_until

WARM_UP_S = 5
# worker-kill's bounds with static membership (measured: 0.3-2.3 s and p99 10 s on a busy 2-core
# machine; dynamic members: up to 49 s and 59 s). The first includes starting worker.py itself.
STATIC_FIRST_STORED_S = 5.0
STATIC_LATENCY_P99_S = 15.0


def outage(scenario: str, server: str, seconds: float) -> tuple[float, float]:
    """Stop ``server`` (``scripts/stack stop``) for ``seconds``, start it again; returns when the
    outage began and when the server was back."""
    log(f"{scenario}: stopping {server} for {seconds:.0f} s")
    began = time.monotonic()
    stack("stop", server)
    time.sleep(seconds)
    stack("up")
    back = time.monotonic()
    log(f"{scenario}: {server} is back after {back - began:.1f}s")
    return began, back


def worker_kill(settings: Settings, short: bool, *, static: bool = True) -> Result:
    """SIGKILL the whole worker (supervisor and children) again and again under load.

    The worker processes are static members (``--instance-id``): each restart takes its partitions
    back without a rebalance. ``worker-kill-dynamic`` runs the same storm without, for comparison.
    Beyond the ledger's checks it reports, per restart, the seconds until the next event was stored
    (``first_stored_s``: the longest, and every one; a restart killed again before it stored
    anything counts in ``killed_first`` instead), and the 202 -> stored latency. An ``async def``
    actor runs in the same worker under the same kills, with its own ledger (``async_*`` figures;
    :mod:`tests.chaos.async_actors`)."""
    kills = 4 if short else 10
    run = Run(settings, "worker-kill" if static else "worker-kill-dynamic", static=static, async_actor=True)
    kills_at: list[float] = []
    restarts: list[float] = []
    with run.running():
        devices = run.devices().start()
        time.sleep(WARM_UP_S)
        for i in range(kills):
            time.sleep(random.uniform(2, 5))
            killed = run.system.kill_worker()
            kills_at.append(time.monotonic())
            pause = random.uniform(0.5, 3)
            log(f"{run.scenario}: kill {i + 1}/{kills}: SIGKILL to {killed} processes; restarting in {pause:.1f}s")
            time.sleep(pause)
            restarts.append(time.monotonic())
            run.system.start_worker()
        fault_end = time.monotonic()
        time.sleep(10 if short else 20)
        result = run.finish(devices, fault_end=fault_end, max_recovery_s=30)
        next_kills = [*kills_at[1:], float("inf")]
        first_stored = run.first_stored_after(restarts)
        finished = [s for s, start, kill in zip(first_stored, restarts, next_kills, strict=True) if start + s < kill]
        latency = run.processing_latency()
        result.figures.update(latency)
        slowest = max(finished, default=None)
        result.figures["first_stored_max_s"] = slowest
        result.figures["first_stored_s"] = ",".join(str(s) for s in finished)
        result.figures["killed_first"] = len(first_stored) - len(finished)
        if static:  # the point of static membership: no wait for dead sessions, no rebalance
            p99 = latency.get("latency_p99_s")
            if slowest is not None and slowest > STATIC_FIRST_STORED_S:
                result.problems.append(f"a restart took {slowest}s to store (limit {STATIC_FIRST_STORED_S}s)")
            if p99 is not None and p99 > STATIC_LATENCY_P99_S:
                result.problems.append(f"202 -> stored p99 {p99}s (limit {STATIC_LATENCY_P99_S}s)")
        return result


def worker_kill_dynamic(settings: Settings, short: bool) -> Result:
    """:func:`worker_kill` with dynamic members: each restart waits for the dead members' sessions."""
    return worker_kill(settings, short, static=False)


def kafka_restart(settings: Settings, short: bool) -> Result:
    """Kafka down for 10 s under load: 503s during the outage only, writers back within seconds."""
    run = Run(settings, "kafka-restart")
    with run.running():
        devices = run.devices().start()
        time.sleep(WARM_UP_S)
        _, fault_end = outage("kafka-restart", "kafka", 10)
        time.sleep(10 if short else 20)
        result = run.finish(devices, fault_end=fault_end, max_recovery_s=15)
        if result.recovered_s is not None:
            back = fault_end + result.recovered_s
            late = [p for p in run.ledger.posts if p.status != 202 and p.sent > back + 1]
            if late:
                when = sorted(f"+{p.sent - fault_end:.1f}s:{p.status}" for p in late)
                result.problems.append(f"{len(late)} posts failed after the API had recovered: {when[:10]}")
        return result


def postgres_outage(settings: Settings, short: bool) -> Result:
    """PostgreSQL down far longer than the retry schedule (2 + 4 + 8 s): nothing dead-lettered."""
    seconds = 20 if short else 120
    run = Run(settings, "postgres-outage")
    with run.running():
        devices = run.devices().start()
        time.sleep(WARM_UP_S)
        _, fault_end = outage("postgres-outage", "postgres", seconds)
        time.sleep(10)
        result = run.finish(devices, fault_end=fault_end, max_recovery_s=45)
        if result.dlq:
            result.problems.append(f"{result.dlq} events dead-lettered during a database outage")
        return result


def redis_outage(settings: Settings, short: bool) -> Result:
    """Redis down for 30 s: every read is still answered from PostgreSQL."""
    seconds = 10 if short else 30
    run = Run(settings, "redis-outage")
    with run.running():
        devices = run.devices().start()
        headers = {"Authorization": f"Bearer {token()}"}
        wait_until(lambda: all(http_get(run.system.url, f"/resource/{d}", headers)[0] == 200 for d in devices.ids), 30)
        readers = Readers(run.system.url, run.ledger, devices.ids).start()
        time.sleep(WARM_UP_S)
        _, fault_end = outage("redis-outage", "redis", seconds)
        time.sleep(10)
        readers.stop()
        result = run.finish(devices, fault_end=fault_end)
        failed_reads = [status for _, status in run.ledger.reads if status != 200]
        if failed_reads:
            result.problems.append(
                f"{len(failed_reads)} of {len(run.ledger.reads)} reads were not 200: {failed_reads[:5]}"
            )
        return result


def _poison_records(run_id: str, count: int) -> list[tuple[bytes, bytes | None, str]]:
    """(key, value, expected dlq.reason) for ``count`` bad records of four kinds."""
    records: list[tuple[bytes, bytes | None, str]] = []
    for i in range(count):
        key = f"chaos-{run_id}-poison{i}".encode()
        kind = i % 4
        if kind == 0:
            records.append((key, None, "undecodable"))  # a tombstone
        elif kind == 1:
            records.append((key, b"\xff this is not JSON", "undecodable"))
        elif kind == 2:
            message = Message(actor_name="no_such_actor", topic=INPUT_TOPIC, key=key.decode())
            records.append((key, message.encode(), "unknown_actor"))
        else:
            event = {"request_id": str(uuid.uuid4()), "device_id": key.decode(), "user_id": "chaos",
                     "received_at": "2026-01-01T00:00:00+00:00", "payload": {"text": "a\u0000b"}}  # fmt: skip
            message = Message(actor_name="process_event", topic=INPUT_TOPIC, args=(event,), key=key.decode())
            records.append((key, message.encode(), "failed"))  # PostgreSQL cannot store the NUL
    return records


def poison(settings: Settings, short: bool) -> Result:
    """1,000 bad records amid good traffic: all dead-lettered with their reason, good ones never wait."""
    count = 200 if short else 1000
    run = Run(settings, "poison")
    with run.running():
        devices = run.devices().start()
        latencies: list[float] = []
        probe_stop = threading.Event()
        probe = threading.Thread(target=_probe_freshness, args=(run, probe_stop, latencies), daemon=True)
        probe.start()
        time.sleep(WARM_UP_S)
        bad = _poison_records(run.run_id, count)
        log(f"poison: producing {count} bad records amid the traffic")
        producer = KafkaProducer(**client_options(**settings.kafka_options), acks="all", linger_ms=5)
        for key, value, _ in bad:
            producer.send(INPUT_TOPIC, key=key, value=value)
            time.sleep(0.002)
        producer.flush()
        producer.close()
        fault_end = time.monotonic()
        time.sleep(10)
        probe_stop.set()
        probe.join(timeout=30)
        result = run.finish(devices, fault_end=fault_end)
        letters = dead_letters_since(settings, run.dlq_start)
        reasons = {}
        for record in letters:
            headers = dict(record.headers or [])
            reasons[record.key] = headers.get("dlq.reason", b"").decode()
        wrong = [k for k, _, reason in bad if reasons.get(k) != reason]
        if wrong:
            result.problems.append(f"{len(wrong)} bad records not dead-lettered with the right reason: {wrong[:3]}")
        slowest = max(latencies, default=None)
        log(f"poison: freshness of good events: {len(latencies)} probes, slowest {slowest}")
        if slowest is None or slowest > 1.0:
            result.problems.append(f"a good event waited {slowest}s (limit 1 s)")
        return result


def _probe_freshness(run: Run, stop: threading.Event, latencies: list[float]) -> None:
    """Post to a probe device and time how long until ``GET /resource`` shows it."""
    device = f"chaos-{run.run_id}-probe"
    headers = {"Authorization": f"Bearer {token()}", "Content-Type": "application/json"}
    seq = 0
    while not stop.wait(0.5):
        seq += 1
        conn = http.client.HTTPConnection(run.system.url, timeout=10)
        try:
            conn.request(
                "POST", "/events", body=json.dumps({"device_id": device, "payload": {"seq": seq}}), headers=headers
            )
            status = conn.getresponse().status
        except (OSError, http.client.HTTPException):
            status = 0
        finally:
            conn.close()
        if status != 202:
            continue
        accepted = time.monotonic()

        def shows(seq: int = seq) -> bool:
            status, data = http_get(run.system.url, f"/resource/{device}", headers)
            return status == 200 and json.loads(data)["payload"]["seq"] >= seq

        if wait_until(shows, timeout=10, interval=0.02):
            latencies.append(time.monotonic() - accepted)
        else:
            latencies.append(10.0)


def stale_race(settings: Settings, short: bool) -> Result:
    """Many writers and readers on one id: once quiet, the database, the API and the cache agree
    on the newest event."""
    run = Run(settings, "stale-race")
    with run.running():
        writers = run.devices(count=1, rate=60, prefix="race")
        extra = [run.devices(count=1, rate=60, prefix="race") for _ in range(3)]  # same id: four writers
        for group in (writers, *extra):
            group.start()
        readers = [Readers(run.system.url, run.ledger, writers.ids, rate=50).start() for _ in range(3)]
        time.sleep(10 if short else 30)
        for group in extra:
            group.stop()
        for reader in readers:
            reader.stop()
        # no fault here but the race itself: no recovery to measure, and no write after the race,
        # which would overwrite (and so hide) a stale row or cache entry it left
        result = run.finish(writers, fault_end=time.monotonic(), measure_recovery=False)
        device = writers.ids[0]
        with run.engine.connect() as conn:
            newest = conn.execute(
                text(
                    "SELECT request_id FROM events WHERE device_id = :d "
                    "ORDER BY received_at DESC, request_id DESC LIMIT 1"
                ),
                {"d": device},
            ).scalar_one()
            row = conn.execute(
                text("SELECT event_request_id, version FROM resources WHERE id = :d"), {"d": device}
            ).one()
        status, body = http_get(run.system.url, f"/resource/{device}", {"Authorization": f"Bearer {token()}"})
        cached = run.redis.get(cache_key(device))
        served = json.loads(body)["version"] if status == 200 else None
        in_cache = json.loads(cached)["version"] if cached is not None else None
        checks = {
            "row_is_newest": str(row.event_request_id) == str(newest),
            "api_serves_row": served == row.version,
            "cache_holds_row": in_cache in (None, row.version),
        }
        result.stale = int(not all(checks.values()))
        if result.stale:
            result.figures.update(row_version=row.version, served=served, cached=in_cache, **checks)
        return result


def kafka_cluster(settings: Settings, short: bool) -> Result:
    """A 3-broker cluster (replication factor 3, min.insync.replicas 2): SIGKILL the leader of a busy
    partition mid-ingest, bring it back later. Not one acknowledged event may be lost."""
    stack("up", "--brokers", "3")
    cluster = subprocess.run(
        [str(ROOT / "scripts" / "stack"), "cluster-bootstrap"], check=True, capture_output=True, text=True
    ).stdout.strip()
    cluster_settings = settings.replace(kafka_bootstrap_servers=cluster)
    run = Run(cluster_settings, "kafka-cluster")
    try:
        with run.running():
            devices = run.devices().start()
            time.sleep(WARM_UP_S)
            admin = KafkaAdminClient(**client_options(**cluster_settings.kafka_options))
            (topic,) = admin.describe_topics([INPUT_TOPIC])
            admin.close()
            leader = next(p["leader_id"] for p in topic["partitions"] if p["partition_index"] == 0)
            log(f"kafka-cluster: SIGKILL to node {leader}, the leader of {INPUT_TOPIC}-0")
            fault_end = time.monotonic()
            stack("stop", "kafka-node", str(leader))
            time.sleep(10 if short else 20)
            log(f"kafka-cluster: starting node {leader} again")
            stack("start", "kafka-node", str(leader))
            time.sleep(10)
            return run.finish(devices, fault_end=fault_end, max_recovery_s=30)
    finally:
        stack("stop", "kafka-cluster")


SCENARIOS: dict[str, Callable[[Settings, bool], Result]] = {
    "worker-kill": worker_kill,
    "worker-kill-dynamic": worker_kill_dynamic,
    "kafka-restart": kafka_restart,
    "postgres-outage": postgres_outage,
    "redis-outage": redis_outage,
    "poison": poison,
    "stale-race": stale_race,
    "kafka-cluster": kafka_cluster,
}

SCENARIOS.update(HANG_SCENARIOS)  # faults that hang instead of fail (tests/chaos/hangs.py)
