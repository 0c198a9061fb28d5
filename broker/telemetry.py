"""Telemetry: what the workers do, sampled into Redis for a dashboard (the ``/admin`` console).

``broker.add_middleware(Telemetry(redis_client, lag=...))`` in every worker process. Every
``interval_s`` each process adds its counts to a 10-second bucket (``processed``, ``failed``,
``retried``, ``dead_letters`` per actor; kept an hour), writes its own status (host, pid, state,
partitions, in flight, retrying; dropped when it stops refreshing), and one process at a time
(holding a short Redis lease) samples the group's lag per partition and the oldest unprocessed
record's age through ``lag()``, with the number of live worker processes beside it. Counting
costs a dictionary update per message; Redis sees one pipeline per process per interval. A
Redis outage loses samples, never work: telemetry errors are logged and the worker goes on.

:class:`TelemetryReader` reads it back for the console.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from broker.middleware.middleware import Middleware

if TYPE_CHECKING:
    from broker.broker import Broker
    from broker.consumer import Record
    from broker.message import Message
    from broker.proxy import MessageProxy
    from broker.worker import Worker

log = logging.getLogger(__name__)

BUCKET_S = 10
RETENTION_S = 3600
KINDS = ("processed", "failed", "retried", "dead_letters")
LagSampler = Callable[[], dict[str, Any]]  # -> {"partitions": [...], "total_lag": n, "oldest_age_s": s}


def bucket_of(moment: float) -> int:
    return int(moment // BUCKET_S) * BUCKET_S


class Telemetry(Middleware):
    """Samples counts, worker status and lag into Redis (see the module docstring).

    Parameters: ``client`` (redis-py), ``lag`` (returns the group's lag report, or None to not
    sample lag), ``prefix`` of the keys, ``interval_s`` between flushes.
    """

    def __init__(
        self, client: Any, *, lag: LagSampler | None = None, prefix: str = "telemetry", interval_s: float = 5.0
    ) -> None:
        self.client = client
        self.lag = lag
        self.prefix = prefix
        self.interval_s = interval_s
        self.member = f"{socket.gethostname()}:{os.getpid()}"
        self._lease_owner = f"{self.member}:{uuid.uuid4().hex[:8]}"
        self._counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._worker: Worker | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ counting (worker threads)

    def _count(self, actor: str, kind: str) -> None:
        with self._lock:
            self._counts[(actor, kind)] += 1

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        if exception is None:
            self._count(message.actor_name, "processed")
        elif not message.transient:
            self._count(message.actor_name, "failed")

    def on_retry(self, broker: Broker, message: MessageProxy, delay_ms: int) -> None:
        self._count(message.actor_name, "retried")

    def on_dead_letter(self, broker: Broker, record: Record, message: Message | None, exception: BaseException) -> None:
        self._count(message.actor_name if message is not None else "(undecodable)", "dead_letters")

    # ------------------------------------------------------------ the sampling thread

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        self._worker = worker
        self._thread = threading.Thread(target=self._run, name="telemetry", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._forget_self()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()

    def flush(self) -> None:
        """Write counts and status now (and lag, if this process holds the lease)."""
        with self._lock:
            counts, self._counts = self._counts, Counter()
        now = time.time()
        key = f"{self.prefix}:counts:{bucket_of(now)}"
        try:
            pipe = self.client.pipeline(transaction=False)
            for (actor, kind), n in counts.items():
                pipe.hincrby(key, f"{actor}|{kind}", n)
            pipe.expire(key, RETENTION_S + 60)
            if self._worker is not None:
                status = {**self._worker.status(), "host": socket.gethostname(), "pid": os.getpid(), "updated": now}
                pipe.hset(f"{self.prefix}:workers", self.member, json.dumps(status))
            pipe.execute()
            self._sample_lag(now)
        except Exception as exc:  # telemetry must never hurt the work
            log.warning("telemetry not written", extra={"error": f"{type(exc).__name__}: {exc}"})
            with self._lock:
                self._counts.update(counts)  # counted again next time

    def _sample_lag(self, now: float) -> None:
        if self.lag is None:
            return
        lease = f"{self.prefix}:lag-sampler"
        ttl_ms = int(self.interval_s * 3000)
        taken = self.client.set(lease, self._lease_owner, nx=True, px=ttl_ms)
        if not taken:
            holder = self.client.get(lease)
            if holder is None or holder.decode() != self._lease_owner:
                return
            self.client.pexpire(lease, ttl_ms)
        report = {**self.lag(), "at": now, "workers": self._live_workers(now)}
        store_lag_sample(self.client, self.prefix, report)
        self.client.set(f"{self.prefix}:lag:latest", json.dumps(report), ex=RETENTION_S + 60)

    def _live_workers(self, now: float) -> int:
        """Worker processes whose status is fresh (written within three intervals): charted beside
        the lag, so scaling shows next to the backlog it answers."""
        statuses = self.client.hvals(f"{self.prefix}:workers")
        return sum(1 for value in statuses if now - json.loads(value).get("updated", 0) <= 3 * self.interval_s)

    def _forget_self(self) -> None:
        try:
            self.flush()
            self.client.hdel(f"{self.prefix}:workers", self.member)
        except Exception as exc:
            log.warning("telemetry not cleared", extra={"error": str(exc)})


def store_lag_sample(client: Any, prefix: str, report: dict[str, Any]) -> None:
    """Keep ``report`` as its 10-second bucket's lag sample, unless the bucket already holds a
    larger total: a chart of the hour shows each bucket's peak, not whichever sample came last.
    The bucket's worker count is the largest either sample saw."""
    key = f"{prefix}:lag:{bucket_of(report['at'])}"
    held = client.get(key)
    kept = json.loads(held) if held is not None else None
    if kept is None or kept.get("total_lag", 0) <= report.get("total_lag", 0):
        kept, report = report, kept or {}
    elif report.get("workers") is None:
        return
    # the worker processes: the most seen in the bucket, whichever sample holds the peak lag
    counts = [n for n in (kept.get("workers"), report.get("workers")) if n is not None]
    if counts:
        kept["workers"] = max(counts)
    client.set(key, json.dumps(kept), ex=RETENTION_S + 60)


