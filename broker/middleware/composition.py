"""Middleware behind pipelines and groups (:mod:`broker.composition`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from broker.delays import check_delay
from broker.message import Message
from broker.middleware.middleware import Middleware
from broker.rate_limits.backend import RateLimiterBackend
from broker.rate_limits.barrier import DEFAULT_BARRIER_TTL_MS, Barrier

if TYPE_CHECKING:
    from broker.broker import Broker
    from broker.proxy import MessageProxy

PIPE_TARGET = "pipe_target"  # option: the next step of a pipeline, as Message.asdict() gives it
GROUP_INFO = "group_info"  # option: {"group_id", "parties", "callbacks"} on a group's members


class Pipelines(Middleware):
    """Sends a pipeline's next step when a step succeeds (in the default middleware).

    ``pipe_ignore=True`` (on an actor, or per message) keeps the previous result out of its
    arguments; a step's ``delay`` option (ms, or a ``timedelta``) sends it that long after the
    previous step succeeded (as in Dramatiq).
    """

    actor_options = frozenset({"pipe_ignore"})
    message_options = frozenset({"pipe_ignore", "delay"})

    def validate_message_option(self, name: str, value: object) -> None:
        if name == "delay":
            check_delay(value)
        elif not isinstance(value, bool):
            raise ValueError(f"message option {name!r} must be True or False, not {value!r}")

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        target = message.options.get(PIPE_TARGET)
        if exception is not None or target is None:
            return
        following = Message.from_dict(target)
        actor = broker.actors.get(following.actor_name)
        ignore = following.options.get("pipe_ignore", actor.options.get("pipe_ignore", False) if actor else False)
        if not ignore:
            following = following.copy(args=(*following.args, result))
        # a dependency failure here runs this step again (worker)
        broker.enqueue(following, delay=following.options.get("delay"))


class GroupCallbacks(Middleware):
    """Sends a group's completion callbacks once all its members succeeded:
    ``broker.add_middleware(GroupCallbacks(backend))`` with a rate-limiter backend shared by the
    workers (``broker.rate_limits.backends.RedisBackend``). A group must complete within ``ttl``
    ms (default a day)."""

    def __init__(self, backend: RateLimiterBackend, *, ttl: int = DEFAULT_BARRIER_TTL_MS) -> None:
        self.backend = backend
        self.ttl = ttl

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        info = message.options.get(GROUP_INFO)
        if exception is not None or not info:
            return
        barrier = Barrier(self.backend, f"group-callbacks:{info['group_id']}", info["parties"], ttl=self.ttl)
        if barrier.arrive(message.message_id):
            for callback in info["callbacks"]:
                broker.enqueue(Message.from_dict(callback))
