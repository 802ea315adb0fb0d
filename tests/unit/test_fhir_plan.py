"""What the FHIR intake does with a mapping: each event to its input topic, every problem named
in one dead letter, a mapped event that breaks the contract refused there too."""

from __future__ import annotations

from typing import Any

from streams.agents.fhir_intake import plan_fhir_record
from streams.agents.intake import ProcessingError
from streams.fhir import FhirProblem
from streams.topics import MEDICATION_EVENTS, SCHEDULE_EVENTS

NOW = "2026-12-01T09:00:00Z"


def prescribed(event_id: str = "fhir-1") -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_type": "MedicationPrescribed",
        "patient_id": "p1",
        "occurred_at": NOW,
        "medication_id": "mr-1",
        "name": "Metformin",
        "dose_quantity": 1,
        "dose_unit": "tablet",
        "supply_quantity": 60,
        "refills_remaining": 2,
    }


def schedule() -> dict[str, Any]:
    return {
        "event_id": "fhir-2",
        "event_type": "ScheduleSet",
        "patient_id": "p1",
        "occurred_at": NOW,
        "medication_id": "mr-1",
        "timezone": "UTC",
        "times_of_day": ["09:00:00", "21:00:00"],
    }


def problem(n: int) -> FhirProblem:
    return FhirProblem(f"Bundle.entry[{n}].resource.dosageInstruction[0]", "FhirUnmappable", "PRN")


def test_each_event_goes_to_the_input_topic_of_its_type_in_order() -> None:
    plan = plan_fhir_record([prescribed(), schedule()], [])
    assert [(spec, event.event_type) for spec, event in plan.sends] == [
        (MEDICATION_EVENTS, "MedicationPrescribed"),
        (SCHEDULE_EVENTS, "ScheduleSet"),
    ]
    assert plan.failure is None


def test_problems_make_one_dead_letter_naming_each_path_and_the_events_still_go() -> None:
    plan = plan_fhir_record([prescribed()], [problem(1), problem(3)])
    assert len(plan.sends) == 1
    assert plan.failure is not None
    assert not plan.failure.retry
    assert plan.failure.error_type == "FhirUnmappable"
    assert plan.failure.message == (
        "Bundle.entry[1].resource.dosageInstruction[0]: PRN; "
        "Bundle.entry[3].resource.dosageInstruction[0]: PRN"
    )


def test_a_long_list_of_problems_is_cut_with_a_count() -> None:
    plan = plan_fhir_record([], [problem(n) for n in range(8)])
    assert plan.failure is not None
    assert plan.failure.message.endswith("; and 3 more")
    assert plan.failure.message.count("Bundle.entry[") == 5


def test_a_mapped_event_that_breaks_the_contract_is_refused_without_its_values() -> None:
    broken = prescribed()
    broken["dose_quantity"] = -5
    broken["name"] = "Ada Example's metformin"
    plan = plan_fhir_record([broken, schedule()], [])
    assert [event.event_type for _, event in plan.sends] == ["ScheduleSet"]
    assert plan.failure is not None
    assert plan.failure.error_type == ProcessingError.error_type
    assert "dose_quantity" in plan.failure.message
    assert "Ada" not in plan.failure.message


def test_an_output_event_is_never_sent_to_an_input_topic() -> None:
    alert = {**prescribed(), "event_type": "RefillAlert"}
    plan = plan_fhir_record([alert], [])
    assert plan.sends == ()
    assert plan.failure is not None
