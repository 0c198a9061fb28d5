"""The worker: consumes the actors' topics in a consumer group and runs the actors in threads.

One consumer thread owns the broker's consumer (Kafka consumers are not thread-safe): it polls,
hands records to worker threads, schedules retries and commits. Worker threads run actors.

What it guarantees (order per key, commits that never pass unfinished work, no record that
stops it, a dependency outage that is not poison, liveness in its group, a draining shutdown) is
written once, in ``docs/design.md`` (its "Guarantees"); the code that keeps each is named there.

The modules, one job each (Dramatiq's ``Worker``, ``ConsumerThread`` and ``WorkerThread``, with
the shared bookkeeping and the outcome of a run made explicit):

* :mod:`~broker.worker.lifecycle`: the :class:`Worker` (start, stop, join, status, the rebalance listener);
* :mod:`~broker.worker.consumer_loop`: the consumer thread (fetch, hand out by key, commit, drain)
  and the thread that hands out retries when they are due;
* :mod:`~broker.worker.work_loop`: the worker threads' loop;
* :mod:`~broker.worker.runner`: one delivery (middleware hooks, the actor, retries, dead letters);
* :mod:`~broker.worker.batches`: the ``@actor.batched`` path;
* :mod:`~broker.worker.state`: what the threads share, under one lock;
* :mod:`~broker.worker.outcome`: what became of a run (``Done``, ``RetryIn(ms)``, ``Abandoned``).

Its log records all come from the logger ``broker.worker``.
"""

from __future__ import annotations

from broker.worker.lifecycle import DEFAULT_GROUP, Worker

# The default of ``max_buffered_per_partition``, under Dramatiq's name for its prefetch (read when
# a worker is built, so patching it changes the workers built afterwards, as in Dramatiq).
QUEUE_PREFETCH = 2000

__all__ = ["DEFAULT_GROUP", "QUEUE_PREFETCH", "Worker"]
