"""Running one delivery of a record: decode, middleware hooks, the actor, and what follows.

What follows a run is an :mod:`~broker.worker.outcome`: the record is done (the actor succeeded
or was skipped, the message went back to the delay topics, or its dead letter was
acknowledged), to be retried in some milliseconds, or abandoned. The runner decides it; the
shared state (:meth:`~broker.worker.state.WorkerState.settle`) records it. Retries and dead
letters follow the middleware's word (``Retries`` sets ``retry_delay_ms`` or fails the message);
a dependency's failure (:mod:`broker.transient`) is not the message's and is waited out in place,
with backoff, for as long as it takes, without counting an attempt.

Nothing here may stop the worker on a record: a failure outside the actor (the worker's own, or
a middleware's) dead-letters the record with reason ``worker_error``, since a restart would only
fetch the same record and fail again.
"""

from __future__ import annotations

import inspect
import logging
import time
from typing import Any

from broker import transient
from broker.actor import Actor
from broker.broker import Broker
from broker.consumer import Record
from broker.dead_letters import REASON_FAILED, REASON_UNDECODABLE, REASON_UNKNOWN_ACTOR, REASON_WORKER_ERROR
from broker.delays import now_ms
from broker.errors import ActorNotFound, BrokerUnavailable, DecodeError, Interrupt
from broker.message import Message
from broker.middleware.middleware import SkipMessage
from broker.proxy import MessageProxy
from broker.worker.outcome import ABANDONED, DONE, Abandoned, Done, Outcome, RetryIn
from broker.worker.state import Work, WorkerState, emit_logged

log = logging.getLogger("broker.worker")  # the package's logger (the name its records always had)


