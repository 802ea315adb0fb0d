"""Unit tests of one patient's state (streams/domain/patient.py) and the reminder plan (pure)."""

from __future__ import annotations

import json
import string
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.contracts.models import (
    ContactChannel,
    ContactPreferencesSet,
    DoseMissed,
    DoseSkipped,
    DoseTaken,
    Event,
    MedicationDiscontinued,
    MedicationPrescribed,
    QuietHours,
    RefillDispensed,
    ReminderDue,
    ScheduleCleared,
    ScheduleSet,
)
from streams.contracts.vocabulary import ChannelKind, RefillReason, Severity, Weekday
from streams.domain import interactions
from streams.domain.interactions import InteractionKnowledgeBase
from streams.domain.patient import (
    AnsweredSlot,
    ContactPreferences,
    Effects,
    MedicationRecord,
    OpenSlot,
    PatientRules,
    PatientState,
    ScheduleRecord,
    apply_input,
    is_answered,
    missed_dose_for,
    record_missed,
    record_reminder,
    reminder_for,
    stable_id,
)
from streams.domain.refill import Supply
from streams.domain.reminder_queue import DueKind, ReminderQueue, first_slot_to_remind
from streams.domain.schedule import AnswerResult, reminder_id

GRACE = timedelta(minutes=30)
RULES = PatientRules(knowledge_base=InteractionKnowledgeBase.load_default(), grace=GRACE)
# The schedule takes effect at T0; its slots are 08:00 and 20:00 UTC every day.
T0 = datetime(2025, 3, 10, 7, 0, tzinfo=UTC)
SLOT_1 = datetime(2025, 3, 10, 8, 0, tzinfo=UTC)
SLOT_2 = datetime(2025, 3, 10, 20, 0, tzinfo=UTC)
YESTERDAY_EVENING = datetime(2025, 3, 9, 20, 0, tzinfo=UTC)
LOW = RefillReason.LOW_SUPPLY
OUT = RefillReason.OUT_OF_SUPPLY
NO_REFILLS = RefillReason.NO_REFILLS_REMAINING

E = TypeVar("E", bound=Event)


class Patient:
    """Feeds one patient's input events through apply_input, as the agent does."""

    def __init__(self, patient_id: str = "p1", state: PatientState | None = None) -> None:
        self.patient_id = patient_id
        self.state = state if state is not None else PatientState()
        self._ids: Iterator[int] = iter(range(1, 100_000))

    def event(self, model: type[E], *, at: datetime = T0, **fields: Any) -> E:
        fields.setdefault("event_id", f"{self.patient_id}-e{next(self._ids)}")
        return model(patient_id=self.patient_id, occurred_at=at, **fields)

    def apply(self, event: Event, now: datetime = T0) -> Effects:
        effects = apply_input(self.state, event, RULES, now)
        self.state = effects.state
        return effects

    def prescribe(self, medication_id: str, name: str, **fields: Any) -> Effects:
        return self.apply(self.prescription(medication_id, name, **fields))

    def prescription(self, medication_id: str, name: str, **fields: Any) -> MedicationPrescribed:
        defaults: dict[str, Any] = {
            "dose_quantity": 1.0,
            "dose_unit": "tablet",
            "supply_quantity": 100.0,
            "refills_remaining": 3,
        }
        return self.event(
            MedicationPrescribed, medication_id=medication_id, name=name, **{**defaults, **fields}
        )

    def discontinue(self, medication_id: str) -> Effects:
        return self.apply(self.event(MedicationDiscontinued, medication_id=medication_id))

    def schedule(
        self, medication_id: str, *times: str, now: datetime = T0, **fields: Any
    ) -> Effects:
        event = self.event(
            ScheduleSet,
            at=now,
            medication_id=medication_id,
            timezone="UTC",
            times_of_day=list(times or ("08:00", "20:00")),
            **fields,
        )
        return self.apply(event, now)

    def take(self, medication_id: str, *, at: datetime = T0, **fields: Any) -> Effects:
        return self.apply(self.event(DoseTaken, at=at, medication_id=medication_id, **fields), at)

    def skip(self, medication_id: str, *, at: datetime = T0, **fields: Any) -> Effects:
        event = self.event(DoseSkipped, at=at, medication_id=medication_id, **fields)
        return self.apply(event, at)

    def refill(self, medication_id: str, quantity: float, **fields: Any) -> Effects:
        event = self.event(
            RefillDispensed, medication_id=medication_id, quantity=quantity, **fields
        )
        return self.apply(event)

    def reminder(self, medication_id: str, slot: datetime) -> ReminderDue | None:
        return reminder_for(
            self.state,
            self.patient_id,
            medication_id,
            slot,
            reminder_id(self.patient_id, medication_id, slot),
        )

    def remind(self, medication_id: str, slot: datetime) -> ReminderDue:
        """The ReminderDue the timer would send, recorded as the recorder agent would."""
        due = self.reminder(medication_id, slot)
        assert due is not None
        self.state = record_reminder(self.state, due)
        return due


def reminded(medication_id: str = "m1", *slots: datetime) -> Patient:
    """A patient on metformin, scheduled 08:00 and 20:00 UTC, reminded of the given slots."""
    patient = Patient()
    patient.prescribe(medication_id, "Metformin 500 mg tablet", rxnorm_code="6809")
    patient.schedule(medication_id)
    for slot in slots:
        patient.remind(medication_id, slot)
    return patient


def open_slot_times(state: PatientState) -> list[datetime]:
    return sorted(slot.scheduled_for for slot in state.open_slots.values())


# --- prescriptions ------------------------------------------------------------------------------


def test_a_prescription_creates_an_active_medication() -> None:
    patient = Patient()
    effects = patient.prescribe(
        "m1",
        "Metformin 500 mg tablet",
        rxnorm_code="6809",
        dose_quantity=2.0,
        supply_quantity=60.0,
        refills_remaining=2,
        refill_threshold_days=10,
    )

    record = patient.state.medications["m1"]
    assert record == MedicationRecord(
        medication_id="m1",
        name="Metformin 500 mg tablet",
        rxnorm_code="6809",
        dose_quantity=2.0,
        dose_unit="tablet",
        supply_quantity=60.0,
        refills_remaining=2,
        threshold_days=10,
        ingredients=("metformin",),
        ingredients_kb=RULES.knowledge_base.fingerprint,
        route="oral",
    )
    assert patient.state.active_medication("m1") == record
    assert effects.replan == {"m1"}
    # Without a schedule a supply that covers a dose is not known to be low.
    assert effects.refill_alerts == []
    assert effects.interaction_warnings == []
    assert patient.state.doses_per_day("m1") is None


def test_an_empty_prescription_without_a_schedule_is_out_of_supply() -> None:
    patient = Patient()
    effects = patient.prescribe("m1", "Metformin", supply_quantity=0.0, refills_remaining=0)

    assert [alert.reason for alert in effects.refill_alerts] == [OUT, NO_REFILLS]
    for alert in effects.refill_alerts:
        assert alert.days_of_supply_remaining is None
        assert alert.supply_quantity == 0.0
        assert alert.refills_remaining == 0


