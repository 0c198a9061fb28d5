"""Base class for middleware: every hook is a no-op, override the ones you need.

Hooks run in the thread that triggers them: enqueue hooks in the sender's thread, process hooks
in a worker thread, boot/shutdown hooks in the thread that starts or stops the worker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from broker.broker import Broker
    from broker.consumer import Record
    from broker.message import Message
    from broker.proxy import MessageProxy
    from broker.worker import Worker


class Middleware:
    #: Actor options this middleware understands (validated at decoration time).
    actor_options: frozenset[str] = frozenset()
    #: The subset that may also be set per message (``send_with_options``), overriding the actor's.
    #: Only JSON values travel in a message: options holding callables or types stay actor-only.
    message_options: frozenset[str] = frozenset()

    def validate_message_option(self, name: str, value: object) -> None:
        """Raise ``ValueError`` if ``value`` is not acceptable for message option ``name``."""

    def before_enqueue(self, broker: Broker, message: Message) -> None: ...

    def after_enqueue(self, broker: Broker, message: Message) -> None: ...

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

    def before_worker_boot(self, broker: Broker, worker: Worker) -> None: ...

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None: ...

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None: ...

    def after_worker_shutdown(self, broker: Broker, worker: Worker) -> None: ...
