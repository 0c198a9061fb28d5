"""Periodic tasks: ``@actor(periodic="*/5 * * * *")`` and a scheduler that enqueues each due run.

    python worker.py scheduler          # any number of them: ECS restarts, two tasks in a deploy

**Each run is enqueued once.** A run is named by its actor and its time (``nightly`` at
``2026-11-25T02:00:00Z``). Before sending it, a scheduler *claims* that name in a shared store
(Redis ``SET NX``, with a short expiry); the one that wins sends the message, waits for Kafka's
acknowledgement and then marks the name *sent* (kept long enough that no scheduler can claim it
again). The others see the name taken and move on. If the winner dies between its claim and the
acknowledgement, its claim expires (``claim_ttl_ms``, default 60 s) and another scheduler sends the
run then. Only a scheduler dying after Kafka acknowledged but before it marked the run sent can
cause a second send; both carry the same message id (derived from the run's name), so results and
idempotent tasks see one run.

**Missed runs.** Each tick a scheduler looks at the latest time each expression names. A run is
sent if it is at most ``grace_ms`` old (default 5 minutes), so a short outage of every scheduler
(a deploy, a restart) delays a run rather than dropping it. After a longer outage the runs that
fell in it are skipped, not replayed: one warning names each skipped run, and the schedule goes
on from the next time.

Times are UTC. The message carries the run's time in the ``periodic.run_at`` header; the actor is
called with no arguments.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import uuid
from typing import TYPE_CHECKING, Any, Protocol

from broker.errors import BrokerUnavailable
from broker.message import format_timestamp

if TYPE_CHECKING:
    from broker.actor import Actor
    from broker.broker import Broker
    from broker.message import Message

log = logging.getLogger(__name__)

DEFAULT_GRACE_MS = 300_000
DEFAULT_CLAIM_TTL_MS = 60_000
DEFAULT_KEY_PREFIX = "periodic"
HEADER_RUN_AT = "periodic.run_at"
_RUN_NAMESPACE = uuid.UUID("6f1c7f5e-3b0e-4d0a-9a43-8f1f2c6c9d10")  # message ids of runs: uuid5(run name)


class ScheduleStore(Protocol):
    """Where schedulers agree on who sends a run (atomic operations, times in ms)."""

    def claim(self, key: str, owner: str, ttl: int) -> bool:
        """Take ``key`` for ``owner`` for ``ttl`` ms unless someone else holds it; True if ``owner`` holds it."""

    def mark_sent(self, key: str, ttl: int) -> None:
        """Record that the run ``key`` was sent; nobody can claim it for ``ttl`` ms."""


class RedisScheduleStore:
    """The store in Redis: ``RedisScheduleStore(client=redis.Redis(...))``."""

    def __init__(self, *, client: Any) -> None:
        self.client = client

    def claim(self, key: str, owner: str, ttl: int) -> bool:
        value = f"claimed-by:{owner}"
        if self.client.set(key, value, nx=True, px=ttl):
            return True
        held = self.client.get(key)
        return held is not None and held.decode() == value  # our own claim, from a tick whose send failed

    def mark_sent(self, key: str, ttl: int) -> None:
        self.client.set(key, "sent", px=ttl)


class StubScheduleStore:
    """An in-memory store for tests (one process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, tuple[str, dt.datetime]] = {}

    def _get(self, key: str) -> str | None:
        value, expires = self._values.get(key, ("", dt.datetime.min.replace(tzinfo=dt.UTC)))
        return value if dt.datetime.now(dt.UTC) < expires else None

    def _put(self, key: str, value: str, ttl: int) -> None:
        self._values[key] = (value, dt.datetime.now(dt.UTC) + dt.timedelta(milliseconds=ttl))

    def claim(self, key: str, owner: str, ttl: int) -> bool:
        value = f"claimed-by:{owner}"
        with self._lock:
            held = self._get(key)
            if held is None:
                self._put(key, value, ttl)
                return True
            return held == value

    def mark_sent(self, key: str, ttl: int) -> None:
        with self._lock:
            self._put(key, "sent", ttl)


