"""The reminder timer's decisions as pure functions that return effects (no Faust, no I/O)."""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeAlias

from streams.contracts.models import DoseMissed, ReminderDue
from streams.domain.patient import (
    PatientState,
    missed_dose_for,
    reminder_for,
    why_no_missed_dose,
    why_no_reminder,
)
from streams.domain.reminder_queue import DueEntry, DueKind, first_slot_to_remind
from streams.domain.schedule import reminder_id

MOVED = "the patient's partition moved to another worker"
MISSED_PENDING = "the DoseMissed was sent and is not recorded yet"


# --- effects ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SendReminder:
    """Send ``event``, then plan the schedule's next slot."""

    event: ReminderDue


@dataclass(frozen=True)
class SendMissed:
    """Send ``event``, then remember it as pending until the recorder records it."""

    event: DoseMissed


@dataclass(frozen=True)
class Skip:
    """Send nothing; what follows the entry is planned as if it had been handled."""

    reason: str


@dataclass(frozen=True)
class Drop:
    """Send nothing and plan nothing: whoever owns the patient now plans it."""

    reason: str


@dataclass(frozen=True)
class PlanNext:
    """Queue the schedule's reminder for ``slot``."""

    slot: datetime
    reminder_id: str


@dataclass(frozen=True)
class MarkMissedPending:
    """Never send the DoseMissed of ``reminder_id`` again until it is recorded."""

    reminder_id: str


Send: TypeAlias = SendReminder | SendMissed
FollowUp: TypeAlias = PlanNext | MarkMissedPending


@dataclass(frozen=True)
class DueDecision:
    """What a due entry calls for, decided from the patient's written state: what to send,
    and, for a reminder, its schedule's next slot when it fires on time."""

    partition: int | None
    send: Send | Skip
    next: PlanNext | None = None


# --- deciders -----------------------------------------------------------------------------


def plan_next(
    state: PatientState,
    patient_id: str,
    medication_id: str,
    after: datetime,
    now: datetime,
    catch_up: timedelta,
) -> PlanNext | None:
    """The schedule's next slot to remind, strictly after ``after`` (as if it were reminded up
    to there), within the catch-up window from ``now``; None when there is none."""
    slot = first_slot_to_remind(
        _emitted_up_to(state, medication_id, after), medication_id, now, catch_up
    )
    if slot is None:
        return None
    return PlanNext(slot, reminder_id(patient_id, medication_id, slot))


def decide_due(
    entry: DueEntry, state: PatientState, grace: timedelta, catch_up: timedelta
) -> DueDecision:
    """What a due entry sends, from the patient's written state (a reminder based on staged
    state could reach another worker's notifier before that state does)."""
    if entry.kind is DueKind.MISSED_CHECK:
        missed = missed_dose_for(state, entry.patient_id, entry.reminder_id, grace)
        if missed is None:
            return DueDecision(
                state.partition, Skip(why_no_missed_dose(state, entry.reminder_id) or "")
            )
        return DueDecision(state.partition, SendMissed(missed))
    reminder = reminder_for(
        state, entry.patient_id, entry.medication_id, entry.due_at, entry.reminder_id
    )
    send: Send | Skip
    if reminder is None:
        reason = why_no_reminder(state, entry.medication_id, entry.due_at, entry.reminder_id)
        send = Skip(reason or "")
    else:
        send = SendReminder(reminder)
    # Decided ahead of its slot, the next one is computed as of the slot itself.
    following = plan_next(
        state, entry.patient_id, entry.medication_id, entry.due_at, entry.due_at, catch_up
    )
    return DueDecision(state.partition, send, following)


def decide_fire(
    entry: DueEntry,
    decision: DueDecision,
    active: Container[int],
    missed_pending: Container[str],
) -> Send | Skip | Drop:
    """What to do when a decided entry's time comes."""
    if decision.partition not in active:
        return Drop(MOVED)
    if isinstance(decision.send, Skip):
        return decision.send
    if entry.kind is DueKind.MISSED_CHECK and entry.reminder_id in missed_pending:
        return Skip(MISSED_PENDING)
    return decision.send


def fired_late(entry: DueEntry, now: datetime, catch_up: timedelta) -> bool:
    """Whether the catch-up window moved on since the entry was due: its next slot, decided
    as of its due time, must be computed again from ``now``."""
    return now - entry.due_at > catch_up


def follow_up(
    entry: DueEntry,
    decision: DueDecision,
    *,
    sent: bool,
    now: datetime,
    catch_up: timedelta,
    written: PatientState | None = None,
) -> FollowUp | None:
    """What follows an entry handled at ``now`` (``sent``: its record was acknowledged).

    ``written`` (the patient's written state now) is needed only when the entry
    ``fired_late``: the next slot is then computed again from it.
    """
    if entry.kind is DueKind.REMINDER:
        if not fired_late(entry, now, catch_up):
            return decision.next
        if written is None:
            raise ValueError("a reminder fired late needs the patient's written state")
        return plan_next(
            written, entry.patient_id, entry.medication_id, entry.due_at, now, catch_up
        )
    return MarkMissedPending(entry.reminder_id) if sent else None


def _emitted_up_to(state: PatientState, medication_id: str, slot: datetime) -> PatientState:
    """The state as if the schedule's reminders were emitted up to ``slot``."""
    schedule = state.schedules.get(medication_id)
    if schedule is None:
        return state
    return state.model_copy(
        update={
            "schedules": {
                **state.schedules,
                medication_id: schedule.model_copy(update={"last_emitted": slot}),
            }
        }
    )
