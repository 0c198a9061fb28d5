"""Pipelines and groups, with Dramatiq's names.

    from broker import group, pipeline

    pipe = pipeline([fetch.message(url), parse.message(), store.message_with_options(pipe_ignore=True)])
    pipe.run()
    pipe.get_result(block=True, timeout=10_000)     # the last step's result (Results middleware)

    jobs = group([resize.message(i) for i in images])
    jobs.add_completion_callback(notify.message("all resized"))   # GroupCallbacks middleware
    jobs.run()
    list(jobs.get_results(block=True, timeout=10_000))            # in the members' order

How they work on Kafka: each step of a pipeline carries the next one, whole, in its
``pipe_target`` option; when a step succeeds the ``Pipelines`` middleware sends the next,
with the step's result appended to its arguments (unless the next has ``pipe_ignore``). Nothing
waits anywhere: no partition is held between steps. A group's members run independently; each
that succeeds arrives at a :class:`~broker.rate_limits.Barrier`, and the one that completes it
sends the completion callbacks (the ``GroupCallbacks`` middleware, in
:mod:`broker.middleware.composition`). A member that fails for good never arrives: the callbacks
do not run (as in Dramatiq). Steps and callbacks are ordinary messages, delivered at least once; a
redelivered step sends its next step again with the same message id.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast

from broker.broker import Broker, get_broker
from broker.message import Message
from broker.middleware.composition import GROUP_INFO, PIPE_TARGET, GroupCallbacks
from broker.results.errors import ResultMissing

if TYPE_CHECKING:
    from broker.results.backend import ResultBackend


def _without(message: Message, option: str) -> Message:
    return message.copy(options={k: v for k, v in message.options.items() if k != option})


def _link(steps: list[Message]) -> list[Message]:
    """Each step with the next one (itself linked) in its ``pipe_target`` option."""
    linked = [steps[-1]]
    for step in reversed(steps[:-1]):
        linked.insert(0, step.copy(options={**step.options, PIPE_TARGET: linked[0].asdict()}))
    return linked


def _remaining_ms(deadline: float | None) -> int | None:
    return None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))


def _results_backend(broker: Broker, backend: ResultBackend | None) -> ResultBackend:
    """``backend``, else that of the broker's ``Results`` middleware."""
    from broker.results.middleware import results_backend

    return backend if backend is not None else results_backend(broker)


class pipeline:
    """Messages run one after another, each result passed to the next as its last argument.

    ``children`` are messages or pipelines (flattened). Parameters: ``broker`` (default: the
    global one).
    """

    def __init__(self, children: Iterable[Message | pipeline], *, broker: Broker | None = None) -> None:
        self.broker = broker or get_broker()
        steps: list[Message] = []
        for child in children:
            steps.extend(child.steps if isinstance(child, pipeline) else [child])
        if not steps:
            raise ValueError("a pipeline needs at least one message")
        self.steps: list[Message] = [_without(step, PIPE_TARGET) for step in steps]
        self.messages = _link(self.steps)

    def __len__(self) -> int:
        return len(self.messages)

    def __or__(self, other: Message | pipeline) -> pipeline:
        return pipeline([self, other], broker=self.broker)

    def _with_last_option(self, name: str, value: Any) -> pipeline:
        last = self.steps[-1]
        return pipeline([*self.steps[:-1], last.copy(options={**last.options, name: value})], broker=self.broker)

    def run(self, *, delay: int | dt.timedelta | None = None) -> pipeline:
        """Send the first step (after ``delay`` ms, else after its own ``delay`` option); returns
        once Kafka acknowledged it. Each later step waits its own ``delay`` option."""
        first = self.messages[0]
        self.broker.enqueue(first, delay=delay if delay is not None else first.options.get("delay"))
        return self

    def get_result(self, *, block: bool = False, timeout: int | None = None, backend: Any = None) -> Any:
        """The last step's result (see :meth:`Message.get_result`)."""
        backend = _results_backend(self.broker, backend)
        return self.messages[-1].get_result(backend=backend, block=block, timeout=timeout)

    @property
    def completed_count(self) -> int:
        """How many steps have finished, from the first (their results are stored)."""
        backend = _results_backend(self.broker, None)
        for count, message in enumerate(self.messages):
            try:
                message.get_result(backend=backend)
            except ResultMissing:
                return count
        return len(self.messages)

    @property
    def completed(self) -> bool:
        """Whether the last step has finished."""
        return self.completed_count == len(self.messages)

    def get_results(self, *, block: bool = False, timeout: int | None = None, backend: Any = None) -> Iterator[Any]:
        """Every step's result, in order, within one overall ``timeout`` (ms)."""
        backend = _results_backend(self.broker, backend)
        deadline = None if timeout is None else time.monotonic() + timeout / 1000
        for message in self.messages:
            yield message.get_result(backend=backend, block=block, timeout=_remaining_ms(deadline))