def test_a_re_prescription_keeps_the_alert_flags_while_the_supply_stays_low() -> None:
    patient = Patient()
    patient.prescribe("m1", "Metformin", supply_quantity=10.0, refills_remaining=2)
    # Two doses a day: 5 days of supply, below the 7-day threshold.
    assert [a.reason for a in patient.schedule("m1").refill_alerts] == [LOW]
    assert patient.state.medications["m1"].low_alerted

    # Re-prescribed, still low: the crossing was already alerted.
    effects = patient.prescribe("m1", "Metformin", supply_quantity=12.0, refills_remaining=2)
    assert effects.refill_alerts == []
    assert patient.state.medications["m1"].low_alerted
    assert patient.state.medications["m1"].supply_quantity == 12.0

    # Re-prescribed with plenty: the flag re-arms, so the next crossing is alerted again.
    assert patient.prescribe("m1", "Metformin", supply_quantity=100.0).refill_alerts == []
    assert not patient.state.medications["m1"].low_alerted
    assert [
        a.reason for a in patient.prescribe("m1", "Metformin", supply_quantity=4.0).refill_alerts
    ] == [LOW]


def test_a_prescription_after_a_discontinuation_starts_with_fresh_alert_flags() -> None:
    patient = Patient()
    patient.prescribe("m1", "Metformin", supply_quantity=10.0)
    assert [a.reason for a in patient.schedule("m1").refill_alerts] == [LOW]
    patient.discontinue("m1")
    assert patient.state.active_medication("m1") is None
    # Gone, not kept inactive: stopped drugs would otherwise grow the record without bound.
    assert "m1" not in patient.state.medications

    # A new course of the same drug, still low: a new episode deserves a new alert.
    effects = patient.prescribe("m1", "Metformin", supply_quantity=10.0)
    assert [a.reason for a in effects.refill_alerts] == [LOW]
    assert patient.state.medications["m1"].active


def test_discontinuing_an_unknown_medication_changes_nothing() -> None:
    patient = reminded("m1", SLOT_1)
    before = patient.state
    effects = patient.discontinue("never-prescribed")
    assert effects.state == before
    assert effects.replan == set()


# --- interactions -------------------------------------------------------------------------------


def warfarin_and_aspirin(patient: Patient) -> Effects:
    patient.prescribe("m-warfarin", "Warfarin Sodium 5 mg Tablet", rxnorm_code="11289")
    return patient.prescribe("m-aspirin", "Aspirin 81 mg", rxnorm_code="1191")


def test_warfarin_then_aspirin_warns_once() -> None:
    patient = Patient()
    assert (
        patient.prescribe("m-warfarin", "Warfarin", rxnorm_code="11289").interaction_warnings == []
    )
    aspirin = patient.prescription("m-aspirin", "Aspirin 81 mg", rxnorm_code="1191")
    effects = patient.apply(aspirin)

    [warning] = effects.interaction_warnings
    assert warning.severity is Severity.MAJOR
    assert warning.medication_ids == ["m-aspirin", "m-warfarin"]  # sorted
    assert warning.medication_names == ["Aspirin 81 mg", "Warfarin"]
    assert warning.patient_id == "p1"
    assert warning.occurred_at == aspirin.occurred_at
    assert warning.warning_id == warning.event_id
    assert warning.warning_id.startswith("ddi-")
    assert "bleeding" in warning.description
    assert warning.source
    assert list(patient.state.warned_pairs.values()) == [("m-aspirin", "m-warfarin")]


def test_the_order_of_prescription_does_not_change_the_warning() -> None:
    first, second = Patient(), Patient()
    warned = warfarin_and_aspirin(first).interaction_warnings
    second.prescribe("m-aspirin", "Aspirin 81 mg", rxnorm_code="1191")
    reverse = second.prescribe("m-warfarin", "Warfarin Sodium 5 mg Tablet", rxnorm_code="11289")
    [one], [other] = warned, reverse.interaction_warnings
    assert one.medication_ids == other.medication_ids == ["m-aspirin", "m-warfarin"]
    assert one.medication_names == other.medication_names
    assert first.state.warned_pairs == second.state.warned_pairs


def test_drugs_match_on_name_when_no_rxnorm_code_is_given() -> None:
    patient = Patient()
    patient.prescribe("m1", "Coumadin 5 mg tablet")
    [warning] = patient.prescribe("m2", "aspirin 325 mg oral tablet").interaction_warnings
    assert warning.severity is Severity.MAJOR
    assert warning.medication_ids == ["m1", "m2"]


def test_a_prescription_of_a_drug_the_knowledge_base_cannot_resolve_says_so(
    normalised: list[str],
) -> None:
    patient = Patient()
    assert patient.prescribe("m1", "Coumadin 5 mg tablet").unresolved_medication is None
    assert patient.prescribe("m2", "Foobarol 10 mg").unresolved_medication == "m2"
    # Every part of a combination must resolve; a known RxCUI is enough.
    assert patient.prescribe("m3", "aspirin/foobarol").unresolved_medication == "m3"
    assert patient.prescribe("m4", "Drug X", rxnorm_code="11289").unresolved_medication is None
    # Telling it normalises no name again.
    assert len(normalised) == 3
    # Other events never say so.
    assert patient.discontinue("m2").unresolved_medication is None


def test_warning_ids_are_deterministic_per_trigger_and_per_patient() -> None:
    patient = Patient("p1")
    patient.prescribe("m-warfarin", "Warfarin", rxnorm_code="11289")
    aspirin = patient.prescription("m-aspirin", "Aspirin", rxnorm_code="1191")

    # The same trigger event on the same state (a replay) gives the same warning id.
    [once] = apply_input(patient.state, aspirin, RULES, T0).interaction_warnings
    [again] = apply_input(
        patient.state, aspirin, RULES, T0 + timedelta(hours=5)
    ).interaction_warnings
    assert once == again

    # Another patient with the very same event id gets another id.
    other = Patient("p2")
    other.prescribe("m-warfarin", "Warfarin", rxnorm_code="11289")
    same_ids = aspirin.model_copy(update={"patient_id": "p2"})
    [theirs] = other.apply(same_ids).interaction_warnings
    assert theirs.warning_id != once.warning_id
    assert theirs.medication_ids == once.medication_ids


def test_prescribing_either_drug_again_does_not_warn_again() -> None:
    patient = Patient()
    assert len(warfarin_and_aspirin(patient).interaction_warnings) == 1
    assert (
        patient.prescribe("m-warfarin", "Warfarin", rxnorm_code="11289").interaction_warnings == []
    )
    assert patient.prescribe("m-aspirin", "Aspirin", rxnorm_code="1191").interaction_warnings == []
    assert len(patient.state.warned_pairs) == 1


