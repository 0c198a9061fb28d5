"""Delayed messages on Kafka: delay topics in tiers, each forwarded when its head is due.

A message sent with ``delay=ms`` (its ``eta`` option, epoch ms) does not go to its actor's topic
but to one of a few *delay topics*, one per fixed wait (1 s, 10 s, 1 min, 10 min, 1 h, 6 h, 1 d):
the longest wait that does not overshoot what remains, or the shortest. A record in tier *T*
is due at ``min(written + T, eta)``, kept in its ``delay.until`` header. Because every record of
a tier waits the same *T*, a tier partition is in due order: the forwarder only ever looks at
its head. When the head is not due, it seeks back to it and pauses that partition until it is;
other partitions, and every actor topic, keep flowing. When it is due, the forwarder writes the
record on: to its actor's topic (same key, same value) if the eta has come, else to the next
tier. It commits a tier partition only past records whose forward Kafka acknowledged.

This module holds the routing (tiers, headers, which topic a message waits in); the forwarding
group lives in :mod:`broker.delay_forwarder`.

What this gives:

* **Never early.** A message reaches its topic no earlier than its eta (by the forwarding
  host's clock; the worker re-delays one that arrives early by another host's clock).
* **Late by little.** A record leaves its tier within a poll of being due. Only the
  shortest tier holds records that wait less than the tier (delays under 1 s), and those can
  wait behind an earlier record for up to 1 s.
* **Nothing blocks.** A delayed message holds no partition of its actor's topic and no key:
  messages sent after it with the same key run at once, and it takes its place in its key's
  order when it is due (it is appended to the topic then).
* **Survives restarts and rebalances.** Its state is the record in Kafka and the forwarding
  group's committed offset, not a worker's memory. A crash between a forward and its commit
  forwards that record again (same message id): at least once, like every delivery here.
* **Up to 7 days** (:data:`MAX_DELAY_MS`). The delay topics' retention must exceed 1 day plus
  the longest outage to survive (Kafka's default, 7 days, does).

The forwarding group is one per delay prefix (``<prefix>.forwarder``), not per worker group, so
any number of worker groups share the delay topics and each record is forwarded once.
"""

from __future__ import annotations

import datetime as dt
import time

from broker.consumer import Record
from broker.errors import DecodeError

#: The tiers: (topic suffix, wait in ms), shortest first.
TIERS: tuple[tuple[str, int], ...] = (
    ("1s", 1_000),
    ("10s", 10_000),
    ("1m", 60_000),
    ("10m", 600_000),
    ("1h", 3_600_000),
    ("6h", 21_600_000),
    ("1d", 86_400_000),
)
MAX_DELAY_MS = 7 * 86_400_000
DEFAULT_DELAY_PREFIX = "delays"
HEADER_UNTIL = "delay.until"  # epoch ms: when this record is due out of its tier
HEADER_ETA = "delay.eta"  # epoch ms: when the message is due on its topic
HEADER_TOPIC = "delay.topic"  # the actor's topic


def now_ms() -> int:
    return int(time.time() * 1000)


def tier_topics(prefix: str) -> list[str]:
    """The delay topics of ``prefix``, shortest wait first (create them with the others)."""
    return [f"{prefix}-{suffix}" for suffix, _ in TIERS]


def check_delay(delay: object) -> int:
    """``delay`` as ms, or ``ValueError``: a non-negative integer of ms (or a ``timedelta``, as
    Dramatiq accepts) of at most 7 days."""
    if isinstance(delay, dt.timedelta):
        delay = int(delay.total_seconds() * 1000)
    if isinstance(delay, bool) or not isinstance(delay, int) or delay < 0:
        raise ValueError(f"delay must be a non-negative integer of milliseconds, not {delay!r}")
    if delay > MAX_DELAY_MS:
        raise ValueError(f"delay {delay} ms is longer than the longest supported, 7 days ({MAX_DELAY_MS} ms)")
    return delay


def route(prefix: str, topic: str, eta: int, now: int | None = None) -> tuple[str, list[tuple[str, bytes]]]:
    """The delay topic for a message due on ``topic`` at ``eta``, and the headers its record carries."""
    now = now_ms() if now is None else now
    remaining = eta - now
    suffix, wait = TIERS[0]
    for candidate in TIERS:
        if candidate[1] <= remaining:
            suffix, wait = candidate
    until = min(now + wait, eta)
    headers = [(HEADER_UNTIL, str(until).encode()), (HEADER_ETA, str(eta).encode()), (HEADER_TOPIC, topic.encode())]
    return f"{prefix}-{suffix}", headers


def _header(record: Record, name: str) -> str:
    for key, value in record.headers:
        if key == name:
            return value.decode("utf-8")
    raise DecodeError(f"delay record lacks the {name} header")


def read_headers(record: Record) -> tuple[int, int, str]:
    """(until, eta, topic) of a delay record. Raises :class:`DecodeError` if it is not one."""
    try:
        return int(_header(record, HEADER_UNTIL)), int(_header(record, HEADER_ETA)), _header(record, HEADER_TOPIC)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"delay record has malformed headers: {exc}") from exc
