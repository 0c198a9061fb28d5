"""Failures of a dependency, told apart from failures of the message.

When PostgreSQL, Redis or Kafka is down or too slow, the message is fine and the world is not:
counting such failures toward ``max_retries`` would dead-letter good messages during any outage
longer than the retry schedule (2 + 4 + 8 s by default). So the worker treats them apart: it
retries the same record, in order, with capped exponential backoff and jitter, for as long as it
takes, and none of it counts as an attempt.

What counts, by default: connection failures and timeouts of the usual clients, matched by
class name so this library imports none of them (a client's exception exists only if its module
was loaded), plus anything an actor lists in its ``transient`` option:

* ``builtins.ConnectionError``, ``builtins.TimeoutError`` (and their subclasses);
* ``broker.errors.BrokerUnavailable`` (Kafka did not acknowledge a send in time);
* ``broker.errors.RateLimitExceeded`` (a rate limiter of ``broker.rate_limits`` said "not now");
* psycopg2 ``OperationalError`` (connection refused or lost, serialization failure, deadlock,
  statement or lock timeout) and ``InterfaceError`` (connection already closed);
* SQLAlchemy ``OperationalError``, ``InterfaceError``, ``TimeoutError`` (pool exhausted), and any
  ``DBAPIError`` whose connection was invalidated;
* redis-py ``ConnectionError`` and ``TimeoutError``.

Data errors (a value PostgreSQL cannot store, a constraint violation) are *not* transient: they
fail the same way every time, so they take the ordinary retries and then the dead-letter topic.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

DEFAULT_TRANSIENT = frozenset(
    {
        "builtins.ConnectionError",
        "builtins.TimeoutError",
        "broker.errors.BrokerUnavailable",
        "broker.errors.RateLimitExceeded",
        "psycopg2.OperationalError",
        "psycopg2.InterfaceError",
        "sqlalchemy.exc.OperationalError",
        "sqlalchemy.exc.InterfaceError",
        "sqlalchemy.exc.TimeoutError",
        "redis.exceptions.ConnectionError",
        "redis.exceptions.TimeoutError",
    }
)
DEFAULT_MIN_BACKOFF_MS = 500
DEFAULT_MAX_BACKOFF_MS = 30_000


def is_transient(exception: BaseException, extra: Sequence[type[BaseException]] = ()) -> bool:
    """True if ``exception`` is a dependency's failure (see the module docstring), or one of ``extra``."""
    if extra and isinstance(exception, tuple(extra)):
        return True
    if getattr(exception, "connection_invalidated", False):  # SQLAlchemy: the connection died under it
        return True
    return any(f"{cls.__module__}.{cls.__qualname__}" in DEFAULT_TRANSIENT for cls in type(exception).__mro__)


def backoff_ms(
    failures: int,
    min_backoff_ms: int = DEFAULT_MIN_BACKOFF_MS,
    max_backoff_ms: int = DEFAULT_MAX_BACKOFF_MS,
    rng: random.Random | None = None,
) -> int:
    """The wait before trying again after ``failures`` (1-based) dependency failures in a row.

    Exponential from ``min_backoff_ms``, capped at ``max_backoff_ms``, with "equal jitter" (half
    fixed, half random), so many keys waiting on one database do not all knock at once.
    """
    ceiling: int = min(max_backoff_ms, min_backoff_ms * 2 ** min(failures - 1, 30))
    return ceiling // 2 + (rng or random).randint(0, ceiling - ceiling // 2)