def test_a_re_exposure_after_a_discontinuation_warns_again() -> None:
    patient = Patient()
    [first] = warfarin_and_aspirin(patient).interaction_warnings
    patient.discontinue("m-aspirin")
    assert patient.state.warned_pairs == {}

    [second] = patient.prescribe("m-aspirin", "Aspirin", rxnorm_code="1191").interaction_warnings
    assert second.warning_id != first.warning_id
    assert second.medication_ids == ["m-aspirin", "m-warfarin"]
    # ... and, once more, only once.
    assert patient.prescribe("m-aspirin", "Aspirin", rxnorm_code="1191").interaction_warnings == []


def test_a_discontinued_drug_no_longer_counts_for_interactions() -> None:
    patient = Patient()
    patient.prescribe("m-warfarin", "Warfarin", rxnorm_code="11289")
    patient.discontinue("m-warfarin")
    assert patient.prescribe("m-aspirin", "Aspirin", rxnorm_code="1191").interaction_warnings == []
    assert patient.state.warned_pairs == {}
    # It counts again once it is prescribed again.
    [warning] = patient.prescribe(
        "m-warfarin", "Warfarin", rxnorm_code="11289"
    ).interaction_warnings
    assert warning.medication_ids == ["m-aspirin", "m-warfarin"]


def test_discontinuing_one_of_two_warfarins_keeps_the_pair_while_the_other_is_active() -> None:
    # Issue 13, 6a: the pair stays warned while a warfarin and the aspirin are still active.
    patient = Patient()
    patient.prescribe("m-warfarin-1", "Warfarin 5 mg", rxnorm_code="11289")
    patient.prescribe("m-warfarin-2", "Coumadin 1 mg")
    assert len(patient.prescribe("m-aspirin", "Aspirin 81 mg").interaction_warnings) == 1
    patient.discontinue("m-warfarin-1")
    assert list(patient.state.warned_pairs) == ["aspirin+warfarin"]
    assert patient.prescribe("m-aspirin-2", "Aspirin 325 mg").interaction_warnings == []
    assert patient.prescribe("m-aspirin", "Aspirin 81 mg").interaction_warnings == []
    # With no warfarin left the pair is forgotten, and a new warfarin warns again.
    patient.discontinue("m-warfarin-2")
    assert patient.state.warned_pairs == {}
    [again] = patient.prescribe("m-warfarin-3", "Warfarin 2 mg").interaction_warnings
    assert again.medication_ids[1] == "m-warfarin-3"


def test_discontinuing_the_aspirin_of_a_warned_pair_forgets_it_even_with_two_warfarins() -> None:
    patient = Patient()
    patient.prescribe("m-warfarin-1", "Warfarin 5 mg")
    patient.prescribe("m-aspirin", "Aspirin 81 mg")
    patient.prescribe("m-warfarin-2", "Warfarin 1 mg")
    patient.discontinue("m-aspirin")
    assert patient.state.warned_pairs == {}
    assert len(patient.prescribe("m-aspirin-2", "Aspirin 81 mg").interaction_warnings) == 1


def test_the_route_is_stored_and_a_topical_form_does_not_warn() -> None:
    patient = Patient()
    patient.prescribe("m-statin", "Simvastatin 40 mg tablet")
    cream = patient.prescribe("m-cream", "Ketoconazole 2% cream")
    assert cream.interaction_warnings == []
    shampoo = patient.prescribe("m-shampoo", "Nizoral 2% shampoo")
    assert shampoo.interaction_warnings == []
    coded = patient.prescribe("m-coded", "Nizoral", rxnorm_code="6135", route="6064005")
    assert coded.interaction_warnings == []
    assert patient.state.medications["m-cream"].route == "topical"
    assert patient.state.medications["m-coded"].route == "topical"
    [warning] = patient.prescribe("m-oral", "Ketoconazole 200 mg", route="PO").interaction_warnings
    assert warning.severity is Severity.CONTRAINDICATED
    assert patient.state.medications["m-oral"].route == "oral"


# --- interactions: ingredients kept with each medication -----------------------------------------


