"""The worker: consumes the actors' topics in a consumer group and runs the actors in threads.

One consumer thread owns the broker's consumer (Kafka consumers are not thread-safe): it polls,
hands records to worker threads, schedules retries and commits. Worker threads run actors.

Guarantees:

* **Order per key.** Records with the same key run one at a time, in offset order, including
  their retries; records with other keys (or other partitions) run in parallel, so one
  message's backoff stalls only its own key.
* **Commit discipline.** A partition's committed offset never passes a record that is still
  queued, running, waiting for a retry, or whose dead letter has not been acknowledged.
  Commits are batched (every ``commit_interval_ms`` and on revocation/shutdown).
* **No record stops the worker.** A record that is not a message (no value, not JSON, another
  format version, malformed fields) or names an unknown actor is dead-lettered at once; a
  failure of the worker itself or of a middleware on a record dead-letters that record
  (reason ``worker_error``). The ``dlq.reason`` header says which.
* **A dependency outage is not poison.** When a failure is a dependency's (PostgreSQL, Redis,
  Kafka down or timing out: :mod:`broker.transient`), the record is tried again in place, in
  order, with capped, jittered exponential backoff, for as long as it takes; it never counts
  toward ``max_retries`` and never reaches the dead-letter topic. The member stays in its group.
* **Liveness.** The consumer thread keeps polling during long work and backoff (partitions
  whose buffer is full are paused, not starved), so the member never times out of its group.
* **Shutdown.** :meth:`Worker.stop` stops fetching, lets running messages finish within
  ``shutdown_timeout_ms``, commits what is done and leaves the group. Work that did not start
  is left uncommitted and is redelivered, to this group's next owner of the partition.

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
