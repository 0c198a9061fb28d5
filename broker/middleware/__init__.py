"""Built-in middleware (Dramatiq's names). ``default_middleware`` is what every broker gets unless told otherwise.

:class:`Prometheus` is loaded when first named, so ``import broker`` does not import
prometheus_client.
"""

from typing import TYPE_CHECKING

from broker.errors import TimeLimitExceeded
from broker.lazy import lazy_attributes
from broker.middleware.age_limit import AgeLimit
from broker.middleware.asyncio import AsyncIO
from broker.middleware.callbacks import Callbacks
from broker.middleware.composition import GroupCallbacks, Pipelines
from broker.middleware.current_message import CurrentMessage
from broker.middleware.logging import Logging
from broker.middleware.middleware import Middleware, MiddlewareError, SkipMessage
from broker.middleware.retries import Retries
from broker.middleware.shutdown import Shutdown, ShutdownNotifications
from broker.middleware.threading import Interrupt, raise_thread_exception
from broker.middleware.time_limit import TimeLimit

if TYPE_CHECKING:
    from broker.middleware.prometheus import Prometheus

# Order matters: after-hooks run in reverse, so TimeLimit clears its deadline first and Retries
# decides retry or failure before Callbacks and Pipelines look at the outcome.
# AsyncIO is in the defaults (Dramatiq's are not): async def actors run under worker.py as they are;
# a worker's loop thread is shared by every broker of the process, so adding it again is harmless.
default_middleware: list[type[Middleware]] = [
    AgeLimit,
    AsyncIO,
    ShutdownNotifications,
    Callbacks,
    Pipelines,
    Retries,
    Logging,
    TimeLimit,
]

__all__ = [
    "AgeLimit",
    "AsyncIO",
    "Callbacks",
    "CurrentMessage",
    "GroupCallbacks",
    "Interrupt",
    "Logging",
    "Middleware",
    "MiddlewareError",
    "Pipelines",
    "Prometheus",
    "Retries",
    "Shutdown",
    "ShutdownNotifications",
    "SkipMessage",
    "TimeLimit",
    "TimeLimitExceeded",
    "default_middleware",
    "raise_thread_exception",
]

__getattr__ = lazy_attributes(__name__, {"Prometheus": "broker.middleware.prometheus"})
