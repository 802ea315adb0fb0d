"""The per-patient event_id ledger: an event_id seen before has no further effect."""

from __future__ import annotations

import dataclasses
import hashlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from streams.domain.dedup import Admission, SeenEvents, admit, event_digest

RETENTION = 1_000
BIG = 1_000_000


def _admit_all(
    events: list[tuple[str, int]], retention_ms: int = RETENTION, max_entries: int = BIG
) -> tuple[list[Admission], SeenEvents]:
    seen = SeenEvents.empty()
    results = []
    for event_id, at in events:
        result, seen = admit(seen, event_id, at, retention_ms, max_entries)
        results.append(result)
    return results, seen


def test_a_first_event_is_new_and_remembered() -> None:
    result, seen = admit(SeenEvents.empty(), "evt-1", 5_000, RETENTION, BIG)
    assert result is Admission.NEW
    assert seen.entries == {event_digest("evt-1"): 5_000}
    assert seen.newest_ms == 5_000


def test_the_same_id_again_is_a_duplicate_and_changes_nothing() -> None:
    _, seen = admit(SeenEvents.empty(), "evt-1", 5_000, RETENTION, BIG)
    for at in (5_000, 5_500, 4_500, 99_000):  # whatever time it claims
        result, after = admit(seen, "evt-1", at, RETENTION, BIG)
        assert result is Admission.DUPLICATE
        assert after == seen
        assert after.entries == {event_digest("evt-1"): 5_000}


def test_an_event_older_than_the_retention_before_the_newest_is_too_old() -> None:
    _, seen = admit(SeenEvents.empty(), "newest", 10_000, RETENTION, BIG)
    result, after = admit(seen, "old", 10_000 - RETENTION - 1, RETENTION, BIG)
    assert result is Admission.TOO_OLD
    assert after == seen
    # Exactly at the edge of the window is still inside it.
    result, after = admit(seen, "edge", 10_000 - RETENTION, RETENTION, BIG)
    assert result is Admission.NEW
    assert event_digest("edge") in after.entries


def test_out_of_order_events_within_the_window_are_new() -> None:
    results, seen = _admit_all([("c", 10_000), ("a", 9_200), ("b", 9_600), ("d", 9_001)])
    assert results == [Admission.NEW] * 4
    assert seen.newest_ms == 10_000
    assert set(seen.entries) == {event_digest(x) for x in "abcd"}


def test_retention_prunes_digests_older_than_the_window() -> None:
    results, seen = _admit_all([("a", 0), ("b", 500), ("c", 1_000), ("d", 2_000)])
    assert results == [Admission.NEW] * 4
    # d moved the window to [1000, 2000]: a and b are forgotten, c sits on the edge.
    assert seen.entries == {event_digest("c"): 1_000, event_digest("d"): 2_000}
    # A forgotten id is not applied again: it is too old, not new.
    assert admit(seen, "a", 0, RETENTION, BIG)[0] is Admission.TOO_OLD
    assert admit(seen, "b", 500, RETENTION, BIG)[0] is Admission.TOO_OLD


def test_max_entries_keeps_the_newest() -> None:
    events = [("e3", 300), ("e1", 100), ("e5", 500), ("e4", 400), ("e2", 200)]
    seen = SeenEvents.empty()
    for event_id, at in events:
        seen = admit(seen, event_id, at, RETENTION, 3)[1]
        assert len(seen.entries) <= 3
    assert seen.entries == {
        event_digest("e5"): 500,
        event_digest("e4"): 400,
        event_digest("e3"): 300,
    }


def test_an_id_forgotten_for_lack_of_room_is_never_new_again() -> None:
    results, seen = _admit_all([("a", 100), ("b", 200), ("c", 300)], max_entries=2)
    assert results == [Admission.NEW] * 3
    assert event_digest("a") not in seen.entries
    assert admit(seen, "a", 100, RETENTION, 2)[0] is Admission.TOO_OLD
    # Nor anything else at or before the oldest remembered time: it could have been forgotten.
    assert admit(seen, "x", 200, RETENTION, 2)[0] is Admission.TOO_OLD
    # Newer than the oldest remembered: new, and the oldest makes room.
    result, after = admit(seen, "y", 250, RETENTION, 2)
    assert result is Admission.NEW
    assert after.entries == {event_digest("c"): 300, event_digest("y"): 250}


def test_the_ledger_given_is_never_changed() -> None:
    _, seen = _admit_all([("a", 100), ("b", 200)], max_entries=2)
    snapshot = dict(seen.entries)
    result, after = admit(seen, "c", 1_500, RETENTION, 2)
    assert result is Admission.NEW
    assert after is not seen
    assert after.entries is not seen.entries
    assert seen.entries == snapshot
    with pytest.raises(dataclasses.FrozenInstanceError):
        seen.entries = {}  # type: ignore[misc]
    assert SeenEvents.empty().entries is not SeenEvents.empty().entries


