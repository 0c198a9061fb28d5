"""The delay forwarder: the group that moves delayed records out of their tiers once due.

The tiers, their headers and the routing are :mod:`broker.delays` (whose docstring tells the
whole design). The forwarder consumes every tier in one group per delay prefix
(``<prefix>.forwarder``), only ever looks at a partition's head, pauses a partition whose head is
not due, forwards what is due (to the actor's topic, or to the next tier) through
:meth:`Broker.produce <broker.broker.Broker.produce>`, and commits a tier partition only past
records whose forward Kafka acknowledged.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from broker.consumer import Commit, Record, TopicPartition
from broker.dead_letters import REASON_NO_TOPIC, REASON_UNDECODABLE
from broker.delays import now_ms, read_headers, route, tier_topics
from broker.errors import BrokerUnavailable, DecodeError

if TYPE_CHECKING:
    from broker.broker import Broker
    from broker.consumer import Consumer

log = logging.getLogger(__name__)

RETRY_CONNECT_S = 30


class _NothingInFlight:
    """The forwarder's answer to a revocation: it commits after every batch, so nothing is pending."""

    def busy(self) -> bool:
        return False

    def offsets(self) -> dict[TopicPartition, Commit]:
        return {}

    def resume_positions(self) -> dict[TopicPartition, int]:
        return {}

    def done(self, committed: dict[TopicPartition, Commit]) -> None:
        pass


