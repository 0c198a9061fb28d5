"""What became of one delivery of a record: the runner's answer to the worker's bookkeeping.

The answer decides what happens to the record's offset and to its key, so it is a closed set of
three, not a number or ``None`` that could be mistaken for one another (a retry in 0 ms is a
retry, not "finished"):

* :class:`Done`: finished (the actor succeeded or was skipped, the record went back to the delay
  topics, or its dead letter was acknowledged): the offset may be committed past and the next
  record of its key may start.
* :class:`RetryIn`: run the same record again after ``ms`` (a retry in place, or a wait for a
  dependency that failed): its key waits with it and its offset stays uncommitted.
* :class:`Abandoned`: not finished and not to be tried here again (the worker is stopping, or
  could not even dead-letter it): left uncommitted for the partition's next owner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias


@dataclass(frozen=True, slots=True)
class Done:
    """The record is finished: committable, and its key moves on."""


@dataclass(frozen=True, slots=True)
class RetryIn:
    """Run the record again in ``ms`` milliseconds, holding its key."""

    ms: int


@dataclass(frozen=True, slots=True)
class Abandoned:
    """The record stays uncommitted and is redelivered to the partition's next owner."""


Outcome: TypeAlias = Done | RetryIn | Abandoned

DONE = Done()
ABANDONED = Abandoned()
