"""The worker's offset bookkeeping on its own: out-of-order finishes, what may be committed, and
what a revocation commits and rewinds to."""

from __future__ import annotations

import threading

from broker.consumer import TopicPartition
from broker.offsets import (
    MAX_METADATA_CHARS,
    Commit,
    PartitionState,
    Revocation,
    committable,
    decode_done,
    encode_done,
)

TP = TopicPartition("t", 0)


def tracked(*offsets: int) -> PartitionState:
    state = PartitionState(TP)
    for offset in offsets:
        state.track(offset)
    return state


def test_a_finished_offset_behind_an_unfinished_one_is_not_committed_past_but_named_in_the_metadata():
    state = tracked(10, 11, 12)
    state.finish(11)
    state.finish(12)
    assert state.next_commit is None
    assert committable([state]) == {TP: Commit(10, "done1:1-2")}  # read from 10; 11 and 12 are done
    state.finish(10)
    assert state.next_commit == 13 and committable([state]) == {TP: Commit(13, "")}
    assert state.buffered == 0 and not state.pending and not state.done


def test_finished_ahead_offsets_round_trip_through_the_commit_metadata():
    done = {101, 102, 103, 105, 110, 111}
    metadata = encode_done(100, done)
    assert metadata == "done1:1-3,5,10-11"
    assert decode_done(100, metadata) == done
    assert decode_done(100, "") == set() and decode_done(100, "someone else's metadata") == set()
    assert decode_done(100, "done1:x-y") == set()  # unreadable: nothing skipped, nothing lost


def test_a_map_too_long_for_the_broker_keeps_its_lowest_offsets():
    done = set(range(1, 20000, 2))  # 10,000 separate offsets
    metadata = encode_done(0, done)
    assert len(metadata) <= MAX_METADATA_CHARS
    kept = decode_done(0, metadata)
    assert kept and kept <= done and min(kept) == 1
    assert all(offset in kept for offset in done if offset <= max(kept))


def test_what_was_committed_is_not_committed_again():
    state = tracked(0)
    state.finish(0)
    state.committed = 1
    assert committable([state]) == {}
    ahead = tracked(0, 1)
    ahead.finish(1)
    ahead.committed, ahead.committed_metadata = 0, "done1:1"
    assert committable([ahead]) == {}


def test_a_revocation_commits_the_finished_prefix_and_rewinds_to_the_first_unfinished_offset():
    changed = threading.Condition()
    state = tracked(5, 6, 7)
    state.finish(5)
    state.finish(7)  # 6 is unfinished: fetched but dropped by the revocation
    assigned = {TP: state}
    revocation = Revocation(changed, assigned, [state])
    assert not revocation.busy()
    assert revocation.offsets() == {TP: Commit(6, "done1:1")}  # 7 is done: the next owner skips it
    assert revocation.resume_positions() == {TP: 6}
    revocation.done({TP: Commit(6, "done1:1")})
    assert state.committed == 6 and state.committed_metadata == "done1:1" and assigned == {}


def test_a_revocation_is_busy_while_a_message_of_its_partitions_runs():
    state = tracked(0)
    state.in_flight = 1
    assert Revocation(threading.Condition(), {TP: state}, [state]).busy()
