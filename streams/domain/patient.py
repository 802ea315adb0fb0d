"""One patient's medication state, and what each input event does to it (pure functions)."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from pydantic import BaseModel, ConfigDict

from streams.contracts.models import (
    ContactChannel,
    ContactPreferencesSet,
    DoseMissed,
    DoseSkipped,
    DoseTaken,
    Event,
    InteractionWarning,
    MedicationDiscontinued,
    MedicationPrescribed,
    QuietHours,
    RefillAlert,
    RefillDispensed,
    ReminderDue,
    ScheduleCleared,
    ScheduleSet,
    parse_time_of_day,
)
from streams.domain import refill
from streams.domain.drug_names import is_resolved
from streams.domain.interactions import (
    DrugRef,
    InteractionKnowledgeBase,
    find_resolved_interactions,
)
from streams.domain.routes import route_of
from streams.domain.schedule import (
    AnswerResult,
    AnswerWindow,
    Schedule,
    answer_slot,
    next_slot_after,
    reminder_id,
)


def stable_id(prefix: str, *parts: str) -> str:
    """A deterministic id: the same parts give the same id in every process and every replay."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:24]
    return f"{prefix}-{digest}"


class StateModel(BaseModel):
    """Base of the table records: plain JSON in the changelog, validated when read back."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class MedicationRecord(StateModel):
    """A prescription of the patient and its supply."""

    medication_id: str
    name: str
    rxnorm_code: str | None = None
    dose_quantity: float
    dose_unit: str
    supply_quantity: float
    refills_remaining: int
    threshold_days: int = 7
    low_alerted: bool = False
    out_alerted: bool = False
    no_refills_alerted: bool = False
    active: bool = True
    # The drug's ingredient keys, resolved when it was prescribed, and the fingerprint of the
    # knowledge base that resolved them: resolving a name is the costly part of an interaction
    # check, and every later prescription is checked against every active medication. None on
    # records written before they were kept; those are resolved when next needed.
    ingredients: tuple[str, ...] | None = None
    ingredients_kb: str | None = None
    # The vocabulary route (streams.domain.routes) the drug is given by, from the event's route
    # or the name's dosage form; None on older records, whose name is read again when needed.
    route: str | None = None

    def ingredients_in(self, kb: InteractionKnowledgeBase) -> Collection[str]:
        """The drug's ingredient keys in ``kb``: the stored ones when ``kb`` resolved them."""
        if self.ingredients is not None and self.ingredients_kb == kb.fingerprint:
            return self.ingredients
        return kb.ingredients_of(self.drug)

    def resolved_in(self, kb: InteractionKnowledgeBase) -> MedicationRecord:
        """This record with its ingredients in ``kb`` stored (itself when they already are)."""
        if self.ingredients is not None and self.ingredients_kb == kb.fingerprint:
            return self
        return self.model_copy(
            update={
                "ingredients": tuple(sorted(kb.ingredients_of(self.drug))),
                "ingredients_kb": kb.fingerprint,
            }
        )

    @property
    def supply(self) -> refill.Supply:
        return refill.Supply(
            dose_quantity=self.dose_quantity,
            supply_quantity=self.supply_quantity,
            refills_remaining=self.refills_remaining,
            threshold_days=self.threshold_days,
            low_alerted=self.low_alerted,
            out_alerted=self.out_alerted,
            no_refills_alerted=self.no_refills_alerted,
        )

    def with_supply(self, supply: refill.Supply) -> MedicationRecord:
        return self.model_copy(
            update={
                "dose_quantity": supply.dose_quantity,
                "supply_quantity": supply.supply_quantity,
                "refills_remaining": supply.refills_remaining,
                "threshold_days": supply.threshold_days,
                "low_alerted": supply.low_alerted,
                "out_alerted": supply.out_alerted,
                "no_refills_alerted": supply.no_refills_alerted,
            }
        )

    @property
    def drug(self) -> DrugRef:
        return DrugRef(self.medication_id, self.name, self.rxnorm_code, self.route)


