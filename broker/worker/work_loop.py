"""The worker threads' loop: take the next ready record, run it (or a batch), go on with its key.

Each worker thread takes the lowest entry of the ready queue, so the records start in priority,
then arrival, order. After a record is done the thread runs the next record of the same key
itself, without queueing it again, so a busy key keeps its thread and its order. While the
worker is paused a thread takes nothing, and an entry it took just as the pause began goes back
to its place in the queue, so the ready records keep their order for the resume. A thread ends
when it takes the stop entry the consumer thread queues, ahead of any work, when it ends.
"""

from __future__ import annotations

import threading

from broker.broker import Broker
from broker.worker.batches import Batches
from broker.worker.runner import Runner
from broker.worker.state import Stop, Work, WorkerState, emit_logged


class WorkLoop:
    """The loop every worker thread runs (:meth:`run`)."""

    def __init__(self, broker: Broker, shared: WorkerState, runner: Runner, batches: Batches) -> None:
        self.broker = broker
        self.shared = shared
        self.runner = runner
        self.batches = batches

    def run(self) -> None:
        """A worker thread's body, between its boot and shutdown hooks."""
        emit_logged(self.broker, "after", "worker_thread_boot", threading.current_thread())
        try:
            self._work()
        finally:
            emit_logged(self.broker, "before", "worker_thread_shutdown", threading.current_thread())

    def _work(self) -> None:
        shared = self.shared
        while True:
            while not shared.unpaused.wait(0.1) and not shared.stop_requested.is_set():
                pass  # paused: take nothing, so the ready records keep their order for the resume
            entry = shared.ready.take()
            taken = entry[2]
            if isinstance(taken, Stop):
                return
            if not shared.unpaused.is_set() and not shared.stop_requested.is_set():
                shared.ready.give_back(entry)  # paused while this thread waited: back in its place
                continue
            batch, alone = self.batches.gather(taken)
            if batch:
                alone = self.batches.run(batch) + alone
            for first in alone:
                work: Work | None = first
                while work is not None:
                    work = self.runner.process(work)