def periodic_actors(broker: Broker) -> list[Actor[..., Any]]:
    return [a for a in broker.actors.values() if a.options.get("periodic") is not None]


class Scheduler:
    """Enqueues the due runs of ``broker``'s periodic actors (see the module docstring).

    Parameters: ``store`` (a :class:`ScheduleStore` shared by every scheduler), ``grace_ms`` (how
    late a run may still be sent), ``claim_ttl_ms`` (how long a claim outlives a dead scheduler),
    ``key_prefix`` (of the store's keys).
    """

    def __init__(
        self,
        broker: Broker,
        store: ScheduleStore,
        *,
        grace_ms: int = DEFAULT_GRACE_MS,
        claim_ttl_ms: int = DEFAULT_CLAIM_TTL_MS,
        key_prefix: str = DEFAULT_KEY_PREFIX,
    ) -> None:
        self.broker = broker
        self.store = store
        self.grace = dt.timedelta(milliseconds=grace_ms)
        self.claim_ttl_ms = claim_ttl_ms
        self.sent_ttl_ms = 2 * grace_ms + claim_ttl_ms  # longer than a run can be a candidate
        self.key_prefix = key_prefix
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._done: dict[str, dt.datetime] = {}  # actor -> the latest run known sent (by anyone)
        self._skipped: dict[str, dt.datetime] = {}

    def run_name(self, actor: Actor[..., Any], run_at: dt.datetime) -> str:
        return f"{self.key_prefix}:{actor.actor_name}:{format_timestamp(run_at)}"

    def tick(self, now: dt.datetime | None = None) -> list[Message]:
        """Send every run due at ``now`` that nobody sent yet; returns what this scheduler sent."""
        now = now or dt.datetime.now(dt.UTC)
        sent = []
        for actor in periodic_actors(self.broker):
            run_at = actor.options["periodic"].previous(now)
            if run_at is None or self._done.get(actor.actor_name) == run_at:
                continue
            if now - run_at > self.grace:
                if self._skipped.get(actor.actor_name) != run_at:
                    self._skipped[actor.actor_name] = run_at
                    log.warning(
                        "a periodic run was missed by more than the grace period; skipped",
                        extra={"actor": actor.actor_name, "run_at": format_timestamp(run_at)},
                    )
                continue
            message = self._send(actor, run_at)
            if message is not None:
                sent.append(message)
        return sent

    def _send(self, actor: Actor[..., Any], run_at: dt.datetime) -> Message | None:
        name = self.run_name(actor, run_at)
        if not self.store.claim(name, self.owner, self.claim_ttl_ms):
            return None  # sent already, or being sent by another scheduler (which may still fail)
        message = actor.message_with_options(headers={HEADER_RUN_AT: format_timestamp(run_at)})
        message = message.copy(message_id=uuid.uuid5(_RUN_NAMESPACE, name).hex)
        try:
            self.broker.enqueue(message)
        except BrokerUnavailable as exc:  # our claim stands: the next tick tries again
            log.warning("could not enqueue a periodic run; trying again", extra={"run": name, "error": str(exc)})
            return None
        self.store.mark_sent(name, self.sent_ttl_ms)
        self._done[actor.actor_name] = run_at
        log.info("periodic run enqueued", extra={"run": name, "message_id": message.message_id})
        return message

    def run(self, stop: threading.Event, *, tick_ms: int = 1000) -> None:
        """Tick every ``tick_ms`` (aligned to the clock) until ``stop`` is set. A store or broker
        outage is logged and waited out; the scheduler itself never stops for one."""
        log.info("scheduler started", extra={"actors": [a.actor_name for a in periodic_actors(self.broker)]})
        while True:
            try:
                self.tick()
            except Exception:
                log.exception("a scheduler tick failed; trying again")
            now = dt.datetime.now(dt.UTC).timestamp() * 1000
            if stop.wait((tick_ms - now % tick_ms) / 1000 + 0.001):
                break
        log.info("scheduler stopped")