class ScheduleRecord(StateModel):
    """A medication's schedule and how far its reminders have gone."""

    timezone: str
    times_of_day: tuple[str, ...]
    days_of_week: tuple[int, ...] | None = None
    start_date: date | None = None
    end_date: date | None = None
    # When this schedule took effect here: no reminder for a slot before it.
    active_from: datetime
    # The latest slot whose ReminderDue was recorded: never emitted again.
    last_emitted: datetime | None = None

    @property
    def schedule(self) -> Schedule:
        return Schedule(
            timezone=self.timezone,
            times_of_day=tuple(sorted(parse_time_of_day(t) for t in self.times_of_day)),
            days_of_week=None if self.days_of_week is None else frozenset(self.days_of_week),
            start_date=self.start_date,
            end_date=self.end_date,
        )


class OpenSlot(StateModel):
    """A reminded slot still waiting for DoseTaken or DoseSkipped."""

    reminder_id: str
    medication_id: str
    scheduled_for: datetime


class AnsweredSlot(StateModel):
    """A slot a DoseTaken or DoseSkipped answered, reminded or not: no ReminderDue (or its
    delivery suppressed) and no DoseMissed for it. Kept only while anything may ask."""

    medication_id: str
    scheduled_for: datetime


class ContactPreferences(StateModel):
    """How and when to reach the patient (kept for the notifier)."""

    channels: tuple[ContactChannel, ...]
    timezone: str
    quiet_hours: QuietHours | None = None
    caregiver_channels: tuple[ContactChannel, ...] = ()


class PatientState(StateModel):
    """Everything medstream knows of one patient; one table record per patient."""

    # The partition the patient's events arrive on: a worker rebuilds its timers only from
    # the patients of the partitions it actively owns.
    partition: int | None = None
    medications: dict[str, MedicationRecord] = {}
    schedules: dict[str, ScheduleRecord] = {}
    open_slots: dict[str, OpenSlot] = {}
    # Slots answered recently, by reminder_id (pruned: see PatientRules.answered_kept).
    answered_slots: dict[str, AnsweredSlot] = {}
    # Interaction pairs already warned about: pair key -> the medication ids involved.
    warned_pairs: dict[str, tuple[str, ...]] = {}
    contact: ContactPreferences | None = None

    def active_medication(self, medication_id: str) -> MedicationRecord | None:
        record = self.medications.get(medication_id)
        return record if record is not None and record.active else None

    def doses_per_day(self, medication_id: str, at: datetime | None = None) -> float | None:
        """The schedule's doses per day; None without one, or (given ``at``) when it has no
        slot left after ``at``: a finished course uses no supply, so it is never low."""
        record = self.schedules.get(medication_id)
        if record is None:
            return None
        schedule = record.schedule
        if at is not None and next_slot_after(schedule, at) is None:
            return None
        return schedule.doses_per_day


@dataclass(frozen=True)
class Effects:
    """The outcome of one input event: the new state and the events to publish."""

    state: PatientState
    refill_alerts: list[RefillAlert] = field(default_factory=list)
    interaction_warnings: list[InteractionWarning] = field(default_factory=list)
    # Medications whose reminder timing may have changed (the timer re-plans them).
    replan: set[str] = field(default_factory=set)
    # What a DoseTaken or DoseSkipped answered (None for other events), for the metrics.
    dose_answer: AnswerResult | None = None
    # A MedicationPrescribed whose drug the knowledge base could not resolve (see
    # ``drug_names.is_resolved``): its medication_id, for the metrics and the log.
    unresolved_medication: str | None = None


@dataclass(frozen=True)
class PatientRules:
    """The knobs and knowledge the pure functions need."""

    knowledge_base: InteractionKnowledgeBase
    # How long after its slot an answer still counts (and the DoseMissed waits).
    grace: timedelta
    # How long before its slot an answer already counts.
    early: timedelta = timedelta(minutes=60)
    # How far back a restarted worker still reminds slots it missed.
    catch_up: timedelta = timedelta(minutes=60)

    @property
    def answer_window(self) -> AnswerWindow:
        return AnswerWindow(early=self.early, grace=self.grace)

    @property
    def answered_kept(self) -> timedelta:
        """How long after its slot an answered slot is remembered: past the grace window no
        DoseMissed is checked and no answer counts for it, past the catch-up window no
        reminder is sent for it."""
        return self.grace + self.catch_up


