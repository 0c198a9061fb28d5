"""Actors: functions registered with a broker, callable in-process or sent as messages."""

from __future__ import annotations

import datetime as dt
import inspect
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any, Generic, NamedTuple, ParamSpec, TypeVar, overload

from broker import delays
from broker.asyncio import async_to_sync
from broker.broker import Broker, SendFuture, _global_broker_or_none, _register_global_actor, get_broker
from broker.cron import Cron
from broker.message import Message
from broker.middleware import default_middleware

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_TOPIC = "default"
_TOPIC_RE = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
_BUILTIN_OPTIONS = frozenset().union(*(m.actor_options for m in default_middleware)) | {"key", "ordered", "periodic"}


class Call(NamedTuple):
    """One message's arguments, as a batch function receives them."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]


BatchFn = Callable[[list[Call]], Any]


class Actor(Generic[P, R]):
    """A registered task function. Build with :func:`actor`, not directly.

    ``actor(*args)`` runs the function here and now; ``actor.send(*args)`` enqueues it.
    An ``async def`` function is run on the process's event loop thread (:mod:`broker.asyncio`):
    ``fn`` is then the synchronous wrapper, ``is_async`` is True and ``__wrapped__`` the coroutine
    function.
    """

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        actor_name: str,
        topic: str,
        options: dict[str, Any],
        broker: Broker | None,
        priority: int = 0,
    ) -> None:
        self.logger = logging.getLogger(f"{getattr(fn, '__module__', None) or '_'}.{actor_name}")
        self.priority = priority  # lower runs first among a worker process's ready messages
        self.is_async = inspect.iscoroutinefunction(fn)
        self.fn: Callable[P, R] = async_to_sync(fn) if self.is_async else fn  # type: ignore[arg-type]
        self.actor_name = actor_name
        self.topic = topic
        self.options = options
        self._broker = broker
        self.batch_fn: BatchFn | None = None
        self.batch_size = 0
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def batched(self, max_size: int = 500) -> Callable[[BatchFn], BatchFn]:
        """Register a batch form of this actor: ``fn(calls: list[Call])`` does the work of all
        ``calls`` at once (one transaction, one round trip) or raises.

        The worker hands it the ready messages of this actor, at most ``max_size``, each the head
        of a different key (so per-key order holds), first deliveries only. If it returns, every
        one of them is done; if it raises, it must have changed nothing (roll back), and each
        message then runs alone through the ordinary function with its own retries and dead
        letter: one bad record never fails its neighbours. The ordinary function stays the
        reference; the batch form must have the same effect as calling it once per message.
        """
        if max_size < 2:
            raise ValueError(f"actor {self.actor_name!r}: a batch holds at least 2 messages")

        def register(fn: BatchFn) -> BatchFn:
            if inspect.iscoroutinefunction(fn):
                raise ValueError(f"actor {self.actor_name!r}: a batch form must be a plain function, not async def")
            self.batch_fn, self.batch_size = fn, max_size
            return fn

        return register

    @property
    def broker(self) -> Broker:
        """The broker given at decoration, else the global one (resolved at use, so import order is free)."""
        return self._broker or get_broker()

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def message(self, *args: P.args, **kwargs: P.kwargs) -> Message:
        return self.message_with_options(args=args, kwargs=kwargs)

    def message_with_options(
        self,
        *,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        **options: Any,
    ) -> Message:
        """Build a message without sending it. ``options`` override the actor's for this message only.

        Raises ``ValueError`` for an option that cannot be set per message, or a bad value.
        """
        if options:
            options = _callback_names(_normalise_times(options))
            self._check_message_options(options)
        kwargs = kwargs or {}
        if key is None and self.options.get("key") is not None:
            key = self.options["key"](*args, **kwargs)
        return Message(
            actor_name=self.actor_name,
            topic=self.topic,
            args=tuple(args),
            kwargs=kwargs,
            key=None if key is None else str(key),
            headers=dict(headers or {}),
            options=options,
        )

    def _check_message_options(self, options: dict[str, Any]) -> None:
        broker = self._broker or _global_broker_or_none()
        middleware = broker.middleware if broker is not None else [cls() for cls in default_middleware]
        owners = {name: m for m in middleware for name in getattr(m, "message_options", ())}
        options = {name: value for name, value in options.items() if name != "eta"}  # checked by the broker
        unknown = sorted(set(options) - set(owners))
        if unknown:
            raise ValueError(
                f"actor {self.actor_name!r}: option(s) {', '.join(unknown)} cannot be set per message; "
                f"per-message options are {', '.join(sorted(owners))} (the others are set on the actor)"
            )
        for name, value in options.items():
            validate = getattr(owners[name], "validate_message_option", None)
            if validate is not None:
                validate(name, value)

    def send(self, *args: P.args, **kwargs: P.kwargs) -> Message:
        """Enqueue a call and return its message once the broker acknowledged it.

        Raises ``EncodeError`` for arguments JSON cannot carry and ``BrokerUnavailable`` when the
        broker does not acknowledge within its send timeout.
        """
        return self.broker.enqueue(self.message(*args, **kwargs))

    def send_with_options(
        self,
        *,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        wait: bool = True,
        timeout_ms: int | None = None,
        delay: int | dt.timedelta | None = None,
        **options: Any,
    ) -> Message | SendFuture:
        """Like :meth:`send`, with a Kafka ``key`` (ordering), message ``headers`` and options.

        ``options`` (``max_retries``, ``min_backoff``, ``max_backoff``, ``time_limit`` and those of
        custom middleware that declare ``message_options``) override the actor's for this message;
        any other raises ``ValueError`` before anything is sent.

        With ``wait=False`` it returns a :class:`SendFuture` at once; call ``broker.flush()`` and
        then ``future.result()`` to learn the outcome (see also :meth:`send_many`).

        With ``delay`` (ms or a ``timedelta``, up to 7 days) the message runs no earlier than that:
        it waits in the delay topics, holding no partition or key meanwhile (:mod:`broker.delays`).
        """
        message = self.message_with_options(args=args, kwargs=kwargs, key=key, headers=headers, **options)
        return self.broker.enqueue(message, wait=wait, timeout_ms=timeout_ms, delay=delay)

    def send_many(self, calls: Iterable[tuple[Any, ...] | Message], *, timeout_ms: int | None = None) -> list[Message]:
        """Enqueue many calls (argument tuples, or messages from :meth:`message_with_options`) in
        producer batches; returns once all are acknowledged, raises ``BrokerUnavailable`` otherwise."""
        # the arguments arrive as tuples: P cannot check them here (the worker's call will)
        messages = (c if isinstance(c, Message) else self.message(*c) for c in calls)  # type: ignore[call-arg]
        return self.broker.enqueue_many(messages, timeout_ms=timeout_ms)

    def __repr__(self) -> str:
        return f"Actor({self.fn!r}, topic={self.topic!r}, actor_name={self.actor_name!r})"

    def __str__(self) -> str:
        return f"Actor({self.actor_name})"


def _callback_names(options: dict[str, Any]) -> dict[str, Any]:
    """``on_success`` / ``on_failure`` given as actors travel as their names (Dramatiq's rule)."""
    for name in ("on_success", "on_failure", "on_retry_exhausted"):
        target = options.get(name)
        if isinstance(target, Actor):
            options = {**options, name: target.actor_name}
        elif target is not None and not isinstance(target, str):
            raise TypeError(f"{name} value must be an Actor")
    return options


def _normalise_times(options: dict[str, Any]) -> dict[str, Any]:
    """Per-message times as the wire carries them: ``eta`` in epoch ms (from an aware ``datetime``,
    or a ``timedelta`` from now) and a pipeline step's ``delay`` in ms (from a ``timedelta``)."""
    eta, delay = options.get("eta"), options.get("delay")
    if isinstance(eta, dt.datetime):
        if eta.tzinfo is None:
            raise ValueError("message option 'eta' must be an aware datetime (a naive one has no instant)")
        options = {**options, "eta": int(eta.timestamp() * 1000)}
    elif isinstance(eta, dt.timedelta):
        options = {**options, "eta": delays.now_ms() + int(eta.total_seconds() * 1000)}
    if isinstance(delay, dt.timedelta):
        options = {**options, "delay": int(delay.total_seconds() * 1000)}
    return options


@overload
def actor(fn: Callable[P, R]) -> Actor[P, R]: ...


@overload
def actor(
    fn: None = None, *, actor_name: str | None = None, topic: str = ..., broker: Broker | None = None, **options: Any
) -> Callable[[Callable[P, R]], Actor[P, R]]: ...


def actor(
    fn: Callable[P, R] | None = None,
    *,
    actor_class: type[Actor[Any, Any]] | None = None,
    actor_name: str | None = None,
    topic: str = DEFAULT_TOPIC,
    priority: int = 0,
    broker: Broker | None = None,
    **options: Any,
) -> Any:
    """Register a function as an actor (bare ``@actor`` or ``@actor(...)``).

    Parameters:
      actor_name: defaults to the function's name; unique per broker.
      topic: the Kafka topic its messages go to.
      broker: bind to this broker instead of the global one (handy in tests).
      actor_class: an :class:`Actor` subclass to build (Dramatiq's).
      priority: lower runs first among the ready messages of a worker process (Dramatiq's; not
        across processes: Kafka has no priority queues).
      **options: ``max_retries``, ``min_backoff``, ``max_backoff`` (ms), ``throws``, ``retry_when``,
        ``transient`` (exception types meaning a dependency failed: waited for, never dead-lettered),
        ``time_limit`` (ms), ``key`` (``key(*args, **kwargs) -> str``, the Kafka key for ``send``),
        ``ordered`` (default True: a failed message retries in place and holds its key; False: it
        is retried as a delayed message and its key moves on), ``periodic`` (a cron expression,
        UTC: ``worker.py scheduler`` enqueues a run at each time it names, see
        :mod:`broker.scheduler`), plus options of custom middleware.

    Raises:
      ValueError: for unknown options or an invalid topic name (at decoration time).
    """

    def decorator(fn: Callable[P, R]) -> Actor[P, R]:
        name = actor_name or fn.__name__
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            # calling one only builds a generator: the body would never run, yet the message would
            # be committed as done
            raise ValueError(f"actor {name!r}: a generator function cannot be an actor (its body would never run)")
        if not _TOPIC_RE.match(topic):
            raise ValueError(f"actor {name!r}: topic {topic!r} is not a valid Kafka topic name")
        target = broker or _global_broker_or_none()
        valid = _BUILTIN_OPTIONS | (target.actor_options if target is not None else frozenset())
        unknown = set(options) - valid
        if unknown:
            raise ValueError(
                f"actor {name!r}: unknown option(s) {', '.join(sorted(unknown))}; "
                f"valid options are {', '.join(sorted(valid))} (custom options need a middleware declaring them)"
            )
        for name_ in ("throws", "transient"):  # exception types: one, or any iterable of them
            types = options.get(name_)
            if types is not None and not isinstance(types, tuple):
                options[name_] = (types,) if isinstance(types, type) else tuple(types)
        for name_ in ("key", "retry_when"):
            if options.get(name_) is not None and not callable(options[name_]):
                raise ValueError(f"actor {name!r}: option {name_!r} must be callable")
        if not isinstance(options.get("ordered", True), bool):
            raise ValueError(f"actor {name!r}: option 'ordered' must be True or False")
        if options.get("periodic") is not None:
            try:
                options["periodic"] = Cron.parse(options["periodic"])
            except ValueError as exc:
                raise ValueError(f"actor {name!r}: option 'periodic': {exc}") from None
        cls = actor_class or Actor
        instance = cls(
            fn, actor_name=name, topic=topic, options=_callback_names(options), broker=broker, priority=priority
        )
        if broker is not None:
            broker.declare_actor(instance)
        else:
            _register_global_actor(instance)
        return instance

    return decorator(fn) if fn is not None else decorator
