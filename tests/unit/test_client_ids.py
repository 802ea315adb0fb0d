"""The client's pure parts: deterministic event ids, the de-duplication window, and the
Publisher's methods against the contract's models (no broker)."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime

import pytest

from streams.client import EventValidationError, Publisher, RecentIds, client_event_id
from streams.client.publisher import DERIVED_FIELDS
from streams.contracts.codecs import EventDecoder, encode_json
from streams.contracts.models import (
    ContactPreferencesSet,
    DoseSkipped,
    DoseTaken,
    Event,
    MedicationDiscontinued,
    MedicationPrescribed,
    RefillDispensed,
    ScheduleCleared,
    ScheduleSet,
)
from streams.contracts.schemas import default_catalog
from streams.publish import INPUT_EVENT_TOPIC
from streams.settings import Settings

METHODS: dict[str, type[Event]] = {
    "prescribe": MedicationPrescribed,
    "discontinue": MedicationDiscontinued,
    "dose_taken": DoseTaken,
    "dose_skipped": DoseSkipped,
    "refill_dispensed": RefillDispensed,
    "set_schedule": ScheduleSet,
    "clear_schedule": ScheduleCleared,
    "set_contact_preferences": ContactPreferencesSet,
}


def test_the_id_is_the_same_for_the_same_fact() -> None:
    first = client_event_id("RefillDispensed", "patient-1", "dispense-77")
    assert first == client_event_id("RefillDispensed", "patient-1", "dispense-77")
    assert first.startswith("RefillDispensed-")
    assert len(first) <= 200


@pytest.mark.parametrize(
    "other",
    [
        ("DoseTaken", "patient-1", "dispense-77"),
        ("RefillDispensed", "patient-2", "dispense-77"),
        ("RefillDispensed", "patient-1", "dispense-78"),
        # Text moved from the patient id to the key gives another id (the parts are joined
        # with a separator).
        ("RefillDispensed", "patient-1d", "ispense-77"),
    ],
)
def test_the_id_differs_when_type_patient_or_key_differs(other: tuple[str, str, str]) -> None:
    assert client_event_id(*other) != client_event_id("RefillDispensed", "patient-1", "dispense-77")


def test_the_id_holds_no_patient_or_key_text() -> None:
    event_id = client_event_id("DoseTaken", "Jane Doe 1970-01-01", "confirmation-Jane")
    assert "Jane" not in event_id
    assert "1970" not in event_id


def test_an_empty_key_is_refused() -> None:
    with pytest.raises(ValueError, match="key"):
        client_event_id("DoseTaken", "p", "")


def test_the_window_drops_repeats_and_forgets_the_oldest() -> None:
    seen = RecentIds(3)
    assert [seen.add(i) for i in ("a", "b", "a", "c")] == [True, True, False, True]
    assert seen.add("d")  # forgets b, the least recently seen ("a" was seen again)
    assert len(seen) == 3
    assert "b" not in seen
    assert "a" in seen
    assert seen.add("b")  # outside the window: delivered again


def test_the_window_needs_room_for_one() -> None:
    with pytest.raises(ValueError, match="capacity"):
        RecentIds(0)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_method_takes_exactly_the_fields_of_its_model(method: str) -> None:
    """The parameters are the model's fields, so that the signature cannot drift from the
    contract: everything but event_id and event_type, plus the caller's key."""
    model = METHODS[method]
    parameters = inspect.signature(getattr(Publisher, method)).parameters
    names = {name for name in parameters if name != "self"}
    assert names == (set(model.model_fields) - DERIVED_FIELDS) | {"key"}
    for name, parameter in parameters.items():
        if name == "self":
            continue
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY
        field = model.model_fields.get(name)
        required = name == "key" or (field is not None and field.is_required())
        if name == "occurred_at":
            required = False  # now, unless given
        assert (parameter.default is inspect.Parameter.empty) == required, name


def test_every_input_event_has_a_method() -> None:
    assert {model.EVENT_TYPE for model in METHODS.values()} == set(INPUT_EVENT_TOPIC)


def test_a_built_event_passes_the_intake() -> None:
    publisher = Publisher(Settings())
    event = publisher.build(
        ScheduleSet,
        key="schedule-9",
        patient_id="p1",
        occurred_at=datetime(2026, 1, 1, 8, tzinfo=UTC),
        medication_id="m1",
        timezone="Europe/Paris",
        times_of_day=["08:00", "20:00"],
        days_of_week=["mon", "thu"],
        start_date=None,
        end_date=None,
    )
    decoded = EventDecoder(default_catalog()).decode(encode_json(event), {"ScheduleSet"})
    assert decoded == event
    assert event.event_id == client_event_id("ScheduleSet", "p1", "schedule-9")


def test_an_invalid_call_names_fields_and_rules_but_no_value() -> None:
    publisher = Publisher(Settings())
    with pytest.raises(EventValidationError) as caught:
        publisher.build(
            MedicationPrescribed,
            key="rx-Jane-Doe",
            patient_id="Jane Doe",
            occurred_at=datetime(2026, 1, 1),  # naive
            medication_id="Warfarin-for-Jane",
            name="Warfarin 5 mg for Jane Doe",
            dose_quantity=-2.5,
            dose_unit="tablet of Jane",
            supply_quantity="thirty tablets",
            refills_remaining=2,
        )
    message = str(caught.value)
    assert "dose_quantity" in message
    assert "greater than 0" in message
    assert "supply_quantity" in message
    assert "occurred_at" in message
    for value in ("Jane", "Warfarin", "thirty", "-2.5", "2026"):
        assert value not in message


def test_an_empty_key_is_a_validation_error() -> None:
    with pytest.raises(EventValidationError, match="key"):
        Publisher(Settings()).build(
            ScheduleCleared, key="", patient_id="p", occurred_at=None, medication_id="m"
        )