def _supply_alerts(
    state: PatientState, medication_id: str, trigger: Event
) -> tuple[PatientState, list[RefillAlert]]:
    record = state.active_medication(medication_id)
    if record is None:
        return state, []
    assessment = refill.assess(
        record.supply, state.doses_per_day(medication_id, at=trigger.occurred_at)
    )
    updated = record.with_supply(assessment.supply)
    alerts = [
        RefillAlert(
            event_id=stable_id(
                "refill", trigger.patient_id, medication_id, reason, trigger.event_id
            ),
            patient_id=trigger.patient_id,
            occurred_at=trigger.occurred_at,
            alert_id=stable_id(
                "refill", trigger.patient_id, medication_id, reason, trigger.event_id
            ),
            medication_id=medication_id,
            medication_name=record.name,
            reason=reason,
            supply_quantity=assessment.supply.supply_quantity,
            days_of_supply_remaining=assessment.days_remaining,
            refills_remaining=assessment.supply.refills_remaining,
        )
        for reason in assessment.alerts
    ]
    medications = {**state.medications, medication_id: updated}
    return state.model_copy(update={"medications": medications}), alerts


def _pair_key(ingredients: Iterable[str]) -> str:
    return "+".join(sorted(ingredients))


def _interaction_warnings(
    state: PatientState, new: MedicationRecord, trigger: Event, rules: PatientRules
) -> tuple[PatientState, list[InteractionWarning]]:
    kb = rules.knowledge_base
    fingerprint = kb.fingerprint
    # Records kept without ingredients (older ones, or resolved by another knowledge base) are
    # resolved once here and stored, so the next prescription finds them resolved.
    upgraded: dict[str, MedicationRecord] = {}

    def others() -> Iterator[tuple[MedicationRecord, Collection[str]]]:
        # Run once per active medication of every prescription: plain attribute reads only.
        for medication_id, record in state.medications.items():
            if not record.active or record.medication_id == new.medication_id:
                continue
            ingredients: Collection[str] | None = record.ingredients
            if ingredients is None or record.ingredients_kb != fingerprint:
                resolved = upgraded[medication_id] = record.resolved_in(kb)
                ingredients = resolved.ingredients_in(kb)
            yield record, ingredients

    matches = find_resolved_interactions(kb, new.drug, new.ingredients_in(kb), others())
    warned = dict(state.warned_pairs)
    warnings = []
    for match in matches:
        key = _pair_key(match.interaction.ingredients)
        if key in warned:
            # Remember every medication on the pair, so stopping one of two warfarins keeps it.
            warned[key] = tuple(sorted({*warned[key], *match.medication_ids}))
            continue
        warned[key] = match.medication_ids
        warning_id = stable_id("ddi", trigger.patient_id, key, trigger.event_id)
        warnings.append(
            InteractionWarning(
                event_id=warning_id,
                patient_id=trigger.patient_id,
                occurred_at=trigger.occurred_at,
                warning_id=warning_id,
                medication_ids=[match.drug_a.medication_id, match.drug_b.medication_id],
                medication_names=[match.drug_a.name, match.drug_b.name],
                severity=match.interaction.severity,
                description=match.interaction.description,
                source=match.interaction.source,
            )
        )
    update: dict[str, object] = {"warned_pairs": warned}
    if upgraded:
        update["medications"] = {**state.medications, **upgraded}
    return state.model_copy(update=update), warnings


def _forget_pairs_of(
    state: PatientState, medication_id: str, kb: InteractionKnowledgeBase
) -> PatientState:
    """Forget the warned pairs the discontinued medication was on, unless active medications
    still hold both sides (a second warfarin with the aspirin): a re-exposure after the pair
    really ended deserves a fresh warning, one while it lasts does not."""
    warned: dict[str, tuple[str, ...]] = {}
    for key, ids in state.warned_pairs.items():
        if medication_id not in ids:
            warned[key] = ids
            continue
        holders = _pair_holders(state, key, ids, medication_id, kb)
        if holders:
            warned[key] = holders
    return state.model_copy(update={"warned_pairs": warned})


