"""What the console shows, gathered from Kafka (live lag, the group, dead letters) and from the
workers' telemetry in Redis (rates and lag over the last hour, live worker processes), and shaped
for its pages (:func:`overview`, :func:`group`, :func:`actor_registry`): the views in
:mod:`app.admin.routes` only read the request and render."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

from app.admin.charts import line_chart
from broker import admin as kafka_admin
from broker import get_broker
from broker.errors import BrokerError
from broker.telemetry import BUCKET_S, KINDS, TelemetryReader
from core.settings import Settings

REPLAYED_KEY = "admin:replayed"  # hash "partition:offset" -> when the console replayed that dead letter
STALE_SAMPLE_S = 30  # older lag samples mean no worker samples: the console measures the age itself


def describe_group(group_id: str) -> dict[str, Any]:
    return kafka_admin.describe_group(kafka_options(), group_id)


def kafka_options() -> dict[str, Any]:
    """kafka-python client options: the API's own broker's (one place builds them)."""
    options = getattr(get_broker(), "client_options", None)
    if options is None:
        raise BrokerError("the console needs the Kafka broker")
    return options


def live_lag(settings: Settings, topics: list[str]) -> dict[str, Any]:
    """The worker group's lag now, per partition, straight from Kafka."""
    return kafka_admin.consumer_lag(kafka_options(), settings.kafka_consumer_group, topics)


def oldest_age(report: dict[str, Any]) -> float:
    """How old the oldest record the group has not processed is, in seconds."""
    return kafka_admin.oldest_unprocessed_age_s(kafka_options(), report)


def actor_rates(reader: TelemetryReader, retrying_now: dict[str, int]) -> tuple[list[dict[str, Any]], int]:
    """Per actor: rates over the last minute, the last hour's series, dead letters in the hour."""
    buckets, series = reader.counts()
    minute = 60 // BUCKET_S
    rows = []
    for actor in sorted(series):
        per_kind = series[actor]
        rows.append(
            {
                "actor": actor,
                "processed_per_s": sum(per_kind["processed"][-minute:]) / 60,
                "failed_per_s": sum(per_kind["failed"][-minute:]) / 60,
                "retrying": retrying_now.get(actor, 0),
                "dead_letters_hour": sum(per_kind["dead_letters"]),
                "series": {k: [v / BUCKET_S for v in per_kind[k]] for k in KINDS},
            }
        )
    return rows, len(buckets)


def lag_series(
    reader: TelemetryReader,
) -> tuple[list[float | None], list[float | None], dict[str, list[float | None]]]:
    """(total lag, oldest unprocessed age in s, {"topic-partition": lag}) per 10-second bucket
    over the last hour."""
    _, reports = reader.lag()
    totals = [r["total_lag"] if r else None for r in reports]
    ages = [r.get("oldest_age_s") if r else None for r in reports]
    names = sorted({f"{p['topic']}-{p['partition']}" for r in reports if r for p in r.get("partitions", [])})
    per_partition: dict[str, list[float | None]] = {name: [] for name in names}
    for report in reports:
        lags = {f"{p['topic']}-{p['partition']}": p["lag"] for p in (report or {}).get("partitions", [])}
        for name in names:
            per_partition[name].append(lags.get(name))
    return totals, ages, per_partition


def worker_series(reader: TelemetryReader) -> tuple[list[float | None], list[dict[str, Any]]]:
    """(live worker processes per 10-second bucket over the last hour, the scaling events): an
    event is a bucket whose count differs from the last known one, with when, from and to."""
    buckets, reports = reader.lag()
    counts: list[float | None] = [r.get("workers") if r else None for r in reports]
    events, last = [], None
    for index, (bucket, count) in enumerate(zip(buckets, counts, strict=True)):
        if count is None:
            continue
        if last is not None and count != last:
            events.append({"index": index, "at": bucket, "from": last, "to": count})
        last = count
    return counts, events


PAGE_PER_PARTITION = 100  # dead letters read per partition for one page: a burst of 1 MB letters stays bounded