class group:
    """Messages (or pipelines) run in parallel; optional callbacks run once all have succeeded.

    Parameters: ``broker`` (default: the global one).
    """

    def __init__(self, children: Iterable[Message | pipeline | group], *, broker: Broker | None = None) -> None:
        self.broker = broker or get_broker()
        self.children: list[Message | pipeline | group] = list(children)
        self.group_id = uuid.uuid4().hex
        self.callbacks: list[Message] = []

    def __len__(self) -> int:
        return len(self.children)

    def add_completion_callback(self, message: Message) -> None:
        """Send ``message`` once every member has succeeded (needs the :class:`GroupCallbacks`
        middleware on the broker)."""
        self.callbacks.append(message)

    def run(self, *, delay: int | dt.timedelta | None = None) -> group:
        """Send every member (after ``delay`` ms); returns once Kafka acknowledged them all."""
        if self.callbacks:
            if any(isinstance(child, group) for child in self.children):
                raise ValueError("a group with completion callbacks cannot hold a group: flatten it")
            if not any(isinstance(m, GroupCallbacks) for m in self.broker.middleware):
                raise RuntimeError("completion callbacks need the GroupCallbacks middleware on the broker")
            info = {"group_id": self.group_id, "parties": len(self.children)}
            info["callbacks"] = [m.asdict() for m in self.callbacks]
            flat = cast("list[Message | pipeline]", self.children)  # no group among them (checked above)
            self.children = [
                child._with_last_option(GROUP_INFO, info)
                if isinstance(child, pipeline)
                else child.copy(options={**child.options, GROUP_INFO: info})
                for child in flat
            ]
        for child in self.children:
            if isinstance(child, pipeline | group):
                child.run(delay=delay)
            else:
                self.broker.enqueue(child, delay=delay)
        return self

    def get_results(self, *, block: bool = False, timeout: int | None = None, backend: Any = None) -> Iterator[Any]:
        """Each member's result (a pipeline's: its last step's), in the members' order, within one
        overall ``timeout`` (ms)."""
        backend = _results_backend(self.broker, backend)
        deadline = None if timeout is None else time.monotonic() + timeout / 1000
        for child in self.children:
            remaining = _remaining_ms(deadline)
            if isinstance(child, group):  # an inner group's results, as a list (Dramatiq's)
                yield list(child.get_results(backend=backend, block=block, timeout=remaining))
            else:
                yield child.get_result(backend=backend, block=block, timeout=remaining)

    @property
    def completed_count(self) -> int:
        """How many members have finished (a pipeline once its last step has)."""
        backend = _results_backend(self.broker, None)
        count = 0
        for child in self.children:
            if isinstance(child, pipeline | group):
                count += child.completed
                continue
            try:
                child.get_result(backend=backend)
                count += 1
            except ResultMissing:
                pass
        return count

    @property
    def completed(self) -> bool:
        """Whether every member has finished."""
        return self.completed_count == len(self.children)

    def wait(self, *, timeout: int | None = None, backend: Any = None) -> None:
        """Block until every member has a result; ``ResultTimeout`` after ``timeout`` ms."""
        for _ in self.get_results(block=True, timeout=timeout, backend=backend):
            pass