class Runner:
    """Runs deliveries for the worker threads (:meth:`process`); it keeps no state of its own.

    Parameters:
      broker, shared: the worker's broker and shared state.
      dependency_min_backoff_ms, dependency_max_backoff_ms: the wait before a message runs again
        after a dependency failed under it (doubling from the first, capped at the second, jittered).
    """

    def __init__(
        self, broker: Broker, shared: WorkerState, *, dependency_min_backoff_ms: int, dependency_max_backoff_ms: int
    ) -> None:
        self.broker = broker
        self.shared = shared
        self.dependency_min_backoff_ms = dependency_min_backoff_ms
        self.dependency_max_backoff_ms = dependency_max_backoff_ms

    def process(self, work: Work) -> Work | None:
        """Run one delivery; return the next record of the same key, if it may run now."""
        shared = self.shared
        if not shared.begin([work]):
            return None
        outcome: Outcome = ABANDONED
        try:
            outcome = self._run(work)
        except Exception as exc:
            outcome = self._after_worker_error(work, exc)
        finally:
            with shared.changed:
                following = shared.settle(work, outcome)
                shared.changed.notify_all()
        return following

    def _after_worker_error(self, work: Work, exc: Exception) -> Done | Abandoned:
        """The worker itself (or a middleware) failed on this record, outside the actor.

        That must not stop the worker: a restart would fetch the same record and fail again, for
        ever. So the record is dead-lettered (reason ``worker_error``, with the traceback) and the
        partition moves on. Only if even that fails is the worker stopped, leaving the record
        uncommitted (neither processed nor dead-lettered: the offset must not move past it).
        """
        shared = self.shared
        if shared.stop_requested.is_set():
            return ABANDONED  # shutting down: redelivered later
        record = work.record
        log.exception(
            "the worker failed on a record; dead-lettering it",
            extra={"topic": record.topic, "partition": record.partition, "offset": record.offset},
        )
        message = work.proxy.message if work.proxy is not None else None
        attempts = work.proxy.attempt if work.proxy is not None else 0
        try:
            self._dead_letter(record, exc, message, attempts=attempts, reason=REASON_WORKER_ERROR)
            return DONE
        except Exception as error:
            if not shared.stop_requested.is_set():
                log.exception("could not dead-letter a record; stopping the worker")
                shared.failure = error
                shared.stop_requested.set()
            return ABANDONED

    def _run(self, work: Work) -> Outcome:
        """Run the actor once: done (succeeded, or dead-lettered and acknowledged), or again later."""
        broker, record = self.broker, work.record
        if work.proxy is None:
            try:
                message = Message.decode(record.value)
                broker.get_actor(message.actor_name)
            except DecodeError as exc:
                self._dead_letter(record, exc, None, attempts=0, reason=REASON_UNDECODABLE)
                return DONE
            except ActorNotFound as exc:
                self._dead_letter(record, exc, message, attempts=0, reason=REASON_UNKNOWN_ACTOR)
                return DONE
            work.deliver(message)
        proxy = work.proxy
        assert proxy is not None
        actor = broker.get_actor(proxy.actor_name)
        message = proxy.message
        if early(broker, message):
            return self._delay_again(proxy)
        result: Any = None
        exception: BaseException | None = None
        try:
            broker.emit_before("process_message", proxy)
        except SkipMessage as skip:
            proxy.exception = skip
            return self._skipped(proxy)
        except (Exception, Interrupt) as exc:
            # a before-hook failed (a dependency it needs, a time limit that fired already): this
            # attempt failed, as if the actor had raised it, so a dependency outage is waited out
            # and anything else retried; the actor does not run
            exception = exc
        if exception is None:
            try:
                result = actor.fn(*message.args, **message.kwargs)
                if inspect.isawaitable(result):
                    _refuse_awaitable(result, message.actor_name)
            except (Exception, Interrupt) as exc:  # an Interrupt (time limit) is a failure like any other
                exception = exc
        proxy.exception = exception
        proxy.transient = exception is not None and _is_transient(actor.options, exception)
        try:
            broker.emit_after("process_message", proxy, result=result, exception=exception)
        except Interrupt:
            pass  # the limit fired after the actor returned; its outcome stands
        except Exception as exc:
            if exception is not None or not transient.is_transient(exc):
                raise  # a middleware's own failure: the worker dead-letters the record
            # a dependency failed while finishing a success (storing its result, sending the next
            # step of a pipeline): run the message again once it is back, as for the actor itself
            exception, proxy.transient = exc, True
        if exception is None:
            if proxy.dependency_failures:
                log.info("the dependency is back", extra={"message_id": message.message_id})
            if result is not None:
                self._warn_discarded(actor, proxy)
            self._hook("before", "ack", proxy)
            self._hook("after", "ack", proxy)  # committable now; the commit itself is batched
            return DONE
        if proxy.transient:
            proxy.dependency_failures += 1
            delay = transient.backoff_ms(
                proxy.dependency_failures, self.dependency_min_backoff_ms, self.dependency_max_backoff_ms
            )
            broker.emit("on_dependency_wait", proxy, delay)
            proxy.exception = None
            return RetryIn(delay)
        return self._after_failure(actor, proxy, exception)

    def _after_failure(self, actor: Actor[..., Any], proxy: MessageProxy, exception: BaseException) -> Outcome:
        """The message itself failed: retry it as the middleware said, or dead-letter it."""
        message = proxy.message
        delay = proxy.retry_delay_ms
        if delay is not None and not proxy.failed:
            self.broker.emit("on_retry", proxy, delay)
            if not actor.options.get("ordered", True) and self._retry_later(proxy, delay):
                return DONE  # the retry is a delayed message now: the key moves on
            proxy.attempt += 1
            proxy.retry_delay_ms = None
            proxy.exception = None
            # as Dramatiq's retried messages say: retries so far, and when the retry was scheduled
            # (only the delivery's copy: the record, its dead letter and its id are unchanged)
            proxy._message = message.copy(
                options={**message.options, "retries": proxy.attempt - 1, "requeue_timestamp": now_ms()}
            )
            return RetryIn(delay)
        self._fail(proxy, exception)
        return DONE

    def _fail(self, proxy: MessageProxy, exception: BaseException) -> None:
        """Dead-letter a failed message, between its nack hooks."""
        self._hook("before", "nack", proxy)
        self._dead_letter(proxy.record, exception, proxy.message, attempts=proxy.attempt, reason=REASON_FAILED)
        self._hook("after", "nack", proxy)

    def _warn_discarded(self, actor: Actor[..., Any], proxy: MessageProxy) -> None:
        """An actor returned a value nobody will read (as Dramatiq warns)."""
        if proxy.options.get("pipe_target") is not None:
            return
        from broker.results.middleware import Results

        results = [m for m in self.broker.middleware if isinstance(m, Results)]
        if not results:
            log.warning(
                "Actor '%s' returned a value that is not None, and you haven't added the Results middleware to "
                "the broker, so the value has been discarded. Consider adding the Results middleware to your "
                "broker or piping the result into another actor.",
                actor.actor_name,
            )
        elif not actor.options.get("store_results", results[0].store_results):
            log.warning(
                "Actor '%s' returned a value that is not None, but you haven't set its `store_results' option "
                "to `True', so the value has been discarded.",
                actor.actor_name,
            )

    def _skipped(self, proxy: MessageProxy) -> Done:
        """A middleware raised :class:`SkipMessage` before the actor ran: the message is finished
        without running, or dead-lettered if that middleware failed it (``AgeLimit``)."""
        log.warning("message skipped", extra={"message_id": proxy.message_id, "actor": proxy.actor_name})
        self.broker.emit_after("skip_message", proxy)
        if proxy.failed:
            error = proxy.exception or SkipMessage("skipped by a middleware")
            proxy.exception = None
            self._fail(proxy, error)
        else:
            proxy.exception = None
            self._hook("before", "ack", proxy)
            self._hook("after", "ack", proxy)
        return DONE

    def _hook(self, when: str, hook: str, proxy: MessageProxy) -> None:
        """An outcome hook (ack, nack, delay_message): the outcome is decided, so a failing hook is
        logged and changes nothing."""
        emit_logged(self.broker, when, hook, proxy)

    def _delay_again(self, proxy: MessageProxy) -> Outcome:
        """Send an early message back to the delay topics and finish its record; if Kafka does not
        take it, wait here (in order) and try again."""
        self._hook("before", "delay_message", proxy)
        try:
            self.broker.enqueue(proxy.message)
        except (BrokerUnavailable, ValueError) as exc:
            log.warning("could not re-delay an early message; waiting", extra={"error": str(exc)})
            return RetryIn(max(1, proxy.message.options["eta"] - now_ms()))
        return DONE

    def _retry_later(self, proxy: MessageProxy, delay_ms: int) -> bool:
        """``ordered=False``: send the retry as a delayed message (same id, its attempt count in
        the ``retries`` option) so its partition and key move on. False if Kafka did not take it:
        the retry then happens in place, as for an ordered actor."""
        message = proxy.message
        retry = message.copy(options={**message.options, "retries": proxy.attempt, "requeue_timestamp": now_ms()})
        self._hook("before", "delay_message", proxy)
        try:
            self.broker.enqueue(retry, delay=delay_ms)
        except (BrokerUnavailable, ValueError) as exc:
            log.warning("could not send a retry to the delay topics; retrying in place", extra={"error": str(exc)})
            return False
        return True

    def _dead_letter(
        self, record: Record, exc: BaseException, message: Message | None, *, attempts: int, reason: str
    ) -> None:
        """Write the dead letter; if the broker cannot take it, keep trying (the offset must not move
        past a record that is neither processed nor dead-lettered) unless we are shutting down."""
        backoff = 0.5
        while True:
            try:
                self.broker.dead_letter(record, exc, message=message, attempts=attempts, reason=reason)
                return
            except BrokerUnavailable as error:
                if self.shared.stop_requested.is_set():
                    raise
                log.warning("dead letter not acknowledged; retrying", extra={"error": str(error)})
                time.sleep(backoff)
                backoff = min(backoff * 2, 10)


