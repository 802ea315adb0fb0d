"""Unit tests of the reminder timer's pure deciders (streams/domain/reminder_decide.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from streams.contracts.models import DoseMissed, ReminderDue
from streams.domain.patient import (
    ALREADY_ANSWERED,
    ALREADY_REMINDED,
    BEFORE_ACTIVE_FROM,
    NO_OPEN_SLOT,
    NOT_ACTIVE,
    AnsweredSlot,
    MedicationRecord,
    OpenSlot,
    PatientState,
    ScheduleRecord,
    stable_id,
)
from streams.domain.reminder_decide import (
    MISSED_PENDING,
    MOVED,
    Drop,
    DueDecision,
    MarkMissedPending,
    PlanNext,
    SendMissed,
    SendReminder,
    Skip,
    decide_due,
    decide_fire,
    fired_late,
    follow_up,
    plan_next,
)
from streams.domain.reminder_queue import DueEntry, DueKind
from streams.domain.schedule import reminder_id

GRACE = timedelta(minutes=30)
CATCH_UP = timedelta(minutes=60)
# The schedule takes effect at T0; its slots are 08:00 and 20:00 UTC every day.
T0 = datetime(2025, 3, 10, 7, 0, tzinfo=UTC)
SLOT_1 = datetime(2025, 3, 10, 8, 0, tzinfo=UTC)
SLOT_2 = datetime(2025, 3, 10, 20, 0, tzinfo=UTC)
SLOT_3 = datetime(2025, 3, 11, 8, 0, tzinfo=UTC)
RID_1 = reminder_id("p1", "m1", SLOT_1)
RID_2 = reminder_id("p1", "m1", SLOT_2)
RID_3 = reminder_id("p1", "m1", SLOT_3)


def state(
    *,
    active: bool = True,
    last_emitted: datetime | None = None,
    active_from: datetime = T0,
    open_slot: bool = False,
    answered: bool = False,
    partition: int | None = 3,
) -> PatientState:
    """Patient p1 taking m1 at 08:00 and 20:00 UTC."""
    return PatientState(
        partition=partition,
        medications={
            "m1": MedicationRecord(
                medication_id="m1",
                name="Metformin 500 mg tablet",
                dose_quantity=1.0,
                dose_unit="tablet",
                supply_quantity=60,
                refills_remaining=2,
                active=active,
            )
        },
        schedules={
            "m1": ScheduleRecord(
                timezone="UTC",
                times_of_day=("08:00", "20:00"),
                active_from=active_from,
                last_emitted=last_emitted,
            )
        },
        open_slots=(
            {RID_1: OpenSlot(reminder_id=RID_1, medication_id="m1", scheduled_for=SLOT_1)}
            if open_slot
            else {}
        ),
        answered_slots=(
            {RID_1: AnsweredSlot(medication_id="m1", scheduled_for=SLOT_1)} if answered else {}
        ),
    )


def reminder_entry(slot: datetime = SLOT_1, rid: str = RID_1) -> DueEntry:
    return DueEntry(slot, 0, DueKind.REMINDER, "p1", "m1", rid)


def missed_entry() -> DueEntry:
    return DueEntry(SLOT_1 + GRACE, 0, DueKind.MISSED_CHECK, "p1", "m1", RID_1)


# --- deciding a due entry -----------------------------------------------------------------


def test_a_due_reminder_is_sent_and_the_next_slot_planned() -> None:
    decision = decide_due(reminder_entry(), state(), GRACE, CATCH_UP)
    assert decision.partition == 3
    assert isinstance(decision.send, SendReminder)
    assert decision.send.event == ReminderDue(
        event_id=RID_1,
        patient_id="p1",
        occurred_at=SLOT_1,
        reminder_id=RID_1,
        medication_id="m1",
        medication_name="Metformin 500 mg tablet",
        dose_quantity=1.0,
        dose_unit="tablet",
        scheduled_for=SLOT_1,
    )
    assert decision.next == PlanNext(SLOT_2, RID_2)


def test_no_reminder_for_a_discontinued_drug_and_no_next_slot() -> None:
    decision = decide_due(reminder_entry(), state(active=False), GRACE, CATCH_UP)
    assert decision == DueDecision(3, Skip(NOT_ACTIVE), None)


def test_no_reminder_for_a_slot_already_emitted_but_the_next_slot_is_planned() -> None:
    decision = decide_due(reminder_entry(), state(last_emitted=SLOT_1), GRACE, CATCH_UP)
    assert decision.send == Skip(ALREADY_REMINDED)
    assert decision.next == PlanNext(SLOT_2, RID_2)
    # Emitted further ahead: the next slot is still the one after this entry's (its own entry
    # finds it reminded in turn).
    ahead = decide_due(reminder_entry(), state(last_emitted=SLOT_2), GRACE, CATCH_UP)
    assert ahead == DueDecision(3, Skip(ALREADY_REMINDED), PlanNext(SLOT_2, RID_2))


def test_no_reminder_for_a_slot_before_the_schedule_took_effect() -> None:
    decision = decide_due(
        reminder_entry(), state(active_from=SLOT_1 + timedelta(hours=1)), GRACE, CATCH_UP
    )
    assert decision == DueDecision(3, Skip(BEFORE_ACTIVE_FROM), PlanNext(SLOT_2, RID_2))


def test_no_reminder_for_a_slot_answered_ahead() -> None:
    decision = decide_due(reminder_entry(), state(answered=True), GRACE, CATCH_UP)
    assert decision == DueDecision(3, Skip(ALREADY_ANSWERED), PlanNext(SLOT_2, RID_2))


def test_a_missed_dose_for_an_open_slot() -> None:
    decision = decide_due(missed_entry(), state(open_slot=True), GRACE, CATCH_UP)
    assert decision == DueDecision(
        3,
        SendMissed(
            DoseMissed(
                event_id=stable_id("missed", RID_1),
                patient_id="p1",
                occurred_at=SLOT_1 + GRACE,
                reminder_id=RID_1,
                medication_id="m1",
                scheduled_for=SLOT_1,
                grace_minutes=30,
                medication_name="Metformin 500 mg tablet",
            )
        ),
    )


def test_no_missed_dose_for_a_closed_answered_or_discontinued_slot() -> None:
    assert decide_due(missed_entry(), state(), GRACE, CATCH_UP) == DueDecision(
        3, Skip(NO_OPEN_SLOT)
    )
    answered = state(open_slot=True, answered=True)
    assert decide_due(missed_entry(), answered, GRACE, CATCH_UP).send == Skip(ALREADY_ANSWERED)
    stopped = state(open_slot=True, active=False)
    assert decide_due(missed_entry(), stopped, GRACE, CATCH_UP).send == Skip(NOT_ACTIVE)


# --- the next slot ------------------------------------------------------------------------


def test_the_next_slot_is_strictly_after_the_one_handled() -> None:
    assert plan_next(state(), "p1", "m1", SLOT_1, SLOT_1, CATCH_UP) == PlanNext(SLOT_2, RID_2)
    assert plan_next(state(), "p1", "m1", SLOT_2, SLOT_2, CATCH_UP) == PlanNext(SLOT_3, RID_3)


def test_the_next_slot_skips_slots_older_than_the_catch_up_window() -> None:
    now = SLOT_2 + CATCH_UP + timedelta(minutes=1)
    assert plan_next(state(), "p1", "m1", SLOT_1, now, CATCH_UP) == PlanNext(SLOT_3, RID_3)
    # Within the window, the missed slot is still reminded.
    assert plan_next(
        state(), "p1", "m1", SLOT_1, SLOT_2 + CATCH_UP - timedelta(minutes=1), CATCH_UP
    ) == PlanNext(SLOT_2, RID_2)


def test_no_next_slot_without_a_schedule_or_an_active_prescription() -> None:
    assert plan_next(state(), "p1", "other", SLOT_1, SLOT_1, CATCH_UP) is None
    assert plan_next(state(active=False), "p1", "m1", SLOT_1, SLOT_1, CATCH_UP) is None


# --- deciding at fire time ----------------------------------------------------------------


def test_a_decided_reminder_is_sent_when_its_partition_is_still_active() -> None:
    decision = decide_due(reminder_entry(), state(), GRACE, CATCH_UP)
    assert decide_fire(reminder_entry(), decision, {3}, set()) == decision.send


def test_an_entry_whose_partition_moved_is_dropped() -> None:
    decision = decide_due(reminder_entry(), state(), GRACE, CATCH_UP)
    assert decide_fire(reminder_entry(), decision, {0, 1}, set()) == Drop(MOVED)
    unknown = decide_due(reminder_entry(), state(partition=None), GRACE, CATCH_UP)
    assert decide_fire(reminder_entry(), unknown, {3}, set()) == Drop(MOVED)


def test_an_entry_with_nothing_to_send_is_skipped() -> None:
    decision = decide_due(reminder_entry(), state(answered=True), GRACE, CATCH_UP)
    assert decide_fire(reminder_entry(), decision, {3}, set()) == Skip(ALREADY_ANSWERED)


def test_a_missed_dose_already_pending_is_not_sent_again() -> None:
    decision = decide_due(missed_entry(), state(open_slot=True), GRACE, CATCH_UP)
    assert decide_fire(missed_entry(), decision, {3}, {RID_1}) == Skip(MISSED_PENDING)
    assert decide_fire(missed_entry(), decision, {3}, set()) == decision.send


# --- what follows -------------------------------------------------------------------------


def test_a_reminder_fired_on_time_plans_the_slot_decided_ahead() -> None:
    entry = reminder_entry()
    decision = decide_due(entry, state(), GRACE, CATCH_UP)
    now = SLOT_1 + CATCH_UP
    assert not fired_late(entry, now, CATCH_UP)
    for sent in (True, False):
        assert follow_up(entry, decision, sent=sent, now=now, catch_up=CATCH_UP) == PlanNext(
            SLOT_2, RID_2
        )


def test_a_reminder_fired_late_beyond_catch_up_recomputes_the_next_slot() -> None:
    entry = reminder_entry()
    decision = decide_due(entry, state(), GRACE, CATCH_UP)
    now = SLOT_2 + CATCH_UP + timedelta(minutes=1)
    assert fired_late(entry, now, CATCH_UP)
    written = state(last_emitted=SLOT_1)
    assert follow_up(
        entry, decision, sent=True, now=now, catch_up=CATCH_UP, written=written
    ) == PlanNext(SLOT_3, RID_3)
    # Discontinued meanwhile: nothing more to plan.
    stopped = state(active=False)
    assert (
        follow_up(entry, decision, sent=True, now=now, catch_up=CATCH_UP, written=stopped) is None
    )
    with pytest.raises(ValueError, match="written state"):
        follow_up(entry, decision, sent=True, now=now, catch_up=CATCH_UP)


def test_a_missed_dose_sent_is_pending_until_recorded() -> None:
    entry = missed_entry()
    decision = decide_due(entry, state(open_slot=True), GRACE, CATCH_UP)
    now = entry.due_at + 2 * CATCH_UP
    assert follow_up(entry, decision, sent=True, now=now, catch_up=CATCH_UP) == (
        MarkMissedPending(RID_1)
    )
    assert follow_up(entry, decision, sent=False, now=now, catch_up=CATCH_UP) is None
