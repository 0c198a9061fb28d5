"""Base class for middleware: every hook is a no-op, override the ones you need (Dramatiq's names).

A middleware need not derive from this class: a hook it lacks is simply not called.

Hooks run in the thread that triggers them: enqueue hooks in the sender's thread, process hooks
in a worker thread, boot/shutdown hooks in the thread that starts or stops the worker.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from broker.errors import BrokerError

if TYPE_CHECKING:
    from broker.actor import Actor
    from broker.broker import Broker
    from broker.consumer import Record
    from broker.message import Message
    from broker.proxy import MessageProxy
    from broker.worker import Worker


class MiddlewareError(BrokerError):
    """Base class of the errors middleware raise to steer processing (Dramatiq's name)."""


class SkipMessage(MiddlewareError):
    """Raised in ``before_process_message``: the message is not run. ``after_skip_message`` fires;
    the message is then finished, or dead-lettered if the middleware called ``message.fail()``."""


class Middleware:
    #: Actor options this middleware understands (validated at decoration time).
    actor_options: frozenset[str] = frozenset()
    #: The subset that may also be set per message (``send_with_options``), overriding the actor's.
    #: Only JSON values travel in a message: options holding callables or types stay actor-only.
    message_options: frozenset[str] = frozenset()

    def validate_message_option(self, name: str, value: object) -> None:
        """Raise ``ValueError`` if ``value`` is not acceptable for message option ``name``."""

    def before_ack(self, broker: Broker, message: MessageProxy) -> None:
        """The message finished (succeeded): its offset is about to become committable."""

    def after_ack(self, broker: Broker, message: MessageProxy) -> None:
        """The message's offset is committable (the commit itself is batched)."""

    def before_nack(self, broker: Broker, message: MessageProxy) -> None:
        """The message failed for good: its dead letter is about to be written."""

    def after_nack(self, broker: Broker, message: MessageProxy) -> None:
        """The message's dead letter was acknowledged (its offset is committable)."""

    def before_declare_actor(self, broker: Broker, actor: Actor[..., Any]) -> None: ...

    def after_declare_actor(self, broker: Broker, actor: Actor[..., Any]) -> None: ...

    def before_declare_queue(self, broker: Broker, queue_name: str) -> None:
        """A topic is named by an actor for the first time on this broker (Dramatiq's queue)."""

    def after_declare_queue(self, broker: Broker, queue_name: str) -> None: ...

    def after_declare_delay_queue(self, broker: Broker, queue_name: str) -> None:
        """Dramatiq's delay queues; here the delay topics are fixed tiers, declared by no actor."""

    def before_enqueue(self, broker: Broker, message: Message, delay: int | None) -> None: ...

    def after_enqueue(self, broker: Broker, message: Message, delay: int | None) -> None: ...

    def before_delay_message(self, broker: Broker, message: MessageProxy) -> None:
        """A delivery goes (back) to the delay topics: a retry of an ``ordered=False`` actor, or a
        message that arrived before its eta."""

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None: ...

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None: ...

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        """``before_process_message`` ran but the message was not processed after all (a batch that
        failed as a whole: each of its messages then runs again on its own, hooks and all)."""

    def on_retry(self, broker: Broker, message: MessageProxy, delay_ms: int) -> None:
        """The message failed and will run again after ``delay_ms`` (same worker, same order)."""

    def on_dependency_wait(self, broker: Broker, message: MessageProxy, delay_ms: int) -> None:
        """A dependency failed under the message; it runs again after ``delay_ms``, not counted as an
        attempt (``message.dependency_failures`` failures in a row so far)."""

    def on_dead_letter(self, broker: Broker, record: Record, message: Message | None, exception: BaseException) -> None:
        """The record was written to the dead-letter topic (``message`` is None if undecodable)."""

    def after_process_boot(self, broker: Broker) -> None:
        """A worker process (``worker.py run``) built its broker and imported its actors."""

    def before_worker_boot(self, broker: Broker, worker: Worker) -> None: ...

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None: ...

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None: ...

    def after_worker_shutdown(self, broker: Broker, worker: Worker) -> None: ...

    def after_consumer_thread_boot(self, broker: Broker, thread: threading.Thread) -> None: ...

    def before_consumer_thread_shutdown(self, broker: Broker, thread: threading.Thread) -> None: ...

    def after_worker_thread_boot(self, broker: Broker, thread: threading.Thread) -> None: ...

    def before_worker_thread_shutdown(self, broker: Broker, thread: threading.Thread) -> None: ...
