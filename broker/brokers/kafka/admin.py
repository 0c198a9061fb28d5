"""Operator tools on Kafka: consumer-group lag and members, dead-letter listing and replay, and
skipping one record that holds a partition. A little over 400 lines because these are one
operator's toolbox over one admin client and consumer set-up, which a split would repeat.

What a dead letter says (its headers, its summary) is :mod:`broker.dead_letters`; this module only
reads and writes the records. Every function raises :class:`~broker.errors.BrokerError`s only:
a ``KafkaError`` no step names is raised as :class:`~broker.errors.BrokerUnavailable`
(:mod:`broker.brokers.kafka.errors`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KafkaTopicPartition
from kafka.admin import OffsetSpec
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from broker.brokers.kafka.errors import translated, translated_iterator
from broker.consumer import Record
from broker.dead_letters import REASON_SKIPPED, dead_letter_headers, describe_dead_letter, replay_headers
from broker.errors import BrokerError, BrokerUnavailable
from broker.message import format_timestamp, utcnow


@translated
def consumer_lag(options: dict[str, Any], group_id: str, topics: list[str]) -> dict[str, Any]:
    """Lag of ``group_id`` on ``topics``: per partition (end offset - committed offset) and total.

    A partition the group never committed counts from its earliest offset (what it would read).
    ``options`` are kafka-python client options (see ``brokers.kafka.client_options``).
    """
    admin = _admin(options)
    try:
        tps, starts, ends = _offset_bounds(admin, topics)
        committed = admin.list_group_offsets({group_id: None}).get(group_id, {})
    finally:
        admin.close()
    partitions = []
    for tp in sorted(tps):
        end = ends[tp].offset
        position = committed[tp].offset if tp in committed and committed[tp].offset >= 0 else starts[tp].offset
        partitions.append(
            {
                "topic": tp.topic,
                "partition": tp.partition,
                "committed": position,
                "end": end,
                "lag": max(0, end - position),
            }
        )
    return {
        "group": group_id,
        "total_lag": sum(p["lag"] for p in partitions),
        "partitions": partitions,
        "measured_at": format_timestamp(utcnow()),
    }


@translated
def oldest_unprocessed_age_s(options: dict[str, Any], report: dict[str, Any], timeout_s: float = 5.0) -> float:
    """Age in seconds of the oldest record the group has not processed (the record at the
    committed offset of each lagging partition, by its timestamp); 0 without lag."""
    lagging = [KafkaTopicPartition(p["topic"], p["partition"]) for p in report["partitions"] if p["lag"] > 0]
    if not lagging:
        return 0.0
    positions = {KafkaTopicPartition(p["topic"], p["partition"]): p["committed"] for p in report["partitions"]}
    consumer = KafkaConsumer(**options, enable_auto_commit=False, group_id=None)
    try:
        consumer.assign(lagging)
        for tp in lagging:
            consumer.seek(tp, positions[tp])
        oldest: dict[Any, int] = {}
        deadline = time.monotonic() + timeout_s
        while len(oldest) < len(lagging) and time.monotonic() < deadline:
            for tp, batch in consumer.poll(timeout_ms=500, max_records=100).items():
                if batch and tp not in oldest:
                    oldest[tp] = batch[0].timestamp
                    consumer.pause(tp)
    finally:
        consumer.close(autocommit=False)
    if not oldest:
        return 0.0
    return max(0.0, time.time() - min(oldest.values()) / 1000)


@translated
def topic_size(options: dict[str, Any], topic: str) -> int:
    """How many records ``topic`` holds (end - earliest offsets, over its partitions)."""
    admin = _admin(options)
    try:
        tps, starts, ends = _offset_bounds(admin, [topic])
    finally:
        admin.close()
    return sum(ends[tp].offset - starts[tp].offset for tp in tps)


@translated
def topic_exists(options: dict[str, Any], topic: str) -> bool:
    """Whether the cluster has ``topic``. Raises :class:`BrokerUnavailable` when it does not answer."""
    admin = _admin(options)
    try:
        return topic in admin.list_topics()
    finally:
        admin.close()


def _admin(options: dict[str, Any]) -> KafkaAdminClient:
    try:
        return KafkaAdminClient(**options)
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot connect to Kafka: {exc}") from exc


def _offset_bounds(admin: KafkaAdminClient, topics: list[str]) -> tuple[list[KafkaTopicPartition], Any, Any]:
    """The topics' partitions, with their earliest and end offsets."""
    tps = [KafkaTopicPartition(t["name"], p["partition_index"]) for t in admin.describe_topics(topics)
           for p in t["partitions"]]  # fmt: skip
    ends = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in tps})
    starts = admin.list_partition_offsets({tp: OffsetSpec.EARLIEST for tp in tps})
    return tps, starts, ends