class TelemetryReader:
    """Reads what :class:`Telemetry` wrote: series over the last hour, live workers, latest lag."""

    def __init__(self, client: Any, *, prefix: str = "telemetry", stale_after_s: float = 20.0) -> None:
        self.client = client
        self.prefix = prefix
        self.stale_after_s = stale_after_s

    def buckets(self, now: float | None = None, span_s: int = RETENTION_S) -> list[int]:
        last = bucket_of(now if now is not None else time.time())
        return list(range(last - span_s + BUCKET_S, last + BUCKET_S, BUCKET_S))

    def counts(self, now: float | None = None) -> tuple[list[int], dict[str, dict[str, list[int]]]]:
        """(bucket starts, {actor: {kind: [count per bucket]}}) over the last hour."""
        buckets = self.buckets(now)
        pipe = self.client.pipeline(transaction=False)
        for bucket in buckets:
            pipe.hgetall(f"{self.prefix}:counts:{bucket}")
        series: dict[str, dict[str, list[int]]] = {}
        for i, fields in enumerate(pipe.execute()):
            for field, value in fields.items():
                actor, _, kind = field.decode().rpartition("|")
                per_kind = series.setdefault(actor, {k: [0] * len(buckets) for k in KINDS})
                if kind in per_kind:
                    per_kind[kind][i] = int(value)
        return buckets, series

    def lag(self, now: float | None = None) -> tuple[list[int], list[dict[str, Any] | None]]:
        """(bucket starts, the lag report sampled in each bucket or None) over the last hour."""
        buckets = self.buckets(now)
        values = self.client.mget([f"{self.prefix}:lag:{b}" for b in buckets])
        return buckets, [json.loads(v) if v else None for v in values]

    def record_lag(self, report: dict[str, Any]) -> None:
        """Keep a lag report measured elsewhere (the console's own reading, taken when no worker
        samples) as this bucket's sample, so the chart goes on while no worker runs."""
        store_lag_sample(self.client, self.prefix, {**report, "at": time.time()})

    def latest_lag(self) -> dict[str, Any] | None:
        value = self.client.get(f"{self.prefix}:lag:latest")
        return json.loads(value) if value else None

    def workers(self) -> list[dict[str, Any]]:
        """Worker processes that reported within ``stale_after_s``; older entries are removed."""
        now = time.time()
        live: list[tuple[Any, dict[str, Any]]] = []
        stale: list[tuple[Any, dict[str, Any]]] = []
        for member, value in self.client.hgetall(f"{self.prefix}:workers").items():
            status = json.loads(value)
            (live if now - status.get("updated", 0) <= self.stale_after_s else stale).append((member, status))
        if stale:
            self.client.hdel(f"{self.prefix}:workers", *[m for m, _ in stale])
        return sorted((s for _, s in live), key=lambda s: (s.get("host", ""), s.get("pid", 0)))