class DelayForwarder:
    """Consumes a broker's delay topics in the group ``<prefix>.forwarder`` and forwards each
    record once due (see the module docstring). The worker runs one in each process."""

    revoke_timeout_s = 0.0

    def __init__(self, broker: Broker, *, poll_timeout_ms: int = 100, max_poll_records: int = 500) -> None:
        if not broker.delay_prefix:
            raise ValueError("this broker has no delay topics (delay_prefix is None)")
        self.broker = broker
        self.group_id = f"{broker.delay_prefix}.forwarder"
        self.topics = tier_topics(broker.delay_prefix)
        self.poll_timeout_ms = poll_timeout_ms
        self.max_poll_records = max_poll_records
        self.consumer: Consumer | None = None
        self.forwarded = 0
        self._held: dict[TopicPartition, int] = {}  # paused partition -> epoch ms its head is due
        self._lock = threading.Lock()  # rebalance callbacks may run on the client's own thread
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Join the forwarding group in a background thread (never blocks the caller: while the
        delay topics cannot be reached it logs and tries again)."""
        self._thread = threading.Thread(target=self._run, name="delay-forwarder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.consumer = self.broker.consume(self.topics, self.group_id, listener=self)
            except BrokerUnavailable as exc:
                log.error(
                    "cannot consume the delay topics; delayed messages wait until they can be",
                    extra={"topics": self.topics, "error": str(exc)},
                )
                self._stop.wait(RETRY_CONNECT_S)
                continue
            try:
                self._loop()
            except Exception:  # a bug must not end forwarding for good: start over from the commits
                log.exception("the delay forwarder failed; starting it again")
                self._stop.wait(1)
            finally:
                self._close()

    def _close(self) -> None:
        consumer, self.consumer = self.consumer, None
        with self._lock:
            self._held.clear()
        if consumer is not None:
            try:
                consumer.close()
            except Exception:
                log.exception("closing the delay topics' consumer failed")

    def stop(self, timeout_s: float = 30) -> None:
        self._stop.set()
        wakeup = getattr(self.consumer, "wakeup", None)  # the stub's: the poll under way returns now
        if wakeup is not None:
            wakeup()
        if self._thread is not None:
            self._thread.join(timeout_s)

    # ------------------------------------------------------------ rebalance listener

    def on_partitions_assigned(self, partitions: set[TopicPartition]) -> None:
        self._forget(partitions)

    def revoke_partitions(self, partitions: set[TopicPartition]) -> _NothingInFlight:
        self._forget(partitions)
        return _NothingInFlight()

    def _forget(self, partitions: set[TopicPartition]) -> None:
        """A partition that arrives or leaves starts afresh: fetched from the commit, unpaused."""
        with self._lock:
            for tp in partitions:
                self._held.pop(tp, None)

    def on_partitions_lost(self, partitions: set[TopicPartition]) -> None:
        self.revoke_partitions(partitions)

    # ------------------------------------------------------------ the loop

    def _loop(self) -> None:
        assert self.consumer is not None
        while not self._stop.is_set():
            try:
                records = self.consumer.poll(self._poll_timeout(), self.max_poll_records)
            except BrokerUnavailable as exc:
                log.warning("delay topics: poll failed; retrying", extra={"error": str(exc)})
                self._stop.wait(1)
                continue
            self._release_due()
            if records:
                self._forward_batch(records)

    def _poll_timeout(self) -> int:
        with self._lock:
            if not self._held:
                return self.poll_timeout_ms
            return max(0, min(self.poll_timeout_ms, min(self._held.values()) - now_ms()))

    def _release_due(self) -> None:
        assert self.consumer is not None
        now = now_ms()
        with self._lock:
            due = [tp for tp, until in self._held.items() if until <= now]
            for tp in due:
                del self._held[tp]
        if due:
            self.consumer.resume(due)

    def _forward_batch(self, records: list[Record]) -> None:
        """Forward the due prefix of each partition's records, wait for every acknowledgement,
        then commit past what was acknowledged; hold each partition at its first record not due."""
        assert self.consumer is not None
        now = now_ms()
        sent: list[tuple[Record, str, Any]] = []
        for record in records:
            tp = record.tp
            with self._lock:
                if tp in self._held:
                    continue  # behind a head that is not due: fetched again after the resume
            try:
                until, eta, topic = read_headers(record)
            except DecodeError as exc:
                sent.append((record, "", self._dead_letter(record, exc, REASON_UNDECODABLE)))
                continue
            if until > now:
                with self._lock:
                    self._held[tp] = until
                self.consumer.seek(tp, record.offset)
                self.consumer.pause([tp])
                continue
            if eta > now:  # not yet due on its topic: on to the next tier
                next_topic, headers = route(self.broker.delay_prefix, topic, eta, now)  # type: ignore[arg-type]
                sent.append((record, "", self._send(next_topic, record, headers)))
            else:
                sent.append((record, topic, self._send(topic, record, [])))
        self._settle(sent)

    def _send(self, topic: str, record: Record, headers: list[tuple[str, bytes]]) -> Any:
        """Start writing ``record`` to ``topic``; a failure to even start shows when waited for."""
        try:
            return self.broker.produce(topic, record.key, record.value, headers)
        except BrokerUnavailable as exc:
            error = exc

            def failed(timeout_s: float) -> None:
                raise error

            return failed

    def _dead_letter(self, record: Record, exc: Exception, reason: str) -> Any:
        def wait(timeout_s: float) -> None:
            self.broker.dead_letter(record, exc, reason=reason)

        return wait

    def _settle(self, sent: Iterable[tuple[Record, str, Any]]) -> None:
        """Wait for each send in order; commit each partition up to its first failure, and move
        its position back there (what failed, and anything after it, is forwarded again).

        A message whose topic is gone for good cannot be delivered and must not hold its tier for
        ever: it is dead-lettered (reason ``no_topic``)."""
        assert self.consumer is not None
        timeout_s = self.broker.send_timeout_ms / 1000
        commits: dict[TopicPartition, Commit] = {}
        failed: set[TopicPartition] = set()
        for record, topic, wait in sent:
            tp = record.tp
            if tp in failed:
                continue
            try:
                try:
                    wait(timeout_s)
                except BrokerUnavailable as exc:
                    if not topic or self.consumer.topic_exists(topic):
                        raise
                    self._dead_letter(record, exc, REASON_NO_TOPIC)(timeout_s)
            except BrokerUnavailable as exc:
                log.warning("a delayed message was not forwarded; trying again", extra={"error": str(exc)})
                failed.add(tp)
                self.consumer.seek(tp, record.offset)
                continue
            commits[tp] = Commit(record.offset + 1, "")
            self.forwarded += 1
        if commits:
            try:
                self.consumer.commit(commits)
            except BrokerUnavailable as exc:  # forwarded again after a rebalance: duplicates, no loss
                log.warning("delay topics: commit failed", extra={"error": str(exc)})
        if failed:
            self._stop.wait(1)