def _position(consumer: KafkaConsumer, tp: KafkaTopicPartition) -> int:
    """The consumer's fetch position on an assigned ``tp``. kafka-python answers None when it could
    not learn it (an offset reset that did not finish); the comparisons made with it would fail on
    None all the same, so this says so where it happens, as this module's own error."""
    position = consumer.position(tp)
    if position is None:
        raise BrokerUnavailable(f"kafka-python did not learn the position of {tp}")
    return position


def _records_until_end(
    consumer: KafkaConsumer,
    topic: str,
    *,
    from_beginning: bool,
    timeout_s: float,
    ends: dict[KafkaTopicPartition, int] | None = None,
) -> Iterator[Any]:
    """Yield ``topic``'s records from the consumer's position (or the beginning) up to the end
    offsets seen at the start (or ``ends``), so a reader never waits for records that arrive meanwhile."""
    tps = [KafkaTopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    consumer.assign(tps)
    ends = ends if ends is not None else consumer.end_offsets(tps)
    if from_beginning:
        consumer.seek_to_beginning(*tps)
    remaining = {tp for tp in tps if _position(consumer, tp) < ends[tp]}
    deadline = time.monotonic() + timeout_s
    while remaining and time.monotonic() < deadline:
        for tp, batch in consumer.poll(timeout_ms=500).items():
            for record in batch:
                if record.offset < ends[tp]:
                    yield record
            if _position(consumer, tp) >= ends[tp]:
                remaining.discard(tp)


@translated_iterator
def read_dead_letters(options: dict[str, Any], dlq_topic: str, *, timeout_s: float = 30) -> Iterator[Any]:
    """Yield every record of ``dlq_topic`` up to its current end."""
    consumer = KafkaConsumer(**options, enable_auto_commit=False)
    try:
        yield from _records_until_end(consumer, dlq_topic, from_beginning=True, timeout_s=timeout_s)
    finally:
        consumer.close(autocommit=False)


@translated
def recent_dead_letters(
    options: dict[str, Any], dlq_topic: str, *, per_partition: int = 500, skip: int = 0
) -> list[Any]:
    """The newest ``per_partition`` records of each partition of ``dlq_topic`` after skipping its
    ``skip`` newest (a page), newest first."""
    consumer = KafkaConsumer(**options, enable_auto_commit=False)
    try:
        tps = [KafkaTopicPartition(dlq_topic, p) for p in sorted(consumer.partitions_for_topic(dlq_topic) or ())]
        consumer.assign(tps)
        starts, ends = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
        stops = {tp: max(starts[tp], ends[tp] - skip) for tp in tps}
        for tp in tps:
            consumer.seek(tp, max(starts[tp], stops[tp] - per_partition))
        records = list(_records_until_end(consumer, dlq_topic, from_beginning=False, timeout_s=10, ends=stops))
    except KafkaError as exc:
        raise BrokerUnavailable(f"reading dead letters failed: {exc}") from exc
    finally:
        consumer.close(autocommit=False)
    return sorted(records, key=lambda r: (r.timestamp, r.partition, r.offset), reverse=True)


@translated
def read_records(
    options: dict[str, Any], topic: str, positions: list[tuple[int, int]], *, timeout_s: float = 10
) -> list[Any]:
    """The records of ``topic`` at (partition, offset) ``positions`` (those still there), in order.

    One consumer, one pass: every partition is assigned at once and read forward from one wanted
    offset to the next (seeking over gaps), all within ``timeout_s`` in total; a position that is
    gone (deleted, compacted) costs nothing extra, where a read per position waited seconds each."""
    wanted: dict[int, list[int]] = {}
    for partition, offset in sorted(set(positions)):
        wanted.setdefault(partition, []).append(offset)
    found: dict[tuple[int, int], Any] = {}
    if not wanted:
        return []
    consumer = KafkaConsumer(**options, enable_auto_commit=False)
    try:
        tps = {partition: KafkaTopicPartition(topic, partition) for partition in wanted}
        consumer.assign(list(tps.values()))
        ends = consumer.end_offsets(list(tps.values()))
        for partition, offsets in wanted.items():
            offsets[:] = [o for o in offsets if o < ends[tps[partition]]]  # beyond the end: not there
            if offsets:
                consumer.seek(tps[partition], offsets[0])
            else:
                consumer.pause(tps[partition])
        deadline = time.monotonic() + timeout_s
        while any(wanted.values()) and time.monotonic() < deadline:
            for tp, batch in consumer.poll(timeout_ms=500).items():
                offsets = wanted[tp.partition]
                for record in batch:
                    while offsets and offsets[0] < record.offset:
                        offsets.pop(0)  # gone: a later record came instead
                    if offsets and offsets[0] == record.offset:
                        found[(tp.partition, record.offset)] = record
                        offsets.pop(0)
                if offsets and _position(consumer, tp) < offsets[0]:
                    consumer.seek(tp, offsets[0])  # skip the gap
                elif not offsets:
                    consumer.pause(tp)
    except KafkaError as exc:
        raise BrokerUnavailable(f"reading records failed: {exc}") from exc
    finally:
        consumer.close(autocommit=False)
    return [found[p] for p in sorted(found)]


def _resend(producer: KafkaProducer, dlq_topic: str, record: Any, topic: str, timeout_s: float) -> None:
    """Write a dead letter back to ``topic`` as it first was (same key and value, the error
    headers dropped, a ``replayed_from`` header added) and wait for the acknowledgement."""
    headers = replay_headers(record, dlq_topic)
    producer.send(topic, key=record.key, value=record.value, headers=headers).get(timeout=timeout_s)


@translated
def replay_records(options: dict[str, Any], dlq_topic: str, records: list[Any], *, send_timeout_s: float = 10) -> int:
    """Re-send these dead-letter records to their original topics (same key and value, error
    headers dropped, a ``replayed_from`` header added); returns how many were sent."""
    producer = KafkaProducer(**options, acks="all")
    sent = 0
    try:
        for record in records:
            original_topic = describe_dead_letter(record).get("original.topic")
            if original_topic:
                _resend(producer, dlq_topic, record, original_topic, send_timeout_s)
                sent += 1
    except KafkaError as exc:
        raise BrokerUnavailable(f"replay failed after {sent} record(s): {exc}") from exc
    finally:
        producer.close()
    return sent


@translated
def purge_topic(options: dict[str, Any], topic: str) -> int:
    """Delete every record ``topic`` holds now (Kafka deletes only from the start of a partition:
    up to each partition's current end). Returns how many records were deleted."""
    admin = _admin(options)
    try:
        tps, starts, ends = _offset_bounds(admin, [topic])
        doomed = {tp: ends[tp].offset for tp in tps if ends[tp].offset > starts[tp].offset}
        if doomed:
            admin.delete_records(doomed)
    except KafkaError as exc:
        raise BrokerUnavailable(f"purging {topic!r} failed: {exc}") from exc
    finally:
        admin.close()
    return sum(ends[tp].offset - starts[tp].offset for tp in doomed)


@translated
def replay_dead_letters(
    options: dict[str, Any],
    dlq_topic: str,
    *,
    group_id: str,
    actor: str | None = None,
    limit: int | None = None,
    send_timeout_s: float = 10,
) -> list[dict[str, Any]]:
    """Re-send dead letters to their original topic (same key and value, so fresh attempts), then
    commit the replay group's position past them: a second run replays only what arrived since.

    With ``actor`` only that actor's dead letters are sent; the others are skipped *and* passed
    (use a separate ``group_id`` per filter if you replay by actor). Returns what was replayed.
    """
    producer = KafkaProducer(**options, acks="all")
    consumer = KafkaConsumer(**options, group_id=group_id, enable_auto_commit=False, auto_offset_reset="earliest")
    replayed: list[dict[str, Any]] = []
    positions: dict[KafkaTopicPartition, int] = {}
    try:
        for record in _records_until_end(consumer, dlq_topic, from_beginning=False, timeout_s=60):
            if limit is not None and len(replayed) >= limit:
                break
            summary = describe_dead_letter(record)
            positions[KafkaTopicPartition(record.topic, record.partition)] = record.offset + 1
            original_topic = summary.get("original.topic")
            if (actor is not None and summary.get("actor") != actor) or not original_topic:
                continue
            _resend(producer, dlq_topic, record, original_topic, send_timeout_s)
            replayed.append(summary)
        if positions:
            consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in positions.items()})
    except KafkaError as exc:
        raise BrokerUnavailable(f"replay failed: {exc}") from exc
    finally:
        producer.close()
        consumer.close(autocommit=False)
    return replayed