def _pair_holders(
    state: PatientState,
    key: str,
    ids: tuple[str, ...],
    medication_id: str,
    kb: InteractionKnowledgeBase,
) -> tuple[str, ...]:
    """The active medications, among those the pair was warned for, that still make up both
    of its sides; empty when one side is gone."""
    sides = key.split("+")
    if len(sides) != 2:
        return ()
    holding: dict[str, set[str]] = {sides[0]: set(), sides[1]: set()}
    for other in ids:
        record = state.medications.get(other)
        if other == medication_id or record is None or not record.active:
            continue
        ingredients = record.ingredients_in(kb)
        for side, holders in holding.items():
            if side in ingredients:
                holders.add(other)
    first, second = holding[sides[0]], holding[sides[1]]
    if not first or not second or (len(first | second) < 2):
        return ()
    return tuple(sorted(first | second))


def _answer_slot(
    state: PatientState,
    answer: DoseTaken | DoseSkipped,
    at: datetime,
    rules: PatientRules,
    now: datetime,
) -> tuple[PatientState, AnswerResult]:
    """The state after a DoseTaken or DoseSkipped answered a slot of its schedule (reminded
    or not), and what it answered. Anything but a new answer changes nothing."""
    medication_id = answer.medication_id
    record = state.schedules.get(medication_id)
    if record is None or state.active_medication(medication_id) is None:
        return state, AnswerResult.NO_SLOT
    answered_times = {
        slot.scheduled_for
        for slot in state.answered_slots.values()
        if slot.medication_id == medication_id
    }
    matched = answer_slot(
        record.schedule, answered_times, answer.scheduled_for, at, rules.answer_window
    )
    if matched.result is not AnswerResult.ANSWERED or matched.slot is None:
        return state, matched.result
    key = reminder_id(answer.patient_id, medication_id, matched.slot)
    # Pruned on every answer, so the record keeps only the answers of the last few hours.
    horizon = now - rules.answered_kept
    answered = {
        rid: slot for rid, slot in state.answered_slots.items() if slot.scheduled_for >= horizon
    }
    if matched.slot >= horizon:
        answered[key] = AnsweredSlot(medication_id=medication_id, scheduled_for=matched.slot)
    open_slots = {rid: slot for rid, slot in state.open_slots.items() if rid != key}
    update = {"open_slots": open_slots, "answered_slots": answered}
    return state.model_copy(update=update), AnswerResult.ANSWERED


def is_answered(state: PatientState, reminder_id: str) -> bool:
    """Whether a DoseTaken or DoseSkipped answered the slot (reminded or not)."""
    return reminder_id in state.answered_slots


def _drop_slots_of(state: PatientState, medication_id: str) -> PatientState:
    open_slots = {
        key: slot for key, slot in state.open_slots.items() if slot.medication_id != medication_id
    }
    answered = {
        key: slot
        for key, slot in state.answered_slots.items()
        if slot.medication_id != medication_id
    }
    return state.model_copy(update={"open_slots": open_slots, "answered_slots": answered})


