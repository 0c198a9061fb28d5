"""Callbacks: ``on_success`` / ``on_failure`` actors (Dramatiq's).

``on_success`` gets ``(message.asdict(), result)`` once the message succeeded; ``on_failure``
gets ``(message.asdict(), {"type": ..., "message": ...})`` after each failed attempt, as in
Dramatiq (``options["retries"]`` in the message counts the failures so far: the callback can
tell the last one). A dependency's failure is not an attempt and calls nothing. Each callback is
an ordinary message, sent at least once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from broker.middleware.middleware import Middleware

if TYPE_CHECKING:
    from broker.broker import Broker
    from broker.proxy import MessageProxy


class Callbacks(Middleware):
    actor_options = frozenset({"on_success", "on_failure"})
    message_options = frozenset({"on_success", "on_failure"})

    def validate_message_option(self, name: str, value: object) -> None:
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name} value must be an Actor")

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        actor = broker.get_actor(message.actor_name)
        if exception is None:
            name = message.options.get("on_success") or actor.options.get("on_success")
            if name:
                broker.get_actor(_name(name)).send(message.asdict(), result)
        elif not message.transient:
            name = message.options.get("on_failure") or actor.options.get("on_failure")
            if name:
                error = {"type": type(exception).__name__, "message": str(exception)}
                data = message.asdict()
                data["options"] = {**data["options"], "retries": message.attempt}
                broker.get_actor(_name(name)).send(data, error)


def _name(target: Any) -> str:
    return target if isinstance(target, str) else target.actor_name