def dead_letters(
    settings: Settings, redis: Any, *, actor: str = "", error: str = "", since_hours: float = 0, page: int = 0
) -> list:
    """Dead letters of one page (newest first: page 0 holds each partition's newest
    PAGE_PER_PARTITION, page 1 the ones before them...), filtered; each a summary dict plus
    replay state. Reading a page at a time keeps a burst of large dead letters from holding the
    API process's loop (and memory) for the whole topic."""
    records = kafka_admin.recent_dead_letters(
        kafka_options(), settings.kafka_topic_dlq, per_partition=PAGE_PER_PARTITION, skip=page * PAGE_PER_PARTITION
    )
    replayed = {k.decode(): v.decode() for k, v in redis.hgetall(REPLAYED_KEY).items()}
    cutoff = time.time() * 1000 - since_hours * 3_600_000 if since_hours else None
    rows = []
    for record in records:
        if cutoff is not None and record.timestamp < cutoff:
            continue
        summary = kafka_admin.describe_dead_letter(record)
        if actor and summary.get("actor") != actor:
            continue
        if error and error.lower() not in (summary.get("exception.type") or "").lower():
            continue
        summary["replayed_at"] = replayed.get(f"{record.partition}:{record.offset}")
        rows.append(summary)
    return rows


def dead_letter(settings: Settings, redis: Any, partition: int, offset: int) -> dict[str, Any] | None:
    """One dead letter in full: its summary, every header, the message and the traceback's end."""
    records = kafka_admin.read_records(kafka_options(), settings.kafka_topic_dlq, [(partition, offset)])
    if not records:
        return None
    summary = kafka_admin.describe_dead_letter(records[0], show_body=True)
    summary["headers"] = {k: v.decode("utf-8", "replace") for k, v in (records[0].headers or [])}
    traceback = summary.get("exception.traceback") or ""
    summary["traceback_summary"] = "\n".join(traceback.strip().splitlines()[-12:])
    body = summary.get("body")
    summary["body_text"] = json.dumps(body, indent=2, ensure_ascii=False) if isinstance(body, dict) else body
    replayed = redis.hget(REPLAYED_KEY, f"{partition}:{offset}")
    summary["replayed_at"] = replayed.decode() if replayed else None
    return summary


def _destination(record: Any) -> str | None:
    return kafka_admin.describe_dead_letter(record).get("original.topic")


def replay_plan(settings: Settings, positions: list[tuple[int, int]], allowed: list[str]) -> dict[str, Any]:
    """What replaying ``positions`` would do, for the confirmation page: per destination topic how
    many records go there, how many are refused (a topic no declared actor reads: a dead letter's
    headers name its destination, and headers are not to be trusted with where to write), and how
    many are gone."""
    records = kafka_admin.read_records(kafka_options(), settings.kafka_topic_dlq, positions)
    destinations: dict[str, int] = {}
    refused = 0
    for record in records:
        topic = _destination(record)
        if topic in allowed:
            destinations[topic] = destinations.get(topic, 0) + 1
        else:
            refused += 1
    return {"destinations": dict(sorted(destinations.items())), "refused": refused,
            "missing": len(positions) - len(records)}  # fmt: skip


def replay(settings: Settings, redis: Any, positions: list[tuple[int, int]], allowed: list[str]) -> tuple[int, int]:
    """Replay the dead letters at ``positions`` whose topic is one of ``allowed`` (the declared
    actors' topics); remember when, for the list. Returns (sent, refused)."""
    topic = settings.kafka_topic_dlq
    records = kafka_admin.read_records(kafka_options(), topic, positions)
    permitted = [r for r in records if _destination(r) in allowed]
    sent = kafka_admin.replay_records(kafka_options(), topic, permitted)
    if permitted:
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        redis.hset(REPLAYED_KEY, mapping={f"{r.partition}:{r.offset}": now for r in permitted})
    return sent, len(records) - len(permitted)


def purge(settings: Settings, redis: Any) -> int:
    deleted = kafka_admin.purge_topic(kafka_options(), settings.kafka_topic_dlq)
    redis.delete(REPLAYED_KEY)
    return deleted