def apply_input(state: PatientState, event: Event, rules: PatientRules, now: datetime) -> Effects:
    """What one (new, valid) input event does to the patient's state."""
    if isinstance(event, MedicationPrescribed):
        previous = state.medications.get(event.medication_id)
        supply = refill.prescribe(
            previous.supply if previous is not None and previous.active else None,
            event.dose_quantity,
            event.supply_quantity,
            event.refills_remaining,
            event.refill_threshold_days,
        )
        prescribed = (
            MedicationRecord(
                medication_id=event.medication_id,
                name=event.name,
                rxnorm_code=event.rxnorm_code,
                route=route_of(event.route, event.name),
                dose_unit=event.dose_unit,
                dose_quantity=supply.dose_quantity,
                supply_quantity=supply.supply_quantity,
                refills_remaining=supply.refills_remaining,
            )
            .with_supply(supply)
            # The only name normalised for this prescription: later ones reuse what is stored.
            .resolved_in(rules.knowledge_base)
        )
        state, warnings = _interaction_warnings(state, prescribed, event, rules)
        state = state.model_copy(
            update={"medications": {**state.medications, event.medication_id: prescribed}}
        )
        state, alerts = _supply_alerts(state, event.medication_id, event)
        unresolved = not is_resolved(
            prescribed.ingredients_in(rules.knowledge_base), rules.knowledge_base.ingredient_names
        )
        return Effects(
            state,
            alerts,
            warnings,
            {event.medication_id},
            unresolved_medication=event.medication_id if unresolved else None,
        )

    if isinstance(event, MedicationDiscontinued):
        if event.medication_id not in state.medications:
            return Effects(state)
        # The record goes: nothing reads a stopped drug's supply again (a re-prescription
        # starts afresh), and kept records would grow the patient's state without bound.
        medications = {
            key: record for key, record in state.medications.items() if key != event.medication_id
        }
        state = state.model_copy(update={"medications": medications})
        state = _drop_slots_of(
            _forget_pairs_of(state, event.medication_id, rules.knowledge_base),
            event.medication_id,
        )
        return Effects(state, replan={event.medication_id})

    if isinstance(event, DoseTaken):
        taking = state.active_medication(event.medication_id)
        taken_at = event.taken_at or event.occurred_at
        state, result = _answer_slot(state, event, taken_at, rules, now)
        if taking is None:
            return Effects(state, dose_answer=result)
        medications = {
            **state.medications,
            event.medication_id: taking.with_supply(
                refill.take_dose(taking.supply, event.quantity)
            ),
        }
        state = state.model_copy(update={"medications": medications})
        state, alerts = _supply_alerts(state, event.medication_id, event)
        return Effects(state, alerts, dose_answer=result)

    if isinstance(event, DoseSkipped):
        state, result = _answer_slot(state, event, event.occurred_at, rules, now)
        return Effects(state, dose_answer=result)

    if isinstance(event, RefillDispensed):
        refilled = state.active_medication(event.medication_id)
        if refilled is None:
            return Effects(state)
        supply = refill.dispense(refilled.supply, event.quantity, event.refills_remaining)
        medications = {**state.medications, event.medication_id: refilled.with_supply(supply)}
        state = state.model_copy(update={"medications": medications})
        state, alerts = _supply_alerts(state, event.medication_id, event)
        return Effects(state, alerts)

    if isinstance(event, ScheduleSet):
        previous_schedule = state.schedules.get(event.medication_id)
        schedule = ScheduleRecord(
            timezone=event.timezone,
            times_of_day=tuple(event.times_of_day),
            days_of_week=(
                None
                if event.days_of_week is None
                else tuple(sorted(day.iso_index for day in event.days_of_week))
            ),
            start_date=event.start_date,
            end_date=event.end_date,
            active_from=now,
            last_emitted=previous_schedule.last_emitted if previous_schedule else None,
        )
        state = state.model_copy(
            update={"schedules": {**state.schedules, event.medication_id: schedule}}
        )
        # Daily use changed, so days of supply did too.
        state, alerts = _supply_alerts(state, event.medication_id, event)
        return Effects(state, alerts, replan={event.medication_id})

    if isinstance(event, ScheduleCleared):
        schedules = {k: v for k, v in state.schedules.items() if k != event.medication_id}
        state = state.model_copy(update={"schedules": schedules})
        state = _drop_slots_of(state, event.medication_id)
        return Effects(state, replan={event.medication_id})

    if isinstance(event, ContactPreferencesSet):
        contact = ContactPreferences(
            channels=tuple(event.channels),
            timezone=event.timezone,
            quiet_hours=event.quiet_hours,
            caregiver_channels=tuple(event.caregiver_channels),
        )
        return Effects(state.model_copy(update={"contact": contact}))

    raise TypeError(f"not an input event: {type(event).__name__}")


# Why a due slot sends nothing.
NOT_ACTIVE = "the medication is not active (discontinued, or its schedule removed)"
ALREADY_REMINDED = "the slot was reminded already"
BEFORE_ACTIVE_FROM = "the slot is before the schedule took effect"
ALREADY_ANSWERED = "the dose was answered already"
NO_OPEN_SLOT = "the slot is not open (never reminded, or closed already)"


