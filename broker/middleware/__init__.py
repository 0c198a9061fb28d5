"""Built-in middleware. ``default_middleware`` is what every broker gets unless told otherwise."""

from broker.middleware.asyncio import AsyncIO
from broker.middleware.composition import GroupCallbacks, Pipelines
from broker.middleware.logging import Logging
from broker.middleware.middleware import Middleware
from broker.middleware.prometheus import Prometheus
from broker.middleware.retries import Retries
from broker.middleware.time_limit import TimeLimit

# Order matters: after-hooks run in reverse, so TimeLimit clears its deadline first.
default_middleware = [Logging, Pipelines, Retries, TimeLimit]

__all__ = [
    "AsyncIO",
    "GroupCallbacks",
    "Logging",
    "Middleware",
    "Pipelines",
    "Prometheus",
    "Retries",
    "TimeLimit",
    "default_middleware",
]
