"""The in-memory, time-ordered plan of the next reminder and missed-dose check of each schedule."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from streams.domain.patient import PatientState
from streams.domain.schedule import next_slot_after, reminder_id


class DueKind(StrEnum):
    """What happens when an entry comes due."""

    REMINDER = "reminder"
    MISSED_CHECK = "missed_check"


@dataclass(frozen=True, order=True, slots=True)
class DueEntry:
    """One planned action; ordered by due time."""

    due_at: datetime
    sequence: int
    kind: DueKind = field(compare=False)
    patient_id: str = field(compare=False)
    medication_id: str = field(compare=False)
    # For a reminder: the slot's reminder_id; for a missed-dose check: the open slot's.
    reminder_id: str = field(compare=False)


def first_slot_to_remind(
    state: PatientState, medication_id: str, now: datetime, catch_up: timedelta
) -> datetime | None:
    """The earliest slot of a schedule still to remind: after the last one emitted, not before
    the schedule took effect, and not older than the catch-up window."""
    schedule = state.schedules.get(medication_id)
    if schedule is None or state.active_medication(medication_id) is None:
        return None
    floor = max(now - catch_up, schedule.active_from - timedelta(microseconds=1))
    if schedule.last_emitted is not None:
        floor = max(floor, schedule.last_emitted)
    return next_slot_after(schedule.schedule, floor)


class ReminderQueue:
    """A heap of due entries. Entries may go stale; whoever pops one re-checks the table."""

    def __init__(self) -> None:
        self._heap: list[DueEntry] = []
        self._sequence = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def clear(self) -> None:
        self._heap.clear()

    def push(
        self,
        due_at: datetime,
        kind: DueKind,
        patient_id: str,
        medication_id: str,
        reminder: str,
    ) -> None:
        heapq.heappush(
            self._heap,
            DueEntry(due_at, next(self._sequence), kind, patient_id, medication_id, reminder),
        )

    def plan_reminder(
        self,
        state: PatientState,
        patient_id: str,
        medication_id: str,
        now: datetime,
        catch_up: timedelta,
    ) -> datetime | None:
        """Queue the next reminder of one schedule; returns its slot (None: nothing to plan)."""
        slot = first_slot_to_remind(state, medication_id, now, catch_up)
        if slot is not None:
            self.push(
                slot,
                DueKind.REMINDER,
                patient_id,
                medication_id,
                reminder_id(patient_id, medication_id, slot),
            )
        return slot

    def plan_patient(
        self,
        state: PatientState,
        patient_id: str,
        now: datetime,
        catch_up: timedelta,
        grace: timedelta,
    ) -> None:
        """Queue everything a patient's state calls for (used when rebuilding)."""
        for medication_id in state.schedules:
            self.plan_reminder(state, patient_id, medication_id, now, catch_up)
        for slot in state.open_slots.values():
            self.push(
                slot.scheduled_for + grace,
                DueKind.MISSED_CHECK,
                patient_id,
                slot.medication_id,
                slot.reminder_id,
            )

    def rebuild(
        self,
        patients: Iterable[tuple[str, PatientState]],
        now: datetime,
        catch_up: timedelta,
        grace: timedelta,
    ) -> None:
        self.clear()
        for patient_id, state in patients:
            self.plan_patient(state, patient_id, now, catch_up, grace)

    def next_due(self) -> datetime | None:
        return self._heap[0].due_at if self._heap else None

    def pop_next(self, before: datetime) -> DueEntry | None:
        """The earliest entry if it is due at or before ``before``, else None."""
        if self._heap and self._heap[0].due_at <= before:
            return heapq.heappop(self._heap)
        return None

    def pop_due(self, now: datetime) -> list[DueEntry]:
        """Every entry due at or before ``now``, earliest first."""
        due = []
        while self._heap and self._heap[0].due_at <= now:
            due.append(heapq.heappop(self._heap))
        return due