def why_no_reminder(
    state: PatientState, medication_id: str, slot: datetime, reminder_id: str
) -> str | None:
    """Why the slot must not be reminded (any more), or None when it must."""
    schedule = state.schedules.get(medication_id)
    if state.active_medication(medication_id) is None or schedule is None:
        return NOT_ACTIVE
    if schedule.last_emitted is not None and slot <= schedule.last_emitted:
        return ALREADY_REMINDED
    if slot < schedule.active_from:
        return BEFORE_ACTIVE_FROM
    if is_answered(state, reminder_id):
        # Taken (or skipped) ahead of its reminder: a reminder now would invite a second dose.
        return ALREADY_ANSWERED
    return None


def why_no_missed_dose(state: PatientState, reminder_id: str) -> str | None:
    """Why a slot whose grace window passed is not a missed dose, or None when it is."""
    slot = state.open_slots.get(reminder_id)
    if slot is None:
        return NO_OPEN_SLOT
    if is_answered(state, reminder_id):
        return ALREADY_ANSWERED
    if state.active_medication(slot.medication_id) is None:
        return NOT_ACTIVE
    return None


def reminder_for(
    state: PatientState, patient_id: str, medication_id: str, slot: datetime, reminder_id: str
) -> ReminderDue | None:
    """The ReminderDue for a slot, or None when the slot must not be reminded (any more)."""
    if why_no_reminder(state, medication_id, slot, reminder_id) is not None:
        return None
    record = state.medications[medication_id]
    return ReminderDue(
        event_id=reminder_id,
        patient_id=patient_id,
        occurred_at=slot,
        reminder_id=reminder_id,
        medication_id=medication_id,
        medication_name=record.name,
        dose_quantity=record.dose_quantity,
        dose_unit=record.dose_unit,
        scheduled_for=slot,
    )


def record_reminder(state: PatientState, reminder: ReminderDue) -> PatientState:
    """The state after a ReminderDue was published: the slot is open and never reminded again."""
    schedule = state.schedules.get(reminder.medication_id)
    if schedule is None or (
        schedule.last_emitted is not None and reminder.scheduled_for <= schedule.last_emitted
    ):
        return state
    schedules = {
        **state.schedules,
        reminder.medication_id: schedule.model_copy(
            update={"last_emitted": reminder.scheduled_for}
        ),
    }
    if state.active_medication(reminder.medication_id) is None or is_answered(
        state, reminder.reminder_id
    ):
        # Discontinued between the timer's send and this record: no slot of a stopped drug may
        # stay open, or a later re-prescription would turn it into a DoseMissed. Answered
        # meanwhile: nothing is left to wait for.
        return state.model_copy(update={"schedules": schedules})
    slot = OpenSlot(
        reminder_id=reminder.reminder_id,
        medication_id=reminder.medication_id,
        scheduled_for=reminder.scheduled_for,
    )
    return state.model_copy(
        update={"schedules": schedules, "open_slots": {**state.open_slots, slot.reminder_id: slot}}
    )


def missed_dose_for(
    state: PatientState, patient_id: str, reminder_id: str, grace: timedelta
) -> DoseMissed | None:
    """The DoseMissed for a slot whose grace window passed, or None when it was answered."""
    if why_no_missed_dose(state, reminder_id) is not None:
        return None
    slot = state.open_slots[reminder_id]
    record = state.medications[slot.medication_id]
    missed_id = stable_id("missed", reminder_id)
    return DoseMissed(
        event_id=missed_id,
        patient_id=patient_id,
        occurred_at=slot.scheduled_for + grace,
        reminder_id=reminder_id,
        medication_id=slot.medication_id,
        scheduled_for=slot.scheduled_for,
        grace_minutes=int(grace.total_seconds() // 60),
        medication_name=record.name,
    )


def record_missed(state: PatientState, missed: DoseMissed) -> PatientState:
    """The state after a DoseMissed was published: the slot is closed."""
    open_slots = {k: v for k, v in state.open_slots.items() if k != missed.reminder_id}
    return state.model_copy(update={"open_slots": open_slots})