# ---------------------------------------------------------------- pages


def declared_topics() -> list[str]:
    """The topics the declared actors read: the only ones a dead letter may be replayed to."""
    return sorted(get_broker().get_declared_topics())


def overview(settings: Settings, reader: TelemetryReader) -> dict[str, Any]:
    """The overview page's figures and charts: per actor rates, the group's lag now (straight
    from Kafka, or why not) and over the hour, the worker processes and their scaling events.

    When no worker has sampled the lag lately, the console measures the oldest record's age
    itself and records the sample, so the charts go on."""
    workers = reader.workers()
    retrying: dict[str, int] = {}
    for worker in workers:
        for actor, n in (worker.get("retrying_by_actor") or {}).items():
            retrying[actor] = retrying.get(actor, 0) + n
    rows, _ = actor_rates(reader, retrying)
    actors = get_broker().actors
    for row in rows:
        row["topic"] = actors[row["actor"]].topic if row["actor"] in actors else "\u2013"
        row["charts"] = [
            line_chart(row["series"]["processed"], label="processed", unit="/s"),
            line_chart(row["series"]["failed"], label="failed", unit="/s"),
        ]
    lag, lag_error = None, None
    latest = reader.latest_lag()
    try:
        lag = live_lag(settings, declared_topics())
        if latest is None or time.time() - latest.get("at", 0) > STALE_SAMPLE_S:  # no worker samples it now
            lag["oldest_age_s"] = oldest_age(lag)
            latest = lag
            reader.record_lag({**lag, "workers": len(workers)})
    except BrokerError as exc:
        lag_error = str(exc)
    totals, ages, per_partition = lag_series(reader)
    processes, scaling = worker_series(reader)
    if lag:
        for p in lag["partitions"]:
            series = per_partition.get(f"{p['topic']}-{p['partition']}", [])
            p["chart"] = line_chart(series, label="lag", unit="") if series else ""
    return {
        "rows": rows,
        "lag": lag,
        "lag_error": lag_error,
        "oldest_age_s": (latest or {}).get("oldest_age_s"),
        "lag_chart": line_chart(totals, label="total lag", unit=" records"),
        "age_chart": line_chart(ages, label="oldest unprocessed", unit=" s"),
        "workers_chart": line_chart(
            processes, label="worker processes", marks=[e["index"] for e in scaling] if scaling else ()
        ),
        "scaling_events": [
            {**e, "at": time.strftime("%H:%M:%S", time.gmtime(e["at"]))} for e in reversed(scaling[-10:])
        ],
        "workers": workers,
        "retrying_total": sum(w.get("retrying", 0) for w in workers),
    }


def group(settings: Settings, reader: TelemetryReader) -> dict[str, Any]:
    """The group page's: Kafka's view of the worker group (or why not) and the workers' own."""
    members, error = [], None
    try:
        described = describe_group(settings.kafka_consumer_group)
        members = described["members"]
        state = described["state"]
    except BrokerError as exc:
        state, error = "unknown", str(exc)
    return {
        "group": settings.kafka_consumer_group,
        "state": state,
        "members": members,
        "workers": reader.workers(),
        "error": error,
    }


def actor_registry() -> list[dict[str, Any]]:
    """The declared actors, by name: topic, options as text, batch size, first docstring paragraph."""
    registry = []
    for actor in sorted(get_broker().actors.values(), key=lambda a: a.actor_name):
        options = {name: _describe_option(value) for name, value in sorted(actor.options.items())}
        registry.append(
            {
                "name": actor.actor_name,
                "topic": actor.topic,
                "options": options,
                "batch": actor.batch_size if getattr(actor, "batch_fn", None) else None,
                "doc": (actor.__doc__ or "").strip().split("\n\n")[0],
            }
        )
    return registry


def _describe_option(value: Any) -> str:
    if isinstance(value, tuple):
        return ", ".join(_describe_option(v) for v in value)
    if isinstance(value, type):
        return value.__qualname__
    if callable(value):
        return f"{getattr(value, '__qualname__', type(value).__name__)}()"
    return str(value)