@translated
def describe_group(options: dict[str, Any], group_id: str) -> dict[str, Any]:
    """The group's state and live members, each with its host and assigned partitions."""
    admin = _admin(options)
    try:
        group = admin.describe_groups([group_id])[group_id]
    finally:
        admin.close()
    members = []
    for member in group.get("members") or []:
        assignment = member.get("member_assignment") or {}
        partitions = [
            f"{a['topic']}-{p}" for a in assignment.get("assigned_partitions") or [] for p in a.get("partitions") or []
        ]
        members.append(
            {
                "member_id": member["member_id"],
                "client_id": member.get("client_id"),
                "host": (member.get("client_host") or "").lstrip("/"),
                "partitions": sorted(partitions),
            }
        )
    return {"group": group_id, "state": group.get("group_state"), "members": members}


class SkipRefused(BrokerError):
    """``skip_record`` will not move the group: it has live members, or is already past the record."""


class SkippedByOperator(Exception):
    """The reason recorded in a dead letter written by ``skip_record``."""


@translated
def skip_record(
    options: dict[str, Any],
    *,
    dlq_topic: str,
    group_id: str,
    topic: str,
    partition: int,
    offset: int,
    force: bool = False,
    send_timeout_s: float = 10,
) -> dict[str, Any]:
    """The operator's escape hatch for one record that holds a partition: write it to the
    dead-letter topic (reason ``skipped``) and move the group's committed offset past it.

    Refuses (:class:`SkipRefused`) while the group has live members, unless ``force``: a member
    would keep its own position, and Kafka refuses an outsider's commit into an active group. Also
    refuses when the group is already past ``offset``. Returns what was done.
    """
    group = describe_group(options, group_id)
    if group["members"] and not force:
        raise SkipRefused(
            f"group {group_id!r} has {len(group['members'])} live member(s): stop its workers first (or --force)"
        )
    tp = KafkaTopicPartition(topic, partition)
    consumer = KafkaConsumer(**options, group_id=group_id, enable_auto_commit=False)
    producer = KafkaProducer(**options, acks="all")
    try:
        committed = consumer.committed(tp)
        if committed is not None and committed > offset:
            raise SkipRefused(f"group {group_id!r} is already at offset {committed} of {topic}-{partition}")
        consumer.assign([tp])
        consumer.seek(tp, offset)
        found = None
        deadline = time.monotonic() + 15
        while found is None and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                found = next((r for r in batch if r.offset == offset), found)
            if found is None and _position(consumer, tp) > offset:
                break
        if found is None:
            raise SkipRefused(f"no record at {topic}-{partition} offset {offset} (deleted by retention?)")
        record = Record(topic, partition, offset, found.key, found.value, list(found.headers or ()), found.timestamp)
        headers = dead_letter_headers(
            record,
            SkippedByOperator(f"skipped by an operator at offset {offset}"),
            message=None,
            attempts=0,
            host="operator",
            reason=REASON_SKIPPED,
        )
        producer.send(dlq_topic, key=found.key, value=found.value, headers=record.headers + headers).get(
            timeout=send_timeout_s
        )
        consumer.commit({tp: OffsetAndMetadata(offset + 1, "", -1)})
    except KafkaError as exc:
        raise BrokerUnavailable(f"skip failed: {exc}") from exc
    finally:
        producer.close()
        consumer.close(autocommit=False)
    return {"group": group_id, "skipped": f"{topic}-{partition}@{offset}", "committed": offset + 1, "dlq": dlq_topic}
