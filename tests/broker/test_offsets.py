"""The worker's offset bookkeeping on its own: out-of-order finishes, what may be committed, and
what a revocation commits and rewinds to."""

from __future__ import annotations

import threading

from broker.consumer import TopicPartition
from broker.offsets import PartitionState, Revocation, committable

TP = TopicPartition("t", 0)


def tracked(*offsets: int) -> PartitionState:
    state = PartitionState(TP)
    for offset in offsets:
        state.track(offset)
    return state


def test_a_finished_offset_behind_an_unfinished_one_is_not_committable():
    state = tracked(10, 11, 12)
    state.finish(11)
    state.finish(12)
    assert state.next_commit is None and committable([state]) == {}
    state.finish(10)
    assert state.next_commit == 13 and committable([state]) == {TP: 13}
    assert state.buffered == 0 and not state.pending and not state.done


def test_what_was_committed_is_not_committed_again():
    state = tracked(0)
    state.finish(0)
    state.committed = 1
    assert committable([state]) == {}


def test_a_revocation_commits_the_finished_prefix_and_rewinds_to_the_first_unfinished_offset():
    changed = threading.Condition()
    state = tracked(5, 6, 7)
    state.finish(5)
    state.finish(7)  # 6 is unfinished: fetched but dropped by the revocation
    assigned = {TP: state}
    revocation = Revocation(changed, assigned, [state])
    assert not revocation.busy()
    assert revocation.offsets() == {TP: 6}
    assert revocation.resume_positions() == {TP: 6}
    revocation.done({TP: 6})
    assert state.committed == 6 and assigned == {}


def test_a_revocation_is_busy_while_a_message_of_its_partitions_runs():
    state = tracked(0)
    state.in_flight = 1
    assert Revocation(threading.Condition(), {TP: state}, [state]).busy()
