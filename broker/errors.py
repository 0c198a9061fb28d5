"""The broker's exception hierarchy. Client-library errors are translated where they enter."""


class BrokerError(Exception):
    """Base class for every error this package raises."""


class BrokerUnavailable(BrokerError):
    """The broker did not acknowledge a message in time (or cannot be reached).

    The message may or may not have been stored; callers should treat it as not accepted
    (the API answers 503 with ``Retry-After``).
    """


class MessageTooLarge(BrokerError):
    """The message is larger than the broker accepts. The message's fault: it will never be sent
    as it is (the API answers 413); other sends are unaffected."""


class ActorNotFound(BrokerError):
    """A message names an actor that is not registered on this broker."""


class DecodeError(BrokerError):
    """A message could not be decoded (not JSON, wrong format version, missing fields)."""


class EncodeError(BrokerError):
    """A message's arguments or headers cannot be encoded as JSON."""


class DuplicateActor(BrokerError, ValueError):
    """Two actors were declared with the same name on one broker (a ``ValueError``, as in Dramatiq)."""


class QueueJoinTimeout(BrokerError, TimeoutError):
    """``StubBroker.join`` gave up before the topic was processed (Dramatiq's name; also a
    ``TimeoutError``)."""


class NoBrokerConfigured(BrokerError):
    """``get_broker()`` was called before ``set_broker()``; there is no silent default."""


class RateLimitExceeded(BrokerError):
    """A rate limiter (``broker.rate_limits``) had no slot. Raised inside an actor it means "not
    now": the worker runs the message again later, with backoff, without counting an attempt."""


class Interrupt(BaseException):
    """Raised asynchronously inside a running actor (as Dramatiq's interrupts are).

    A ``BaseException``, not an ``Exception``: a task's own ``except Exception`` must not swallow
    it, or the limit would stop nothing. The worker catches it and treats it as a failure.
    """


class TimeLimitExceeded(Interrupt):
    """Raised inside an actor that ran longer than its ``time_limit``."""


class QueueNotFound(BrokerError):
    """A topic no actor declares and no message was ever written to (Dramatiq's name)."""


class Retry(BrokerError):
    """Raised by an actor to be retried (counted as an attempt) without an error being logged;
    ``delay`` (ms) replaces the backoff for this retry (Dramatiq's)."""

    def __init__(self, message: str = "", delay: int | None = None) -> None:
        super().__init__(message)
        self.delay = delay