@pytest.fixture
def normalised(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every drug name the knowledge base normalises from now on, in order."""
    names: list[str] = []
    original = interactions._basic_normalise

    def counted(name: str) -> str:
        names.append(name)
        return original(name)

    monkeypatch.setattr(interactions, "_basic_normalise", counted)
    return names


# By name, no RxCUI: the way of resolving a drug that normalises its name.
ON_MANY = ["Coumadin 5 mg", "Lipitor 20 mg", "Tylenol 500 mg", "Metformin 500 mg", "Zocor 40 mg"]


def test_a_new_prescription_normalises_only_its_own_name(normalised: list[str]) -> None:
    patient = Patient()
    for index, name in enumerate(ON_MANY * 10):
        patient.prescribe(f"m{index}", name)
    assert normalised == ON_MANY * 10  # each once, when it was prescribed
    normalised.clear()

    effects = patient.prescribe("m-new", "Aspirin 81 mg")

    assert normalised == ["Aspirin 81 mg"]
    [warning] = effects.interaction_warnings
    assert warning.severity is Severity.MAJOR
    assert warning.medication_names == ["Aspirin 81 mg", "Coumadin 5 mg"]


def test_the_ingredients_are_stored_with_the_medication() -> None:
    patient = Patient()
    patient.prescribe("m1", "Bactrim DS 800 mg-160 mg")
    patient.prescribe("m2", "Foobarol 10 mg")
    patient.prescribe("m3", "   ")
    records = patient.state.medications
    fingerprint = RULES.knowledge_base.fingerprint
    assert records["m1"].ingredients == ("sulfamethoxazole", "trimethoprim")
    assert records["m2"].ingredients == ("foobarol",)
    # Resolved to nothing is not the same as not resolved.
    assert records["m3"].ingredients == ()
    assert {record.ingredients_kb for record in records.values()} == {fingerprint}
    # They survive the table record (the agent dumps without defaults).
    dumped = json.loads(json.dumps(patient.state.model_dump(mode="json", exclude_defaults=True)))
    assert PatientState.model_validate(dumped) == patient.state


def old_record(medication_id: str, name: str, rxnorm_code: str | None = None) -> dict[str, Any]:
    """A medication as the table held it before ingredients were kept with it."""
    record: dict[str, Any] = {
        "medication_id": medication_id,
        "name": name,
        "dose_quantity": 1.0,
        "dose_unit": "tablet",
        "supply_quantity": 30.0,
        "refills_remaining": 1,
    }
    if rxnorm_code is not None:
        record["rxnorm_code"] = rxnorm_code
    return record


def test_records_without_stored_ingredients_still_get_warnings(normalised: list[str]) -> None:
    stored = {
        "medications": {
            "m-warfarin": old_record("m-warfarin", "Warfarin Sodium 5 mg Tablet"),
            "m-statin": old_record("m-statin", "Zocor 40 mg"),
            "m-metformin": old_record("m-metformin", "Metformin", rxnorm_code="6809"),
        }
    }
    patient = Patient(state=PatientState.model_validate(stored))
    assert patient.state.medications["m-warfarin"].ingredients is None

    [warning] = patient.prescribe("m-aspirin", "Aspirin 81 mg").interaction_warnings

    assert warning.medication_ids == ["m-aspirin", "m-warfarin"]
    assert warning.severity is Severity.MAJOR
    # Resolved once, and kept: the next prescription normalises only its own name.
    assert sorted(normalised) == ["Aspirin 81 mg", "Warfarin Sodium 5 mg Tablet", "Zocor 40 mg"]
    medications = patient.state.medications
    assert medications["m-warfarin"].ingredients == ("warfarin",)
    assert medications["m-statin"].ingredients == ("simvastatin",)
    assert medications["m-metformin"].ingredients == ("metformin",)
    normalised.clear()
    again = patient.prescribe("m-clarithro", "Biaxin 500 mg").interaction_warnings
    assert normalised == ["Biaxin 500 mg"]
    assert [warning.medication_ids for warning in again] == [
        ["m-clarithro", "m-statin"],
        ["m-clarithro", "m-warfarin"],
    ]


def test_ingredients_resolved_by_another_knowledge_base_are_resolved_again() -> None:
    # Kept by a knowledge base that did not know the name: this one does, and decides.
    stale = {
        **old_record("m-warfarin", "Coumadin 5 mg"),
        "ingredients": ["coumadin"],
        "ingredients_kb": "0123456789abcdef",
    }
    patient = Patient(state=PatientState.model_validate({"medications": {"m-warfarin": stale}}))

    [warning] = patient.prescribe("m-aspirin", "Aspirin 81 mg").interaction_warnings

    assert warning.medication_ids == ["m-aspirin", "m-warfarin"]
    record = patient.state.medications["m-warfarin"]
    assert record.ingredients == ("warfarin",)
    assert record.ingredients_kb == RULES.knowledge_base.fingerprint


_NAMES = [
    "Coumadin 5 mg",
    "Warfarin Sodium",
    "Aspirin 81 mg",
    "Bayer",
    "Tylenol",
    "Bactrim DS",
    "Methotrexate 2.5 mg",
    "Zocor 20 mg",
    "Kaletra",
    "Biaxin",
    "Metronidazole",
    "Foobarol",
    "Lipitor",
]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 8), st.sampled_from(_NAMES)), min_size=1, max_size=14),
    st.tuples(st.integers(0, 9), st.sampled_from(_NAMES)),
)
def test_stored_ingredients_warn_exactly_as_resolving_every_name(
    prescriptions: list[tuple[int, str]], last: tuple[int, str]
) -> None:
    patient = Patient()
    for number, name in prescriptions:
        patient.prescribe(f"m{number}", name)
    # The same state as a record from before ingredients were kept: every name resolved anew.
    old = patient.state.model_copy(
        update={
            "medications": {
                key: record.model_copy(update={"ingredients": None, "ingredients_kb": None})
                for key, record in patient.state.medications.items()
            }
        }
    )
    event = patient.prescription(f"m{last[0]}", last[1])
    kept = apply_input(patient.state, event, RULES, T0)
    resolved = apply_input(old, event, RULES, T0)
    assert kept.interaction_warnings == resolved.interaction_warnings
    assert kept.state == resolved.state


# --- refill alerts through apply_input ----------------------------------------------------------


def test_fractional_doses_run_the_supply_down_to_one_low_supply_alert() -> None:
    patient = Patient()
    patient.prescribe(
        "m1", "Warfarin", dose_quantity=0.5, supply_quantity=10.0, refills_remaining=1
    )
    # Half a tablet twice a day: 1 tablet a day, 10 days of supply.
    effects = patient.schedule("m1")
    assert effects.refill_alerts == []
    assert effects.replan == {"m1"}
    assert patient.state.doses_per_day("m1") == 2

    alerts = []
    for _ in range(6):  # 3 tablets: 7.0 days left, not below the threshold yet
        alerts += patient.take("m1").refill_alerts
    assert alerts == []
    assert patient.state.medications["m1"].supply_quantity == 7.0

    take = patient.event(DoseTaken, medication_id="m1")
    [alert] = patient.apply(take).refill_alerts
    assert alert.reason is LOW
    assert alert.supply_quantity == 6.5
    assert alert.days_of_supply_remaining == 6.5
    assert alert.refills_remaining == 1
    assert alert.medication_id == "m1"
    assert alert.medication_name == "Warfarin"
    assert alert.alert_id == alert.event_id == stable_id("refill", "p1", "m1", LOW, take.event_id)
    assert alert.occurred_at == take.occurred_at

    # Once per crossing: further doses stay quiet.
    assert patient.take("m1").refill_alerts == []
    # A quarter tablet, given explicitly.
    assert patient.take("m1", quantity=0.25).refill_alerts == []
    assert patient.state.medications["m1"].supply_quantity == 5.75


def test_refill_alert_fields_and_re_arming_after_a_refill() -> None:
    patient = Patient()
    patient.prescribe("m1", "Metformin", supply_quantity=8.0, refills_remaining=1)
    assert patient.schedule("m1", "08:00").refill_alerts == []  # one a day: 8 days
    assert patient.take("m1").refill_alerts == []  # 7 days: not below 7
    [low] = patient.take("m1").refill_alerts  # 6 days
    assert (low.reason, low.supply_quantity, low.days_of_supply_remaining) == (LOW, 6.0, 6.0)
    assert low.refills_remaining == 1

    # A refill too small to leave the low zone, using up the last refill: a new episode.
    refill = patient.event(RefillDispensed, medication_id="m1", quantity=0.5)
    effects = patient.apply(refill)
    assert [a.reason for a in effects.refill_alerts] == [LOW, NO_REFILLS]
    for alert in effects.refill_alerts:
        assert alert.supply_quantity == 6.5
        assert alert.days_of_supply_remaining == 6.5
        assert alert.refills_remaining == 0
        assert alert.alert_id == stable_id("refill", "p1", "m1", alert.reason, refill.event_id)
    assert len({alert.alert_id for alert in effects.refill_alerts}) == 2

    # Replaying the same refill on the same state gives the same ids.
    replay = apply_input(
        effects.state.model_copy(
            update={
                "medications": {
                    "m1": effects.state.medications["m1"].model_copy(
                        update={
                            "supply_quantity": 6.0,
                            "refills_remaining": 1,
                            "low_alerted": True,
                            "no_refills_alerted": False,
                        }
                    )
                }
            }
        ),
        refill,
        RULES,
        T0,
    )
    assert replay.refill_alerts == effects.refill_alerts

    # Out of supply supersedes low, once.
    assert [a.reason for a in patient.take("m1", quantity=6.0).refill_alerts] == [OUT]
    assert patient.take("m1").refill_alerts == []
    assert patient.state.medications["m1"].supply_quantity == 0.0

    # A refill with refills given explicitly, out of the low zone: quiet and re-armed.
    assert patient.refill("m1", 30.0, refills_remaining=5).refill_alerts == []
    record = patient.state.medications["m1"]
    assert (record.supply_quantity, record.refills_remaining) == (30.0, 5)
    assert record.supply == Supply(dose_quantity=1.0, supply_quantity=30.0, refills_remaining=5)


def test_a_schedule_change_reassesses_the_supply() -> None:
    patient = Patient()
    patient.prescribe("m1", "Metformin", supply_quantity=10.0)
    assert patient.schedule("m1", "08:00").refill_alerts == []  # 10 days
    [alert] = patient.schedule("m1", "08:00", "14:00", "20:00").refill_alerts
    assert alert.days_of_supply_remaining == pytest.approx(10 / 3, abs=1e-9)


def test_a_refill_of_an_unknown_or_discontinued_medication_changes_nothing() -> None:
    patient = Patient()
    patient.prescribe("m1", "Metformin", supply_quantity=10.0)
    patient.discontinue("m1")
    before = patient.state
    assert patient.refill("m1", 30.0) == Effects(before)
    assert patient.refill("nope", 30.0) == Effects(before)


@pytest.mark.parametrize("medication_id", ["never-prescribed", "m1"])
def test_a_dose_of_an_unknown_or_discontinued_medication_changes_nothing(
    medication_id: str,
) -> None:
    patient = reminded("m1", SLOT_1)
    patient.discontinue("m1")
    before = patient.state
    effects = patient.take(medication_id, at=SLOT_1, scheduled_for=SLOT_1, quantity=2.0)
    assert effects == Effects(before, dose_answer=AnswerResult.NO_SLOT)
    assert patient.skip(medication_id, at=SLOT_1) == Effects(
        before, dose_answer=AnswerResult.NO_SLOT
    )


# --- reminders ----------------------------------------------------------------------------------


def test_a_reminder_carries_the_slot_and_the_prescription() -> None:
    patient = reminded()
    due = patient.reminder("m1", SLOT_1)
    assert due == ReminderDue(
        event_id=reminder_id("p1", "m1", SLOT_1),
        patient_id="p1",
        occurred_at=SLOT_1,
        reminder_id=reminder_id("p1", "m1", SLOT_1),
        medication_id="m1",
        medication_name="Metformin 500 mg tablet",
        dose_quantity=1.0,
        dose_unit="tablet",
        scheduled_for=SLOT_1,
    )


def test_no_reminder_for_a_discontinued_drug() -> None:
    patient = reminded()
    patient.discontinue("m1")
    assert patient.reminder("m1", SLOT_1) is None


def test_no_reminder_without_a_schedule_or_a_prescription() -> None:
    patient = reminded()
    assert patient.reminder("other", SLOT_1) is None
    patient.apply(patient.event(ScheduleCleared, medication_id="m1"))
    assert patient.reminder("m1", SLOT_1) is None


def test_no_reminder_for_a_slot_already_emitted_or_earlier() -> None:
    patient = reminded("m1", SLOT_2)
    assert patient.reminder("m1", SLOT_2) is None
    assert patient.reminder("m1", SLOT_1) is None
    assert patient.reminder("m1", SLOT_2 + timedelta(hours=12)) is not None


def test_no_reminder_for_a_slot_before_the_schedule_took_effect() -> None:
    patient = reminded()
    assert patient.state.schedules["m1"].active_from == T0
    assert patient.reminder("m1", YESTERDAY_EVENING) is None
    assert patient.reminder("m1", T0 - timedelta(microseconds=1)) is None
    assert patient.reminder("m1", T0) is not None


def test_recording_a_reminder_opens_its_slot_once() -> None:
    patient = reminded()
    due = patient.reminder("m1", SLOT_1)
    assert due is not None
    recorded = record_reminder(patient.state, due)

    assert recorded.schedules["m1"].last_emitted == SLOT_1
    assert recorded.open_slots == {
        due.reminder_id: OpenSlot(
            reminder_id=due.reminder_id, medication_id="m1", scheduled_for=SLOT_1
        )
    }
    # Recording the same ReminderDue again (a redelivery) changes nothing.
    assert record_reminder(recorded, due) is recorded
    # Nor does a late record of an older slot.
    older = due.model_copy(update={"scheduled_for": SLOT_1 - timedelta(hours=12)})
    assert record_reminder(recorded, older) is recorded


def test_recording_a_reminder_without_a_schedule_changes_nothing() -> None:
    patient = reminded()
    due = patient.reminder("m1", SLOT_1)
    assert due is not None
    patient.apply(patient.event(ScheduleCleared, medication_id="m1"))
    assert record_reminder(patient.state, due) is patient.state


def test_a_dose_for_a_named_slot_closes_exactly_that_slot() -> None:
    patient = reminded("m1", SLOT_1, SLOT_2)
    # Reported at 20:05 for the morning dose, taken within its grace window: the named slot.
    effects = patient.take(
        "m1",
        at=SLOT_2 + timedelta(minutes=5),
        taken_at=SLOT_1 + timedelta(minutes=20),
        scheduled_for=SLOT_1,
    )
    assert effects.dose_answer is AnswerResult.ANSWERED
    assert open_slot_times(effects.state) == [SLOT_2]
    assert effects.state.medications["m1"].supply_quantity == 99.0


def test_a_dose_without_a_slot_closes_the_nearest_open_slot_within_the_grace_window() -> None:
    patient = reminded("m1", SLOT_1, SLOT_2)
    # Outside every grace window: counted, but no slot answered.
    patient.take("m1", at=SLOT_1 + GRACE + timedelta(minutes=1))
    assert open_slot_times(patient.state) == [SLOT_1, SLOT_2]
    assert patient.state.medications["m1"].supply_quantity == 99.0

    patient.take("m1", at=SLOT_2 - timedelta(minutes=20))
    assert open_slot_times(patient.state) == [SLOT_1]
    patient.take("m1", at=SLOT_1 + GRACE)  # the window's edge still counts
    assert patient.state.open_slots == {}


def test_a_taken_at_time_decides_over_the_event_time() -> None:
    patient = reminded("m1", SLOT_1)
    patient.take("m1", at=SLOT_1 + timedelta(hours=3), taken_at=SLOT_1 + timedelta(minutes=5))
    assert patient.state.open_slots == {}


def test_a_skipped_dose_closes_its_slot_and_keeps_the_supply() -> None:
    patient = reminded("m1", SLOT_1, SLOT_2)
    patient.skip("m1", at=SLOT_1 + timedelta(minutes=10), scheduled_for=SLOT_1, reason="nausea")
    assert open_slot_times(patient.state) == [SLOT_2]
    patient.skip("m1", at=SLOT_2 + timedelta(minutes=10))
    assert patient.state.open_slots == {}
    assert patient.state.medications["m1"].supply_quantity == 100.0


def test_a_missed_dose_for_an_open_slot() -> None:
    patient = reminded("m1", SLOT_1)
    rid = reminder_id("p1", "m1", SLOT_1)
    missed = missed_dose_for(patient.state, "p1", rid, GRACE)
    assert missed == DoseMissed(
        event_id=stable_id("missed", rid),
        patient_id="p1",
        occurred_at=SLOT_1 + GRACE,
        reminder_id=rid,
        medication_id="m1",
        scheduled_for=SLOT_1,
        grace_minutes=30,
        medication_name="Metformin 500 mg tablet",
    )
    # Deterministic: asking again (another worker, a replay) gives the same event.
    assert missed_dose_for(patient.state, "p1", rid, GRACE) == missed

    closed = record_missed(patient.state, missed)
    assert closed.open_slots == {}
    assert closed.schedules["m1"].last_emitted == SLOT_1
    assert missed_dose_for(closed, "p1", rid, GRACE) is None
    assert record_missed(closed, missed) == closed


@pytest.mark.parametrize(
    "answer",
    [
        lambda p: p.take("m1", at=SLOT_1 + timedelta(minutes=10)),
        lambda p: p.take("m1", at=SLOT_1 + GRACE, scheduled_for=SLOT_1),
        lambda p: p.skip("m1", at=SLOT_1 - timedelta(minutes=10)),
    ],
    ids=["taken", "taken-late-for-the-slot", "skipped"],
)
def test_no_missed_dose_once_the_slot_was_answered(answer: Any) -> None:
    patient = reminded("m1", SLOT_1)
    answer(patient)
    assert missed_dose_for(patient.state, "p1", reminder_id("p1", "m1", SLOT_1), GRACE) is None


# --- dose answers before, long after and again ------------------------------------------------

ANSWERED, ALREADY, NO_SLOT = (
    AnswerResult.ANSWERED,
    AnswerResult.ALREADY_ANSWERED,
    AnswerResult.NO_SLOT,
)


def slot_id(slot: datetime) -> str:
    return reminder_id("p1", "m1", slot)


@pytest.mark.parametrize(
    "early",
    [
        lambda p: p.take("m1", at=SLOT_1 - timedelta(minutes=40), scheduled_for=SLOT_1),
        lambda p: p.take("m1", at=SLOT_1 - timedelta(minutes=10)),
        lambda p: p.skip("m1", at=SLOT_1 - timedelta(minutes=15), scheduled_for=SLOT_1),
    ],
    ids=["taken-naming-the-slot", "taken-ten-minutes-early", "skipped-ahead"],
)
def test_an_answer_before_the_reminder_answers_the_coming_slot(early: Any) -> None:
    patient = reminded()  # nothing reminded yet
    effects = early(patient)
    assert effects.dose_answer is ANSWERED
    assert is_answered(patient.state, slot_id(SLOT_1))
    # No "time for your metformin" inviting a second dose, and no false DoseMissed.
    assert patient.reminder("m1", SLOT_1) is None
    assert missed_dose_for(patient.state, "p1", slot_id(SLOT_1), GRACE) is None
    # The next slot is untouched.
    assert patient.reminder("m1", SLOT_2) is not None


def test_a_reminder_recorded_after_an_early_answer_opens_no_slot() -> None:
    # The timer sent the reminder from a record written before the answer.
    patient = reminded()
    due = patient.reminder("m1", SLOT_1)
    assert due is not None
    patient.take("m1", at=SLOT_1 - timedelta(minutes=5))
    recorded = record_reminder(patient.state, due)
    assert recorded.open_slots == {}
    assert recorded.schedules["m1"].last_emitted == SLOT_1
    assert missed_dose_for(recorded, "p1", due.reminder_id, GRACE) is None


def test_a_stale_answer_does_not_close_the_next_slot() -> None:
    patient = reminded("m1", SLOT_1)
    patient.take("m1", at=SLOT_1 + timedelta(minutes=5), scheduled_for=SLOT_1)
    patient.remind("m1", SLOT_2)
    # The 08:00 dose again, at 20:05: it must not pass for the 20:00 dose.
    effects = patient.take("m1", at=SLOT_2 + timedelta(minutes=5), scheduled_for=SLOT_1)
    assert effects.dose_answer is ALREADY
    assert open_slot_times(patient.state) == [SLOT_2]
    missed = missed_dose_for(patient.state, "p1", slot_id(SLOT_2), GRACE)
    assert missed is not None
    assert missed.scheduled_for == SLOT_2
    # The dose was taken all the same: the supply counts it.
    assert patient.state.medications["m1"].supply_quantity == 98.0


def test_a_late_answer_counts_within_the_grace_window_only() -> None:
    patient = reminded("m1", SLOT_1, SLOT_2)
    late = patient.take("m1", at=SLOT_1 + timedelta(minutes=45), scheduled_for=SLOT_1)
    # Past the grace window: the DoseMissed stands, and no other slot is answered.
    assert late.dose_answer is NO_SLOT
    assert open_slot_times(patient.state) == [SLOT_1, SLOT_2]
    assert missed_dose_for(patient.state, "p1", slot_id(SLOT_1), GRACE) is not None
    assert patient.state.medications["m1"].supply_quantity == 99.0

    in_time = patient.take("m1", at=SLOT_2 + timedelta(minutes=25))
    assert in_time.dose_answer is ANSWERED
    assert open_slot_times(patient.state) == [SLOT_1]
    assert missed_dose_for(patient.state, "p1", slot_id(SLOT_2), GRACE) is None


def test_a_second_answer_for_a_slot_changes_nothing_else() -> None:
    patient = reminded("m1", SLOT_1)
    patient.skip("m1", at=SLOT_1 - timedelta(minutes=30))
    before = patient.state
    for again in (
        patient.skip("m1", at=SLOT_1 + timedelta(minutes=1), scheduled_for=SLOT_1),
        patient.skip("m1", at=SLOT_1 + timedelta(minutes=2)),
    ):
        assert again == Effects(before, dose_answer=ALREADY)


def test_answered_slots_are_forgotten_once_nothing_can_ask() -> None:
    patient = reminded()
    day = timedelta(days=1)
    for n in range(60):
        for slot in (SLOT_1 + n * day, SLOT_2 + n * day):
            patient.take("m1", at=slot - timedelta(minutes=5))
    # Only the answers of the last grace + catch-up window are kept: the record stays small.
    last = SLOT_2 + 59 * day
    assert list(patient.state.answered_slots) == [slot_id(last)]
    assert patient.state.answered_slots[slot_id(last)] == AnsweredSlot(
        medication_id="m1", scheduled_for=last
    )


def test_stopping_a_drug_or_clearing_its_schedule_forgets_its_answers() -> None:
    for stop in ("discontinue", "clear"):
        patient = reminded()
        patient.take("m1", at=SLOT_1 - timedelta(minutes=5))
        if stop == "discontinue":
            patient.discontinue("m1")
        else:
            patient.apply(patient.event(ScheduleCleared, medication_id="m1"))
        assert patient.state.answered_slots == {}


def test_an_answer_without_a_schedule_answers_no_slot() -> None:
    patient = Patient()
    patient.prescribe("m1", "Metformin")
    assert patient.take("m1", at=SLOT_1).dose_answer is NO_SLOT
    assert patient.state.answered_slots == {}
    assert patient.state.medications["m1"].supply_quantity == 99.0


def test_a_finished_course_uses_no_supply() -> None:
    patient = Patient()
    patient.prescribe("m1", "Amoxicillin", supply_quantity=3.0, refills_remaining=0)
    # Ended yesterday: three tablets left are not low, whatever the old daily use.
    ended = patient.schedule("m1", end_date=(T0 - timedelta(days=1)).date())
    assert ended.refill_alerts == []
    assert patient.state.doses_per_day("m1", at=T0) is None
    assert patient.state.doses_per_day("m1") == 2.0
    # Running to tomorrow, it is.
    running = patient.schedule("m1", end_date=(T0 + timedelta(days=1)).date())
    assert [alert.reason for alert in running.refill_alerts] == [LOW, NO_REFILLS]


def test_no_missed_dose_for_an_unknown_reminder() -> None:
    patient = reminded("m1", SLOT_1)
    assert missed_dose_for(patient.state, "p1", "rem-unknown", GRACE) is None


def test_a_drug_discontinued_between_two_slots_gets_no_further_reminder() -> None:
    patient = reminded("m1", SLOT_1)
    assert len(patient.state.open_slots) == 1
    effects = patient.discontinue("m1")
    assert effects.replan == {"m1"}
    assert patient.state.open_slots == {}
    assert patient.reminder("m1", SLOT_2) is None
    assert missed_dose_for(patient.state, "p1", reminder_id("p1", "m1", SLOT_1), GRACE) is None

    queue = ReminderQueue()
    assert queue.plan_reminder(patient.state, "p1", "m1", SLOT_1, timedelta(hours=1)) is None
    queue.plan_patient(
        patient.state, "p1", SLOT_1 + timedelta(minutes=1), timedelta(hours=1), GRACE
    )
    assert len(queue) == 0
    assert first_slot_to_remind(patient.state, "m1", SLOT_1, timedelta(hours=1)) is None


def test_a_reminder_recorded_after_the_discontinuation_opens_no_slot() -> None:
    # The timer sent the reminder, then the discontinuation was applied, then the recorder
    # read the reminder back: the slot of a stopped drug must not stay open.
    patient = reminded()
    due = patient.reminder("m1", SLOT_1)
    assert due is not None
    patient.discontinue("m1")
    recorded = record_reminder(patient.state, due)
    assert recorded.open_slots == {}
    # ... but the slot still counts as emitted: it is never reminded again.
    assert recorded.schedules["m1"].last_emitted == SLOT_1
    assert record_reminder(recorded, due) is recorded
    # Re-prescribed later (and a worker restarted): no DoseMissed for the old slot.
    patient.state = recorded
    patient.prescribe("m1", "Metformin 500 mg tablet")
    queue = ReminderQueue()
    queue.plan_patient(patient.state, "p1", SLOT_1 + timedelta(hours=1), timedelta(0), GRACE)
    assert [entry.kind for entry in queue.pop_due(SLOT_2 + GRACE)] == [DueKind.REMINDER]


def test_clearing_a_schedule_drops_its_open_slots() -> None:
    patient = reminded("m1", SLOT_1)
    effects = patient.apply(patient.event(ScheduleCleared, medication_id="m1"))
    assert effects.replan == {"m1"}
    assert patient.state.open_slots == {}
    assert "m1" not in patient.state.schedules


def test_a_new_schedule_keeps_the_last_emitted_slot() -> None:
    patient = reminded("m1", SLOT_1)
    later = SLOT_1 + timedelta(minutes=1)
    patient.schedule("m1", "08:00", "12:00", now=later)
    schedule = patient.state.schedules["m1"]
    assert schedule.last_emitted == SLOT_1
    assert schedule.active_from == later
    assert patient.reminder("m1", SLOT_1) is None


# --- the reminder queue -------------------------------------------------------------------------


def test_pop_due_returns_what_is_due_earliest_first() -> None:
    queue = ReminderQueue()
    queue.push(SLOT_2, DueKind.REMINDER, "p1", "m1", "r3")
    queue.push(SLOT_1, DueKind.MISSED_CHECK, "p2", "m2", "r1")
    queue.push(SLOT_1, DueKind.REMINDER, "p1", "m3", "r2")  # same time: insertion order
    queue.push(SLOT_2 + timedelta(seconds=1), DueKind.REMINDER, "p1", "m1", "r4")

    assert queue.next_due() == SLOT_1
    assert queue.pop_due(SLOT_1 - timedelta(microseconds=1)) == []
    due = queue.pop_due(SLOT_2)
    assert [entry.reminder_id for entry in due] == ["r1", "r2", "r3"]
    assert [entry.kind for entry in due] == [
        DueKind.MISSED_CHECK,
        DueKind.REMINDER,
        DueKind.REMINDER,
    ]
    assert (due[0].patient_id, due[0].medication_id) == ("p2", "m2")
    assert len(queue) == 1
    assert queue.next_due() == SLOT_2 + timedelta(seconds=1)
    assert [e.reminder_id for e in queue.pop_due(datetime.max.replace(tzinfo=UTC))] == ["r4"]
    assert queue.next_due() is None


def test_plan_reminder_queues_the_next_slot_with_its_id() -> None:
    patient = reminded()
    queue = ReminderQueue()
    assert queue.plan_reminder(patient.state, "p1", "m1", T0, timedelta(hours=1)) == SLOT_1
    [entry] = queue.pop_due(SLOT_1)
    assert entry.kind is DueKind.REMINDER
    assert (entry.due_at, entry.reminder_id) == (SLOT_1, reminder_id("p1", "m1", SLOT_1))


@pytest.mark.parametrize(
    ("catch_up", "planned"), [(timedelta(minutes=60), SLOT_1), (timedelta(minutes=5), SLOT_2)]
)
def test_after_a_restart_a_slot_missed_within_the_catch_up_window_is_still_reminded(
    catch_up: timedelta, planned: datetime
) -> None:
    patient = reminded()
    now = SLOT_1 + timedelta(minutes=10)  # the worker was down at 08:00
    queue = ReminderQueue()
    queue.plan_patient(patient.state, "p1", now, catch_up, GRACE)
    [entry] = queue.pop_due(datetime.max.replace(tzinfo=UTC))
    assert (entry.kind, entry.due_at) == (DueKind.REMINDER, planned)
    assert entry.reminder_id == reminder_id("p1", "m1", planned)


def test_a_restart_never_plans_a_slot_already_emitted_and_checks_open_slots() -> None:
    patient = reminded("m1", SLOT_1)
    now = SLOT_1 + timedelta(minutes=10)
    queue = ReminderQueue()
    queue.plan_patient(patient.state, "p1", now, timedelta(hours=1), GRACE)
    entries = queue.pop_due(datetime.max.replace(tzinfo=UTC))
    assert [(e.kind, e.due_at, e.reminder_id) for e in entries] == [
        (DueKind.MISSED_CHECK, SLOT_1 + GRACE, reminder_id("p1", "m1", SLOT_1)),
        (DueKind.REMINDER, SLOT_2, reminder_id("p1", "m1", SLOT_2)),
    ]


def test_the_catch_up_window_never_reaches_before_the_schedule_took_effect() -> None:
    patient = Patient()
    patient.prescribe("m1", "Metformin")
    patient.schedule("m1", now=SLOT_1 + timedelta(minutes=5))
    state = patient.state
    assert (
        first_slot_to_remind(state, "m1", SLOT_1 + timedelta(minutes=10), timedelta(hours=2))
        == SLOT_2
    )
    # A schedule that takes effect exactly at a slot still reminds that slot.
    patient.schedule("m1", now=SLOT_2)
    assert first_slot_to_remind(patient.state, "m1", SLOT_2, timedelta(hours=2)) == SLOT_2


def test_plan_reminder_respects_the_schedule_dates() -> None:
    patient = Patient()
    patient.prescribe("m1", "Metformin")
    patient.schedule("m1", "08:00", start_date=date(2025, 3, 12), end_date=date(2025, 3, 13))
    queue = ReminderQueue()
    first = datetime(2025, 3, 12, 8, 0, tzinfo=UTC)
    assert queue.plan_reminder(patient.state, "p1", "m1", T0, timedelta(hours=1)) == first
    done = patient.state.model_copy(
        update={
            "schedules": {
                "m1": patient.state.schedules["m1"].model_copy(
                    update={"last_emitted": first + timedelta(days=1)}
                )
            }
        }
    )
    assert queue.plan_reminder(done, "p1", "m1", first, timedelta(hours=1)) is None
    assert len(queue) == 1


def test_rebuild_replaces_the_old_plan() -> None:
    queue = ReminderQueue()
    queue.push(T0, DueKind.REMINDER, "gone", "m9", "r-old")
    queue.push(T0, DueKind.MISSED_CHECK, "gone", "m9", "r-old-2")
    kept = reminded("m1", SLOT_1)
    stopped = reminded("m1")
    stopped.discontinue("m1")
    queue.rebuild(
        [("p1", kept.state), ("p-stopped", stopped.state)],
        SLOT_1 + timedelta(minutes=1),
        timedelta(hours=1),
        GRACE,
    )
    entries = queue.pop_due(datetime.max.replace(tzinfo=UTC))
    assert {(e.patient_id, e.kind, e.due_at) for e in entries} == {
        ("p1", DueKind.MISSED_CHECK, SLOT_1 + GRACE),
        ("p1", DueKind.REMINDER, SLOT_2),
    }
    queue.rebuild([], T0, timedelta(hours=1), GRACE)
    assert len(queue) == 0


# --- the table record: JSON round trip ----------------------------------------------------------


def rich_state() -> PatientState:
    patient = reminded("m1", SLOT_1, SLOT_2)
    warfarin_and_aspirin(patient)
    patient.schedule(
        "m-warfarin",
        "09:00",
        "21:30:15",
        days_of_week=[Weekday.MON, Weekday.THU],
        start_date=date(2025, 3, 1),
        end_date=date(2025, 6, 30),
    )
    patient.take("m1", at=SLOT_1 + timedelta(minutes=3), quantity=0.5)
    patient.prescribe("m-low", "Metformin", supply_quantity=1.0, refills_remaining=0)
    patient.schedule("m-low")
    patient.discontinue("m1")
    patient.prescribe("m1", "Metformin 500 mg tablet", dose_quantity=0.5, supply_quantity=7.25)
    patient.apply(
        patient.event(
            ContactPreferencesSet,
            channels=[ContactChannel(kind=ChannelKind.EMAIL, target="p1@example.org")],
            timezone="Europe/Berlin",
            quiet_hours=QuietHours(start="22:00", end="07:00"),
            caregiver_channels=[
                ContactChannel(kind=ChannelKind.WEBHOOK, target="https://example.org/hook")
            ],
        )
    )
    return patient.state.model_copy(update={"partition": 3})


def round_trip(state: PatientState) -> PatientState:
    # As the table stores it: JSON text in the changelog.
    dumped = json.loads(json.dumps(state.model_dump(mode="json", exclude_defaults=True)))
    return PatientState.model_validate(dumped)


def test_a_rich_state_survives_the_json_round_trip() -> None:
    state = rich_state()
    assert state.contact is not None
    assert state.warned_pairs
    assert state.medications["m-low"].low_alerted
    assert state.schedules["m-warfarin"].days_of_week == (0, 3)
    assert (
        PatientState.model_validate(state.model_dump(mode="json", exclude_defaults=True)) == state
    )
    assert round_trip(state) == state
    assert round_trip(PatientState()) == PatientState()


identifiers = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=12)
instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
) | st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from(
        [timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
    ),
)
quantities = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
medications = st.builds(
    MedicationRecord,
    medication_id=identifiers,
    name=st.text(min_size=1, max_size=20),
    rxnorm_code=st.none() | st.from_regex(r"\A\d{1,10}\Z"),
    dose_quantity=st.floats(min_value=1e-3, max_value=1e3),
    dose_unit=st.sampled_from(["tablet", "ml", "puff"]),
    supply_quantity=quantities,
    refills_remaining=st.integers(0, 20),
    threshold_days=st.integers(0, 365),
    low_alerted=st.booleans(),
    out_alerted=st.booleans(),
    no_refills_alerted=st.booleans(),
    active=st.booleans(),
)
schedules = st.builds(
    ScheduleRecord,
    timezone=st.sampled_from(["UTC", "America/New_York", "Asia/Kolkata"]),
    times_of_day=st.lists(
        st.sampled_from(["08:00", "12:30", "20:00:30"]), min_size=1, unique=True
    ).map(tuple),
    days_of_week=st.none() | st.sets(st.integers(0, 6), min_size=1).map(lambda d: tuple(sorted(d))),
    start_date=st.none() | st.dates(date(2000, 1, 1), date(2100, 1, 1)),
    end_date=st.none() | st.dates(date(2000, 1, 1), date(2100, 1, 1)),
    active_from=instants,
    last_emitted=st.none() | instants,
)
open_slots = st.builds(
    OpenSlot, reminder_id=identifiers, medication_id=identifiers, scheduled_for=instants
)
channels = st.builds(
    ContactChannel, kind=st.sampled_from(list(ChannelKind)), target=st.text(min_size=1, max_size=20)
)
states = st.builds(
    PatientState,
    partition=st.none() | st.integers(0, 1000),
    medications=st.dictionaries(identifiers, medications, max_size=4),
    schedules=st.dictionaries(identifiers, schedules, max_size=3),
    open_slots=st.dictionaries(identifiers, open_slots, max_size=3),
    warned_pairs=st.dictionaries(
        identifiers, st.lists(identifiers, min_size=2, max_size=2).map(tuple), max_size=3
    ),
    contact=st.none()
    | st.builds(
        ContactPreferences,
        channels=st.lists(channels, max_size=3).map(tuple),
        timezone=st.sampled_from(["UTC", "Europe/Berlin"]),
        quiet_hours=st.none() | st.just(QuietHours(start="22:00", end="06:30")),
        caregiver_channels=st.lists(channels, max_size=2).map(tuple),
    ),
)


@settings(max_examples=150, deadline=None)
@given(states)
def test_any_state_survives_the_json_round_trip(state: PatientState) -> None:
    assert round_trip(state) == state