def early(broker: Broker, message: Message) -> bool:
    """Whether the message arrived before its eta (sent there directly, or forwarded by a host
    whose clock runs ahead): it must not run yet, and must not hold its key."""
    eta = message.options.get("eta")
    if eta is not None and (isinstance(eta, bool) or not isinstance(eta, int)):
        # written by another producer (our senders refuse it): run it now, as Dramatiq does
        log.warning("Invalid eta value for message %s: %r (not integer epoch ms); running it now", message, eta)
        return False
    return bool(broker.delay_prefix) and eta is not None and eta > now_ms()


def _is_transient(options: dict[str, Any], exception: BaseException) -> bool:
    """A dependency's failure (wait for it), not the message's; ``throws`` wins over it."""
    throws = options.get("throws")
    if throws and isinstance(exception, throws):
        return False
    return transient.is_transient(exception, options.get("transient") or ())


def _refuse_awaitable(result: object, actor_name: str) -> None:
    """An actor returned a coroutine (a plain function wrapping an ``async def``): its body has not
    run, so the message must fail, not be committed as done."""
    if inspect.iscoroutine(result):
        result.close()  # never awaited, on purpose: no warning
    raise TypeError(
        f"actor {actor_name!r} returned an awaitable instead of running: declare it with async def "
        "(and the AsyncIO middleware) so the worker awaits it"
    )
