"""The worker's view of one delivery: the message plus what should happen to it next."""

from __future__ import annotations

from typing import Any

from broker.consumer import Record
from broker.message import Message


class MessageProxy:
    """Wraps a :class:`Message` during processing (as Dramatiq's ``MessageProxy`` does).

    Attribute access falls through to the message (``proxy.actor_name``, ``proxy.options``).
    ``attempt`` counts deliveries in this worker, starting at 1. Middleware decide the outcome
    of a failure by calling :meth:`retry` or :meth:`fail`; a failure nobody decides is dead-lettered.
    A failure of a dependency (``transient``, see :mod:`broker.transient`) is the worker's to
    handle: it waits and tries again without counting an attempt (``dependency_failures`` counts
    those in a row).
    """

    __slots__ = (
        "_message",
        "attempt",
        "dependency_failures",
        "exception",
        "failed",
        "record",
        "retry_delay_ms",
        "transient",
    )

    def __init__(self, message: Message, record: Record, attempt: int = 1) -> None:
        self._message = message
        self.record = record
        self.attempt = attempt
        self.exception: BaseException | None = None
        self.retry_delay_ms: int | None = None
        self.failed = False
        self.transient = False  # the current failure is a dependency's, not the message's
        self.dependency_failures = 0

    @property
    def message(self) -> Message:
        return self._message

    def retry(self, delay_ms: int) -> None:
        self.retry_delay_ms = delay_ms

    def fail(self) -> None:
        self.failed = True
        self.retry_delay_ms = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._message, name)

    def __str__(self) -> str:
        return str(self._message)

    def __repr__(self) -> str:
        return f"MessageProxy({self._message!r}, attempt={self.attempt})"