def test_digests_are_stable_sixteen_hex_characters() -> None:
    assert event_digest("a") == "40f89e395b66422f"
    assert event_digest("a") == hashlib.blake2b(b"a", digest_size=8).hexdigest()
    for event_id in ("", "evt-1", "événement", "x" * 10_000, "🙂"):
        digest = event_digest(event_id)
        assert re.fullmatch(r"[0-9a-f]{16}", digest)
        assert event_digest(event_id) == digest
    ids = [f"evt-{n}" for n in range(2_000)]
    assert len({event_digest(event_id) for event_id in ids}) == len(ids)


def test_newest_of_an_empty_ledger() -> None:
    assert SeenEvents.empty().newest_ms is None
    assert SeenEvents({"a": 3, "b": 9, "c": 1}).newest_ms == 9


# --- properties -----------------------------------------------------------------------------

IDS = st.sampled_from([f"evt-{n}" for n in range(12)])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(IDS, st.integers(0, RETENTION)), max_size=60))
def test_within_the_window_each_id_is_new_exactly_the_first_time(
    events: list[tuple[str, int]],
) -> None:
    # All times lie within one retention of each other and the ledger has room: nothing is
    # forgotten, so the first occurrence of an id is NEW and every later one a DUPLICATE.
    results, seen = _admit_all(events)
    first_seen: set[str] = set()
    for (event_id, _), result in zip(events, results, strict=True):
        expected = Admission.DUPLICATE if event_id in first_seen else Admission.NEW
        assert result is expected
        first_seen.add(event_id)
    assert set(seen.entries) == {event_digest(event_id) for event_id in first_seen}


class LedgerMachine(RuleBasedStateMachine):
    """Any sequence of deliveries (re-deliveries included) of events at any times, with a small
    ledger: an id is NEW at most once, and an event is refused only when the ledger has seen it
    or could have forgotten it. A re-delivery carries the event's own occurred_at."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = SeenEvents.empty()
        self.admitted: set[str] = set()
        self.max_entries = 4
        self.newest: int | None = None
        self.occurred: dict[str, int] = {}

    @rule(event_id=IDS, at=st.integers(0, 5 * RETENTION))
    def deliver(self, event_id: str, at: int) -> None:
        at = self.occurred.setdefault(event_id, at)
        before = self.seen
        snapshot = dict(before.entries)
        result, self.seen = admit(before, event_id, at, RETENTION, self.max_entries)
        assert before.entries == snapshot
        digest = event_digest(event_id)
        if digest in snapshot:
            assert result is Admission.DUPLICATE
        elif self._outside_window(at) or self._maybe_forgotten(snapshot, at):
            assert result is Admission.TOO_OLD
        else:
            assert result is Admission.NEW
        if result is Admission.NEW:
            assert event_id not in self.admitted, "an id was admitted twice"
            self.admitted.add(event_id)
            self.newest = at if self.newest is None else max(self.newest, at)
        else:
            assert self.seen is before

    def _outside_window(self, at: int) -> bool:
        return self.newest is not None and at < self.newest - RETENTION

    def _maybe_forgotten(self, entries: dict[str, int], at: int) -> bool:
        return len(entries) >= self.max_entries and at <= min(entries.values())

    @invariant()
    def ledger_is_bounded_and_within_the_window(self) -> None:
        entries = self.seen.entries
        assert len(entries) <= self.max_entries
        assert self.seen.newest_ms == self.newest
        if self.newest is not None:
            assert min(entries.values()) >= self.newest - RETENTION
        assert set(entries) <= {event_digest(event_id) for event_id in self.admitted}


LedgerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestLedgerMachine = LedgerMachine.TestCase


def test_an_entry_from_the_future_does_not_make_present_events_too_old() -> None:
    # Admitted before clock skew was refused: an event dated 2999 would otherwise hold the
    # horizon there, and every present-day event of the patient would be TOO_OLD.
    seen = SeenEvents({event_digest("future"): 10_000_000})
    assert admit(seen, "now", 5_000, RETENTION, BIG)[0] is Admission.TOO_OLD
    result, after = admit(seen, "now", 5_000, RETENTION, BIG, not_after_ms=5_500)
    assert result is Admission.NEW
    # Duplicates are still recognised, and a present event too old still is.
    assert admit(after, "now", 5_000, RETENTION, BIG, not_after_ms=5_500)[0] is (
        Admission.DUPLICATE
    )
    assert admit(after, "old", 3_000, RETENTION, BIG, not_after_ms=5_500)[0] is Admission.TOO_OLD
