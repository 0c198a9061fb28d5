"""The Kafka broker, on kafka-python: the producer side, and building the group consumer
(:mod:`broker.brokers.kafka.consumer`).

One producer per process, created on first use (so never before gunicorn forks) and re-created
if the process forked since. It is thread-safe and, once gevent has patched the standard library
(see ``wsgi.py``), cooperative. Every wait is bounded by ``send_timeout_ms``.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from broker.broker import Broker
from broker.brokers.kafka.consumer import ASSIGNORS, DEFAULT_HEARTBEAT_INTERVAL_MS, KafkaGroupConsumer
from broker.brokers.kafka.errors import FATAL, TOO_LARGE
from broker.consumer import RebalanceListener
from broker.dead_letters import DEFAULT_DEAD_LETTER_TOPIC
from broker.delays import DEFAULT_DELAY_PREFIX
from broker.errors import BrokerError, BrokerUnavailable, MessageTooLarge
from broker.middleware import Middleware

log = logging.getLogger(__name__)

# kafka-python doubles its reconnect backoff per failed attempt up to 30 s by default, so after a
# 10-15 s broker restart the next attempt could be half a minute away: the API answered 503 long
# after Kafka was back. Trying a lost broker once a second costs nothing.
RECONNECT_BACKOFF_MAX_MS = 1_000
# How long a failed send counts as "the producer is failing" for health() without a newer verdict.
HEALTH_WINDOW_S = 30.0


def client_options(
    bootstrap_servers: str | Sequence[str],
    security_protocol: str = "PLAINTEXT",
    sasl_mechanism: str | None = None,
    sasl_username: str | None = None,
    sasl_password: str | None = None,
    ssl_cafile: str | None = None,
    client_id: str | None = None,
) -> dict[str, Any]:
    """kafka-python keyword arguments for connection and authentication (shared by all clients)."""
    servers = bootstrap_servers.split(",") if isinstance(bootstrap_servers, str) else list(bootstrap_servers)
    options: dict[str, Any] = {"bootstrap_servers": [s.strip() for s in servers if s.strip()]}
    if client_id:
        options["client_id"] = client_id
    if security_protocol != "PLAINTEXT":
        options["security_protocol"] = security_protocol
    if security_protocol.startswith("SASL"):
        options.update(
            sasl_mechanism=sasl_mechanism or "PLAIN",
            sasl_plain_username=sasl_username,
            sasl_plain_password=sasl_password,
        )
    if ssl_cafile:
        options["ssl_cafile"] = ssl_cafile
    return options


def _gevent_patched() -> bool:
    """Whether gevent has patched this process's sockets (without importing gevent otherwise)."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("socket")


