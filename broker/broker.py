"""The abstract broker: actor registry, middleware, enqueueing. Concrete brokers live in ``brokers/``.

One class over 400 lines on purpose: it is the surface Dramatiq users know as ``Broker``
(declare, enqueue, consume, join, flush, the middleware hooks), and the typed overloads of
``enqueue`` take their room; what is not that surface lives elsewhere (dead letters, delays,
the queue consumer, the Kafka door in ``brokers/kafka/``).
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

from broker import delays
from broker.consumer import RebalanceListener, Record
from broker.dead_letters import DEFAULT_DEAD_LETTER_TOPIC, REASON_FAILED, dead_letter_headers
from broker.errors import ActorNotFound, BrokerUnavailable, DuplicateActor, NoBrokerConfigured, QueueNotFound
from broker.message import Message
from broker.middleware import AsyncIO, Middleware, default_middleware

if TYPE_CHECKING:
    from broker.actor import Actor

log = logging.getLogger(__name__)

# Message headers also written as Kafka record headers, where other languages' consumers and
# Kafka tools look for them: W3C trace context (broker.middleware.tracing puts them there).
RECORD_HEADERS = ("traceparent", "tracestate")


class SendFuture:
    """The pending result of a non-blocking send. :meth:`result` returns the message once acked."""

    def __init__(self, message: Message, wait: Any, default_timeout_ms: int) -> None:
        self.message = message
        self._wait = wait  # callable(timeout_s) that raises on failure
        self._timeout_ms = default_timeout_ms

    def result(self, timeout_ms: int | None = None) -> Message:
        """Block until the broker acked, or raise :class:`BrokerUnavailable`."""
        self._wait((timeout_ms if timeout_ms is not None else self._timeout_ms) / 1000)
        return self.message


class Broker:
    """Base class. Subclasses implement :meth:`_produce` (what :meth:`produce` does), :meth:`consume`
    and :meth:`flush`.

    Parameters:
      middleware: the middleware instances to use; ``None`` means the defaults
        (``TimeLimit``, ``Retries``, ``Logging``).
      dead_letter_topic: where failed messages go.
      send_timeout_ms: how long ``send`` waits for the broker's acknowledgement.
      delay_prefix: names the delay topics (``<prefix>-1s`` ... ``<prefix>-1d``, see
        :mod:`broker.delays`); ``None`` turns delayed messages off.
    """

    def __init__(
        self,
        middleware: Sequence[Middleware] | None = None,
        *,
        dead_letter_topic: str = DEFAULT_DEAD_LETTER_TOPIC,
        send_timeout_ms: int = 5000,
        delay_prefix: str | None = delays.DEFAULT_DELAY_PREFIX,
    ) -> None:
        self.actors: dict[str, Actor[..., Any]] = {}
        self._inherited: set[str] = set()  # actors set_broker carried over (see _inherit)
        self.declarations = 0  # counts declarations: a worker following the declared topics watches it
        self.prioritised = False  # some actor has a priority: workers order their ready records by it
        self.delay_prefix = delay_prefix
        self.middleware: list[Middleware] = []
        self._hooks: dict[str, list[Middleware]] = {}  # hook name -> the middleware implementing it
        self._hooks_shape: tuple[int, int] = (0, -1)
        self.dead_letter_topic = dead_letter_topic
        self.send_timeout_ms = send_timeout_ms
        self.hostname = socket.gethostname()
        for m in middleware if middleware is not None else [cls() for cls in default_middleware]:
            self.add_middleware(m)

    # ------------------------------------------------------------ middleware

    def add_middleware(self, middleware: Middleware, *, before: type | None = None, after: type | None = None) -> None:
        """Add ``middleware`` at the end, or just before (after) the first middleware of the class
        ``before`` (``after``), as in Dramatiq. Actors and topics already declared are announced to
        it (``after_declare_actor``, ``after_declare_queue``).

        Raises:
          ValueError: ``before`` or ``after`` names a class none of the middleware is.
          AssertionError: both were given (Dramatiq asserts it).
        """
        if before is not None and after is not None:
            raise AssertionError("provide either 'before' or 'after', but not both")  # as Dramatiq's assert
        if any(isinstance(m, type(middleware)) for m in self.middleware):
            log.warning(
                "You're adding a middleware of the same type twice: %r. It may have unexpected results.", middleware
            )
        self._hooks.clear()
        reference = before or after
        if reference is None:
            self.middleware.append(middleware)
        else:
            index = next((i for i, m in enumerate(self.middleware) if isinstance(m, reference)), None)
            if index is None:
                raise ValueError(f"Middleware {reference!r} not found")
            self.middleware.insert(index if before is not None else index + 1, middleware)
        for actor in self.actors.values():
            method = getattr(middleware, "after_declare_actor", None)
            if method is not None:
                method(self, actor)
        for topic in self.get_declared_topics():
            method = getattr(middleware, "after_declare_queue", None)
            if method is not None:
                method(self, topic)

    @property
    def actor_options(self) -> frozenset[str]:
        options: set[str] = set()
        for m in self.middleware:
            options |= getattr(m, "actor_options", frozenset())
        return frozenset(options)

    def emit_before(self, hook: str, *args: Any, **kwargs: Any) -> None:
        """Call ``before_<hook>`` of each middleware that has it, in order. A failure propagates:
        the worker dead-letters the record (reason ``worker_error``) or waits for a dependency."""
        for m in self._implementing("before_" + hook):
            getattr(m, "before_" + hook)(self, *args, **kwargs)

    def emit_after(self, hook: str, *args: Any, **kwargs: Any) -> None:
        """Call ``after_<hook>`` of each middleware that has it, in reverse order."""
        for m in reversed(self._implementing("after_" + hook)):
            getattr(m, "after_" + hook)(self, *args, **kwargs)

    def emit(self, hook: str, *args: Any, **kwargs: Any) -> None:
        """Call an ``on_*`` hook; a failing hook is logged, never allowed to break processing."""
        for m in self._implementing(hook):
            try:
                getattr(m, hook)(self, *args, **kwargs)
            except Exception:
                log.exception("middleware %s.%s failed", type(m).__name__, hook)

    def _implementing(self, name: str) -> list[Middleware]:
        """The middleware with a hook ``name`` of their own, in order: the base class's no-ops are
        skipped, so the many hooks cost nothing where nobody listens (a message passes ~10 of
        them). Known per hook since the last :meth:`add_middleware`; the method itself is looked
        up at each call, so a hook patched onto an overriding class still takes effect."""
        shape = (id(self.middleware), len(self.middleware))
        if shape != self._hooks_shape:  # the list was replaced or changed in place: look again
            self._hooks.clear()
            self._hooks_shape = shape
        found = self._hooks.get(name)
        if found is None:
            noop = getattr(Middleware, name, None)
            found = [
                m
                for m in self.middleware
                if name in getattr(m, "__dict__", {}) or getattr(type(m), name, noop) is not noop
            ]
            self._hooks[name] = found
        return found

    # ------------------------------------------------------------ actors

    def declare_actor(self, actor: Actor[..., Any]) -> None:
        """Register ``actor`` by name. Raises :class:`DuplicateActor` for another actor of that name,
        and ``ValueError`` for an actor this broker could not run (``async def`` without ``AsyncIO``)."""
        if getattr(actor, "is_async", False) and not self._runs_async():
            raise ValueError(
                f"actor {actor.actor_name!r} is async def, and this broker has no AsyncIO middleware to run it: "
                "broker.add_middleware(AsyncIO()) (from broker.middleware) before declaring it"
            )
        existing = self.actors.get(actor.actor_name)
        if existing is actor:
            return
        if existing is not None and actor.actor_name not in self._inherited:
            raise DuplicateActor(f"an actor named {actor.actor_name!r} is already declared on this broker")
        self.emit_before("declare_actor", actor)
        new_topic = actor.topic not in self.get_declared_topics()
        if new_topic:
            self.emit_before("declare_queue", actor.topic)
        self._inherited.discard(actor.actor_name)
        self.actors[actor.actor_name] = actor
        self.declarations += 1
        self.prioritised = self.prioritised or bool(getattr(actor, "priority", 0))
        if new_topic:
            self.emit_after("declare_queue", actor.topic)
        self.emit_after("declare_actor", actor)

    def _inherit(self, actor: Actor[..., Any]) -> None:
        """Declare a global actor carried over by :func:`set_broker`, unless one of its name is
        declared here already. An actor declared on this broker later replaces it by name (as a
        fresh Dramatiq broker per test allows the same actor to be declared again)."""
        if actor.actor_name in self.actors:
            return
        if getattr(actor, "is_async", False) and not self._runs_async():
            # not declared, so its messages are dead-lettered as an unknown actor's: never acked unrun
            log.warning("async actor %r not declared on a broker without the AsyncIO middleware", actor.actor_name)
            return
        self.declare_actor(actor)
        self._inherited.add(actor.actor_name)

    def _runs_async(self) -> bool:
        return any(isinstance(m, AsyncIO) for m in self.middleware)

    def get_actor(self, actor_name: str) -> Actor[..., Any]:
        try:
            return self.actors[actor_name]
        except KeyError:
            raise ActorNotFound(f"no actor named {actor_name!r} is declared on this broker") from None

    def get_declared_topics(self) -> set[str]:
        return {a.topic for a in self.actors.values()}

    # ------------------------------------------------------------ enqueueing

    @property
    def delay_topics(self) -> list[str]:
        """The delay topics this broker writes delayed messages to (empty: delays are off)."""
        return delays.tier_topics(self.delay_prefix) if self.delay_prefix else []

    @overload
    def enqueue(
        self,
        message: Message,
        *,
        wait: Literal[True] = ...,
        timeout_ms: int | None = ...,
        delay: int | dt.timedelta | None = ...,
    ) -> Message: ...

    @overload
    def enqueue(
        self,
        message: Message,
        *,
        wait: Literal[False],
        timeout_ms: int | None = ...,
        delay: int | dt.timedelta | None = ...,
    ) -> SendFuture: ...

    @overload
    def enqueue(
        self,
        message: Message,
        *,
        wait: bool,
        timeout_ms: int | None = ...,
        delay: int | dt.timedelta | None = ...,
    ) -> Message | SendFuture: ...

    def enqueue(
        self,
        message: Message,
        *,
        wait: bool = True,
        timeout_ms: int | None = None,
        delay: int | dt.timedelta | None = None,
    ) -> Message | SendFuture:
        """Send ``message``. With ``wait`` (the default) return it once the broker acked it, or raise
        :class:`BrokerUnavailable` within ``timeout_ms``; without, return a :class:`SendFuture`.

        With ``delay`` (ms or a ``timedelta``, at most 7 days) the message gets an ``eta`` option and runs no earlier;
        a message whose ``eta`` is in the future goes to the delay topics (:mod:`broker.delays`).
        """
        if delay is not None:
            delay = delays.check_delay(delay)
            eta = delays.now_ms() + delay
            message = message.copy(options={**message.options, "eta": eta})
        self.emit_before("enqueue", message, delay)
        value = message.encode()  # EncodeError here, in the sender, not later in a worker
        key = message.key.encode("utf-8") if message.key is not None else None
        topic, headers = self._destination(message)
        headers = headers + [(k, v.encode()) for k, v in message.headers.items() if k in RECORD_HEADERS]
        waiter = self._produce(topic, key, value, headers)
        future = SendFuture(message, waiter, timeout_ms if timeout_ms is not None else self.send_timeout_ms)
        if not wait:
            return future
        future.result()
        self.emit_after("enqueue", message, delay)
        return message

    def _destination(self, message: Message) -> tuple[str, list[tuple[str, bytes]]]:
        """The topic (and headers) a message is written to: its own, or a delay topic."""
        eta = message.options.get("eta")
        if eta is None:
            return message.topic, []
        if isinstance(eta, bool) or not isinstance(eta, int):
            raise ValueError(f"message option 'eta' must be epoch milliseconds, not {eta!r}")
        now = delays.now_ms()
        if eta <= now:
            return message.topic, []
        delays.check_delay(eta - now)
        if not self.delay_prefix:
            raise ValueError("this broker has no delay topics (delay_prefix=None): it cannot delay a message")
        return delays.route(self.delay_prefix, message.topic, eta, now)

    def enqueue_many(self, messages: Iterable[Message], *, timeout_ms: int | None = None) -> list[Message]:
        """Send many messages with the producer's batching, then wait for every ack.

        Raises :class:`BrokerUnavailable` naming how many failed; ``exc.failed`` lists them.
        """
        futures = [self.enqueue(m, wait=False) for m in messages]
        self.flush(timeout_ms=timeout_ms)
        failed: list[tuple[Message, Exception]] = []
        for future in futures:
            try:
                future.result(timeout_ms=timeout_ms or self.send_timeout_ms)
            except BrokerUnavailable as exc:
                failed.append((future.message, exc))
            else:
                self.emit_after("enqueue", future.message, None)
        if failed:
            error = BrokerUnavailable(f"{len(failed)} of {len(futures)} messages were not acknowledged: {failed[0][1]}")
            error.failed = failed  # type: ignore[attr-defined]
            raise error
        return [f.message for f in futures]

    def produce(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> Callable[[float], None]:
        """Start writing one record as it is: no message, no middleware, no delay routing. The seam
        for code that moves records rather than sending messages (the delay forwarder, tools,
        tests that play a producer); :meth:`enqueue` and :meth:`dead_letter` use the same path.

        Parameters:
          topic: where to write; key, value: the record's bytes; headers: Kafka record headers.

        Returns:
          ``wait(timeout_s)``, which returns once the broker acknowledged the record.

        Raises:
          BrokerUnavailable: the broker cannot take the record now (from ``produce`` itself, or
            from ``wait`` when no acknowledgement came in time).
          MessageTooLarge: the record is larger than the broker accepts.
        """
        return self._produce(topic, key, value, headers)

    def _produce(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> Callable[[float], None]:
        """What :meth:`produce` does, for a concrete broker to implement."""
        raise NotImplementedError

    def flush(self, timeout_ms: int | None = None) -> None:
        """Push out everything buffered by non-blocking sends."""

    # ------------------------------------------------------------ consuming

    def consume(
        self,
        topics: Iterable[str],
        group_id: str | None = None,
        listener: RebalanceListener | None = None,
        *,
        instance_id: str | None = None,
        prefetch: int = 1,
        timeout: int = 100,
    ) -> Any:
        """Join ``group_id`` on ``topics``, for ``listener`` (the worker). ``instance_id`` makes the
        member static (Kafka's KIP-345): a member that restarts with the same id within the session
        timeout takes its partitions back without a rebalance.

        Without a listener, Dramatiq's ``consume(queue_name, prefetch=, timeout=)``: ``topics`` is
        one topic's name and the result a :class:`~broker.queue_consumer.QueueConsumer`, which
        yields its messages to ack or nack (``group_id`` defaults to the workers').
        """
        if listener is not None:
            return self._consume_group(list(topics), group_id, listener, instance_id=instance_id)
        from broker.queue_consumer import QueueConsumer

        if not isinstance(topics, str):
            raise TypeError("consume() without a listener takes one topic's name, as Dramatiq's consume(queue_name)")
        missing = self._missing_topic(topics)
        if missing is not None:
            raise QueueNotFound(missing)  # before the group waits for a topic that will not come
        return QueueConsumer(self, topics, group_id=group_id, prefetch=prefetch, timeout=timeout)

    def _consume_group(
        self, topics: list[str], group_id: str | None, listener: RebalanceListener, *, instance_id: str | None
    ) -> Any:
        """What :meth:`consume` does with a listener, for a concrete broker to implement."""
        raise NotImplementedError

    def _missing_topic(self, topic: str) -> str | None:
        """Why ``topic`` cannot be consumed (it does not exist), or None; a concrete broker that
        can tell overrides it."""
        return None

    def dead_letter(
        self,
        record: Record,
        exception: BaseException,
        *,
        message: Message | None = None,
        attempts: int = 1,
        reason: str = REASON_FAILED,
    ) -> None:
        """Write ``record`` unchanged (same key and value) to the dead-letter topic, with the error in
        headers, and wait for the acknowledgement. Raises :class:`BrokerUnavailable`."""
        headers = dead_letter_headers(
            record, exception, message=message, attempts=attempts, host=self.hostname, reason=reason
        )
        wait = self._produce(self.dead_letter_topic, record.key, record.value, record.headers + headers)
        wait(self.send_timeout_ms / 1000)
        self.emit("on_dead_letter", record, message, exception)

    def close(self) -> None:
        """Release connections (flushes buffered sends first)."""


# ---------------------------------------------------------------- the global broker

_broker: Broker | None = None
_lock = threading.Lock()
_global_actors: dict[str, Actor[..., Any]] = {}


def get_broker() -> Broker:
    """The broker set with :func:`set_broker`. There is no default: an unset broker is an error."""
    if _broker is None:
        raise NoBrokerConfigured("no broker configured: call broker.set_broker(...) at start-up")
    return _broker


def set_broker(broker: Broker) -> None:
    """Make ``broker`` the global broker and declare every actor decorated without an explicit broker."""
    global _broker
    with _lock:
        _broker = broker
        for actor in _global_actors.values():
            broker._inherit(actor)


def _register_global_actor(actor: Actor[..., Any]) -> None:
    """An actor decorated without ``broker=``: declared on the global broker if one is set (which
    raises :class:`DuplicateActor` if that broker has an actor of the name declared on it), and
    on every broker set later. With no broker set yet, a second actor of one name is an error."""
    with _lock:
        if _broker is None and actor.actor_name in _global_actors:
            raise DuplicateActor(f"an actor named {actor.actor_name!r} is already declared")
        if _broker is not None:
            _broker.declare_actor(actor)  # first: an actor the broker refuses is not registered either
        _global_actors[actor.actor_name] = actor


def _global_broker_or_none() -> Broker | None:
    return _broker