class KafkaBroker(Broker):
    """A broker on Apache Kafka (or Confluent Cloud: ``security_protocol="SASL_SSL"``, ``sasl_mechanism="PLAIN"``).

    Parameters:
      bootstrap_servers, security_protocol, sasl_mechanism, sasl_username, sasl_password,
      ssl_cafile, client_id: how to reach and authenticate to the cluster.
      send_timeout_ms: the longest any send waits for an acknowledgement (``acks="all"``).
      linger_ms: how long the producer waits to fill a batch. 0 (the default): a lone send goes
        out at once instead of waiting; under load batches still form on their own, as records
        pile up while the one request per connection is in flight.
      producer_options, consumer_options: extra kafka-python settings.
      delay_prefix: names the delay topics (see :mod:`broker.delays`), which must exist like the
        actors' topics; ``None`` turns delayed messages off.
      producer_thread: run the producer on a native OS thread of its own when gevent has
        patched the process (:mod:`broker.brokers.kafka.producer_thread`: acknowledgements no longer
        wait behind every ready greenlet, but the request loop then shares the interpreter lock
        with that thread). Off by default; ignored without gevent.
      assignor: how a group shares partitions. ``cooperative-sticky`` (the default, KIP-429): a
        member joining or leaving moves only the partitions that change owner, the others keep
        running. ``range`` or ``roundrobin``: eager, every rebalance revokes every partition.
        One group cannot mix the two kinds (docs/operations.md: switching).
    """

    def __init__(
        self,
        *,
        bootstrap_servers: str | Sequence[str] = "127.0.0.1:9092",
        security_protocol: str = "PLAINTEXT",
        sasl_mechanism: str | None = None,
        sasl_username: str | None = None,
        sasl_password: str | None = None,
        ssl_cafile: str | None = None,
        client_id: str | None = None,
        middleware: Sequence[Middleware] | None = None,
        dead_letter_topic: str = DEFAULT_DEAD_LETTER_TOPIC,
        send_timeout_ms: int = 5000,
        linger_ms: int = 0,
        producer_options: dict[str, Any] | None = None,
        consumer_options: dict[str, Any] | None = None,
        delay_prefix: str | None = DEFAULT_DELAY_PREFIX,
        assignor: str = "cooperative-sticky",
        producer_thread: bool = False,
    ) -> None:
        if assignor not in ASSIGNORS:
            raise ValueError(f"assignor must be one of {', '.join(ASSIGNORS)}, not {assignor!r}")
        self.assignor = assignor
        super().__init__(
            middleware, dead_letter_topic=dead_letter_topic, send_timeout_ms=send_timeout_ms, delay_prefix=delay_prefix
        )
        self.client_options = client_options(
            bootstrap_servers, security_protocol, sasl_mechanism, sasl_username, sasl_password, ssl_cafile, client_id
        )
        self.linger_ms = linger_ms
        self.producer_options = producer_options or {}
        self.consumer_options = consumer_options or {}
        self.producer_thread = producer_thread
        self._producer: KafkaProducer | None = None
        self._producer_pid: int | None = None
        self._producer_lock = threading.Lock()
        self._failing_since: float | None = None  # set when a send fails, cleared by an acknowledgement

    # ------------------------------------------------------------ producing

    @property
    def producer(self) -> KafkaProducer:
        """This process's producer, created on first use. Raises :class:`BrokerUnavailable`."""
        producer = self._producer
        if producer is not None and self._producer_pid == os.getpid():
            return producer
        if not self._producer_lock.acquire(timeout=self.send_timeout_ms / 1000):
            raise BrokerUnavailable("timed out waiting for the Kafka producer to connect")
        try:
            if self._producer is None or self._producer_pid != os.getpid():
                self._producer = self._make_producer()
                self._producer_pid = os.getpid()
            return self._producer
        finally:
            self._producer_lock.release()

    def _make_producer(self) -> KafkaProducer:
        timeout = self.send_timeout_ms
        options: dict[str, Any] = {
            **self.client_options,
            "acks": "all",
            # Not idempotent: kafka-python 3.0.12's idempotent producer never sends again once
            # batches expired while a broker was away (a restart under load wedged the API for
            # minutes), and one fatal error poisons it for good. Durability stays (acks=all); one
            # request in flight per connection keeps each partition's order through retries; a
            # duplicate from a retried request is absorbed like any redelivery (tasks are idempotent).
            "enable_idempotence": False,
            "max_in_flight_requests_per_connection": 1,
            "linger_ms": self.linger_ms,
            "batch_size": 256 * 1024,
            # every wait bounded: connecting, metadata, the request, the whole delivery
            "bootstrap_timeout_ms": timeout,
            "max_block_ms": timeout,
            "request_timeout_ms": timeout,
            "delivery_timeout_ms": timeout + self.linger_ms,
            "allow_auto_create_topics": False,
            "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
            # kafka-python's own sensors (byte rates, batch sizes): nothing here reads them, and
            # recording them was 4 % of a POST's CPU (docs/performance.md)
            "metrics_enabled": False,
        }
        options.update(self.producer_options)
        try:
            if self.producer_thread and _gevent_patched():
                from broker.brokers.kafka.producer_thread import ThreadedProducer

                return ThreadedProducer(options, connect_timeout_s=timeout / 1000)  # type: ignore[return-value]
            return KafkaProducer(**options)
        except KafkaError as exc:
            raise BrokerUnavailable(f"cannot connect to Kafka at {self._servers}: {exc}; {self.diagnose()}") from exc

    @property
    def _servers(self) -> str:
        return ",".join(self.client_options["bootstrap_servers"])

    def diagnose(self, timeout_s: float = 3.0) -> str:
        """Why a bootstrap probably failed, in words an operator can act on.

        kafka-python reports a rejected SASL login only as a dropped connection, so this probes
        TCP and TLS by hand and names the likely culprit, by this class's parameter names.
        """
        problem = self._probe(timeout_s)
        if problem is not None:
            return problem
        host, _, port = self.client_options["bootstrap_servers"][0].rpartition(":")
        protocol = self.client_options.get("security_protocol", "PLAINTEXT")
        if protocol.startswith("SASL"):
            user = self.client_options.get("sasl_plain_username")
            return (
                f"{host}:{port} accepts connections{' and TLS' if protocol == 'SASL_SSL' else ''}, so the broker "
                f"most likely rejected the SASL credentials for user {user!r}: check sasl_username, "
                "sasl_password and sasl_mechanism"
            )
        return f"{host}:{port} accepts connections but did not answer as Kafka: check security_protocol"

    def _probe(self, timeout_s: float) -> str | None:
        """None if the first bootstrap server accepts a TCP connection (and a TLS handshake, where
        the protocol uses TLS); otherwise what failed, in words."""
        host, _, port = self.client_options["bootstrap_servers"][0].rpartition(":")
        try:
            sock = socket.create_connection((host, int(port)), timeout=timeout_s)
        except OSError as exc:
            return f"nothing answers at {host}:{port} ({exc.strerror or exc}): check bootstrap_servers"
        with sock:
            if self.client_options.get("security_protocol", "PLAINTEXT") in ("SSL", "SASL_SSL"):
                context = ssl.create_default_context(cafile=self.client_options.get("ssl_cafile"))
                try:
                    context.wrap_socket(sock, server_hostname=host).close()
                except (ssl.SSLError, OSError) as exc:
                    return f"the TLS handshake with {host}:{port} failed ({exc}): check ssl_cafile"
        return None

    def _produce(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> Callable[[float], None]:
        producer = self.producer
        try:
            future = producer.send(topic, value=value, key=key, headers=headers)
        except KafkaError as exc:
            raise self._translate(exc, producer, f"Kafka did not accept a message for {topic!r}") from exc

        def wait(timeout_s: float) -> None:
            try:
                future.get(timeout=timeout_s)
            except KafkaError as exc:
                raise self._translate(exc, producer, f"Kafka did not acknowledge a message for {topic!r}") from exc
            self._failing_since = None

        return wait

    def _translate(self, exc: KafkaError, producer: KafkaProducer, what: str) -> BrokerError:
        """The error a sender sees, and the producer's repair: a record too large is the message's
        fault (the producer is fine); a fatal error rebuilds the producer, so one bad moment never
        leaves the process unable to send; anything else is an outage until a send succeeds."""
        if isinstance(exc, TOO_LARGE):
            return MessageTooLarge(f"{what}: {exc}")
        if isinstance(exc, FATAL):
            self._discard_producer(producer, exc)
        if self._failing_since is None:
            self._failing_since = time.monotonic()
        return BrokerUnavailable(f"{what}: {exc}")

    def _discard_producer(self, producer: KafkaProducer, exc: KafkaError) -> None:
        """Drop ``producer`` (if it is still the current one): the next send builds a fresh one."""
        with self._producer_lock:
            if self._producer is not producer:
                return
            self._producer = None
        log.warning("the Kafka producer failed for good; building a new one", extra={"error": repr(exc)})
        threading.Thread(target=producer.close, kwargs={"timeout": 0}, daemon=True).start()

    def health(self) -> tuple[bool, str]:
        """Whether this process's producer can send now, in words for ``/readyz``.

        The sends tell the truth: failing since the last send failed, fine again once one is
        acknowledged. With no recent verdict (no traffic, or a readiness probe keeping traffic
        away), a TCP probe of the bootstrap servers stands in."""
        failing_since = self._failing_since
        if failing_since is not None and time.monotonic() - failing_since < HEALTH_WINDOW_S:
            return False, f"sends failing for {time.monotonic() - failing_since:.0f}s"
        problem = self._probe(timeout_s=1.0)
        return (False, problem) if problem is not None else (True, "ok")

    def flush(self, timeout_ms: int | None = None) -> None:
        if self._producer is None or self._producer_pid != os.getpid():
            return
        try:
            self._producer.flush(timeout=(timeout_ms or self.send_timeout_ms) / 1000)
        except KafkaError as exc:
            raise BrokerUnavailable(f"Kafka producer flush failed: {exc}") from exc

    def close(self) -> None:
        with self._producer_lock:
            producer, self._producer = self._producer, None
        if producer is not None and self._producer_pid == os.getpid():
            try:
                producer.close(timeout=self.send_timeout_ms / 1000)
            except KafkaError:
                log.warning("closing the Kafka producer timed out; unsent messages were dropped")

    # ------------------------------------------------------------ consuming

    def _missing_topic(self, topic: str) -> str | None:
        from broker.brokers.kafka.admin import topic_exists

        return None if topic_exists(self.client_options, topic) else f"topic {topic!r} does not exist"

    def _consume_group(
        self, topics: list[str], group_id: str | None, listener: RebalanceListener, *, instance_id: str | None
    ) -> KafkaGroupConsumer:
        options: dict[str, Any] = {
            **self.client_options,
            "group_id": group_id,
            "group_instance_id": instance_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "max_poll_records": 500,
            "fetch_max_wait_ms": 100,
            "allow_auto_create_topics": False,
            "bootstrap_timeout_ms": 10000,  # fail start-up in bounded time (with a diagnosis)
            # A group leader that assigns while its metadata lacks a topic assigns nothing, and
            # kafka-python rebalances again only once fresh metadata differs: the default 5 minutes
            # was a 5-minute stall (seen on fresh topics and after worker restarts). Refresh often.
            "metadata_max_age_ms": 10000,
            "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
            "partition_assignment_strategy": [ASSIGNORS[self.assignor]],
            # how soon a member notices a rebalance: a cooperative one waits for it twice
            "heartbeat_interval_ms": DEFAULT_HEARTBEAT_INTERVAL_MS,
            "metrics_enabled": False,  # kafka-python's own sensors, which nothing reads (as the producer's)
        }
        options.update(self.consumer_options)
        try:
            return KafkaGroupConsumer(topics, listener, options, connection=self.client_options)
        except KafkaError as exc:
            raise BrokerUnavailable(f"cannot connect to Kafka at {self._servers}: {exc}; {self.diagnose()}") from exc
