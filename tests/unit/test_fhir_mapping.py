"""FHIR R4 resources and Bundles to contract events (docs/fhir.md): each resource type in the
shapes EHR exports have, every unmappable case with its path, determinism, no patient data."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.contracts.codecs import validate_event
from streams.contracts.models import EVENT_MODELS
from streams.fhir import FhirMapping, FhirProblem, FhirRules, map_fhir_record
from streams.fhir.mapping import _problem
from streams.settings import Settings
from tests import fhir_examples as fx

RULES = FhirRules()


def mapped(resource: dict[str, Any] | bytes, rules: FhirRules = RULES) -> FhirMapping:
    value = resource if isinstance(resource, bytes) else fx.record(resource)
    mapping = map_fhir_record(value, rules)
    for event in mapping.events:
        # Every event is JSON-ready and meets the contract as the intake would read it.
        validate_event(json.loads(json.dumps(event)))
        EVENT_MODELS[event["event_type"]].model_validate(event)
    return mapping


def types(mapping: FhirMapping) -> list[str]:
    return [event["event_type"] for event in mapping.events]


def only_problem(mapping: FhirMapping) -> FhirProblem:
    assert mapping.events == []
    assert len(mapping.problems) == 1, mapping.problems
    return mapping.problems[0]


# --- MedicationRequest -------------------------------------------------------------------


def test_a_transaction_bundle_of_requests_gives_prescriptions_and_schedules() -> None:
    mapping = mapped(fx.medication_request_bundle())
    assert mapping.problems == []
    assert types(mapping) == [
        "MedicationPrescribed",
        "ScheduleSet",
        "MedicationPrescribed",
        "ScheduleSet",
    ]
    lisinopril, bid, metformin, meals = mapping.events
    assert lisinopril == {
        "event_id": lisinopril["event_id"],
        "event_type": "MedicationPrescribed",
        "patient_id": fx.PATIENT_ID,
        "occurred_at": "2026-11-30T14:12:00Z",
        "medication_id": fx.REQUEST_ID,
        "name": "Lisinopril 10 mg oral tablet",
        "rxnorm_code": "314076",  # the RxNorm coding among NDC and SNOMED
        "dose_quantity": 1.0,
        "dose_unit": "tablet",
        "supply_quantity": 60.0,
        "refills_remaining": 3,
        "refill_threshold_days": 7,
        "route": "26643006",
    }
    assert lisinopril["event_id"].startswith("fhir-")
    assert bid["timezone"] == "America/New_York"  # the Patient's timezone extension
    assert bid["times_of_day"] == ["09:00", "21:00"]
    assert (bid["start_date"], bid["end_date"]) == ("2026-12-01", "2027-02-28")
    assert bid["medication_id"] == fx.REQUEST_ID
    # Named by the Bundle's fullUrl: the Medication's RxNorm display; the urn:uuid subject
    # resolves to the Patient entry's logical id.
    assert metformin["name"] == "metformin hydrochloride 500 MG Oral Tablet"
    assert metformin["rxnorm_code"] == "861007"
    assert metformin["patient_id"] == fx.PATIENT_ID
    assert meals["times_of_day"] == ["08:00", "18:00"]


def test_a_contained_medication_names_the_prescription() -> None:
    mapping = mapped(fx.contained_medication_request())
    assert types(mapping) == ["MedicationPrescribed", "ScheduleSet"]
    assert mapping.events[0]["rxnorm_code"] == "861007"
    assert mapping.events[1]["timezone"] == "UTC"  # no Patient in the record: the default


@pytest.mark.parametrize("status", ["stopped", "cancelled", "completed", "entered-in-error"])
def test_an_ended_request_clears_the_schedule_and_discontinues(status: str) -> None:
    resource = fx.stopped_request()
    resource["status"] = status
    mapping = mapped(resource)
    assert types(mapping) == ["ScheduleCleared", "MedicationDiscontinued"]
    cleared, discontinued = mapping.events
    assert cleared["medication_id"] == discontinued["medication_id"] == fx.REQUEST_ID
    assert discontinued["reason"] == f"FHIR MedicationRequest status {status}"
    # The change happened when the resource was last updated, not when it was authored.
    assert discontinued["occurred_at"] == "2026-12-10T14:00:00Z"


def test_an_ended_request_without_meta_is_dated_when_authored() -> None:
    resource = fx.stopped_request()
    del resource["meta"]
    assert {e["occurred_at"] for e in mapped(resource).events} == {"2026-11-30T14:12:00Z"}


def test_an_ended_request_needs_no_dose_or_medication_code() -> None:
    resource = fx.stopped_request()
    del resource["dosageInstruction"]
    del resource["dispenseRequest"]
    assert types(mapped(resource)) == ["ScheduleCleared", "MedicationDiscontinued"]


def test_an_on_hold_request_keeps_the_medication_and_clears_its_schedule() -> None:
    assert types(mapped(fx.on_hold_request())) == ["MedicationPrescribed", "ScheduleCleared"]


@pytest.mark.parametrize(
    ("changes", "path", "error_type"),
    [
        ({"status": "draft"}, "MedicationRequest.status", "FhirUnsupported"),
        ({"status": "unknown"}, "MedicationRequest.status", "FhirUnmappable"),
        ({"status": "paused"}, "MedicationRequest.status", "FhirInvalid"),
        ({"intent": "proposal"}, "MedicationRequest.intent", "FhirUnsupported"),
        ({"doNotPerform": True}, "MedicationRequest.doNotPerform", "FhirUnsupported"),
        ({"id": None}, "MedicationRequest.id", "FhirUnmappable"),
    ],
)
def test_request_statuses_and_intents_medstream_does_not_map(
    changes: dict[str, Any], path: str, error_type: str
) -> None:
    resource = fx.medication_request(**changes)
    if resource["id"] is None:
        del resource["id"]
    problem = only_problem(mapped(resource))
    assert (problem.path, problem.error_type) == (path, error_type)


def test_the_name_falls_back_to_the_rxnorm_display() -> None:
    concept = fx.lisinopril_concept()
    del concept["text"]
    mapping = mapped(fx.medication_request(medicationCodeableConcept=concept))
    assert mapping.events[0]["name"] == "lisinopril 10 MG Oral Tablet"


def test_a_text_only_medication_has_no_rxnorm_code() -> None:
    mapping = mapped(fx.medication_request(medicationCodeableConcept={"text": "Compounded cream"}))
    assert mapping.events[0]["rxnorm_code"] is None
    assert mapping.events[0]["name"] == "Compounded cream"


def test_refills_default_to_none_left() -> None:
    resource = fx.medication_request()
    del resource["dispenseRequest"]["numberOfRepeatsAllowed"]
    assert mapped(resource).events[0]["refills_remaining"] == 0


def test_several_dosage_instructions_with_one_dose_are_one_schedule() -> None:
    resource = fx.medication_request()
    evening = copy.deepcopy(resource["dosageInstruction"][0])
    resource["dosageInstruction"][0]["timing"] = {"repeat": {"when": ["MORN"]}}
    evening["timing"] = {"repeat": {"when": ["HS"]}}
    resource["dosageInstruction"].append(evening)
    mapping = mapped(resource)
    assert mapping.events[1]["times_of_day"] == ["08:00", "22:00"]


def test_several_dosage_instructions_with_different_doses_are_refused() -> None:
    resource = fx.medication_request()
    second = copy.deepcopy(resource["dosageInstruction"][0])
    second["doseAndRate"][0]["doseQuantity"]["value"] = 2
    resource["dosageInstruction"].append(second)
    problem = only_problem(mapped(resource))
    assert problem.path == "MedicationRequest.dosageInstruction[1].doseAndRate[0].doseQuantity"


# --- patient and time zone ------------------------------------------------------------------


def test_the_patient_identifier_rule_reads_the_patient_in_the_bundle() -> None:
    rules = FhirRules.from_settings(Settings(fhir_patient_identifier_system=fx.MRN_SYSTEM))
    mapping = mapped(fx.medication_request_bundle(), rules)
    assert {event["patient_id"] for event in mapping.events} == {fx.PATIENT_MRN}


def test_the_patient_identifier_rule_reads_a_contained_patient_or_subject_identifier() -> None:
    rules = FhirRules.from_settings(Settings(fhir_patient_identifier_system=fx.SSN_SYSTEM))
    contained = fx.medication_request(
        contained=[{**fx.patient(), "id": "p"}], subject={"reference": "#p"}
    )
    assert {e["patient_id"] for e in mapped(contained, rules).events} == {fx.PATIENT_SSN}
    logical = fx.medication_request(
        subject={"identifier": {"system": fx.SSN_SYSTEM, "value": fx.PATIENT_SSN}}
    )
    assert {e["patient_id"] for e in mapped(logical, rules).events} == {fx.PATIENT_SSN}


def test_no_identifier_of_the_system_is_a_problem() -> None:
    rules = FhirRules.from_settings(Settings(fhir_patient_identifier_system="urn:other"))
    mapping = mapped(fx.medication_request_bundle(), rules)
    assert mapping.events == []
    assert {(p.path, p.error_type) for p in mapping.problems} == {
        ("Bundle.entry[2].resource.subject", "FhirUnmappable"),
        ("Bundle.entry[3].resource.subject", "FhirUnmappable"),
    }


@pytest.mark.parametrize(
    "reference",
    [
        f"Patient/{fx.PATIENT_ID}",
        f"Patient/{fx.PATIENT_ID}/_history/3",
        f"{fx.BASE}/Patient/{fx.PATIENT_ID}",
        f"{fx.BASE}/Patient/{fx.PATIENT_ID}/_history/3",
    ],
)
def test_the_patient_id_is_the_logical_id_of_the_subject_reference(reference: str) -> None:
    mapping = mapped(fx.medication_request(subject={"reference": reference}))
    assert {event["patient_id"] for event in mapping.events} == {fx.PATIENT_ID}


@pytest.mark.parametrize(
    "subject",
    [
        {"reference": "Group/g1"},
        {"reference": "#missing"},
        {"reference": "urn:uuid:00000000-0000-4000-8000-000000000000"},
        {"display": fx.PATIENT_FAMILY},
    ],
)
def test_a_subject_without_a_patient_logical_id_is_a_problem(subject: dict[str, Any]) -> None:
    problem = only_problem(mapped(fx.medication_request(subject=subject)))
    assert problem.path.startswith("MedicationRequest.subject")
    assert problem.error_type == "FhirUnmappable"


def test_the_timezone_extension_variants_and_a_bad_zone() -> None:
    bundle = fx.medication_request_bundle()
    bundle["entry"][0]["resource"]["extension"][1] = {
        "url": "http://hl7.org/fhir/StructureDefinition/timezone",
        "valueCode": "Europe/London",
    }
    assert mapped(bundle).events[1]["timezone"] == "Europe/London"
    bundle["entry"][0]["resource"]["extension"][1]["valueCode"] = "Atlantis/Lost"
    mapping = mapped(bundle)
    assert mapping.events == []
    assert {p.path for p in mapping.problems} == {"Bundle.entry[0].resource.extension[1]"}


def test_the_default_timezone_comes_from_the_settings() -> None:
    bundle = fx.medication_request_bundle()
    bundle["entry"][0]["resource"] = fx.patient(timezone=None)
    rules = FhirRules.from_settings(Settings(fhir_default_timezone="America/Chicago"))
    assert mapped(bundle, rules).events[1]["timezone"] == "America/Chicago"


# --- MedicationDispense, MedicationAdministration, MedicationStatement -------------------------


def test_a_dispense_gives_a_refill_linked_to_its_prescription() -> None:
    mapping = mapped(fx.dispense_bundle())
    assert mapping.problems == []
    (refill,) = mapping.events
    assert refill["event_type"] == "RefillDispensed"
    assert (refill["medication_id"], refill["quantity"]) == (fx.REQUEST_ID, 60.0)
    assert refill["patient_id"] == fx.PATIENT_ID
    assert refill["occurred_at"] == "2026-12-02T21:40:00Z"  # whenHandedOver


def test_a_dispense_linked_by_urn_to_a_request_in_the_bundle() -> None:
    bundle = fx.dispense_bundle()
    bundle["entry"].append({"fullUrl": fx.REQUEST_URL, "resource": fx.medication_request()})
    bundle["entry"][1]["resource"]["authorizingPrescription"] = [{"reference": fx.REQUEST_URL}]
    mapping = mapped(bundle)
    assert [e["medication_id"] for e in mapping.events if e["event_type"] == "RefillDispensed"] == [
        fx.REQUEST_ID
    ]


@pytest.mark.parametrize("status", ["preparation", "in-progress", "cancelled", "declined"])
def test_a_dispense_not_handed_over_is_not_mapped(status: str) -> None:
    problem = only_problem(mapped(fx.dispense(status=status)))
    assert (problem.path, problem.error_type) == ("MedicationDispense.status", "FhirUnsupported")


def test_administrations_give_doses_taken_and_skipped() -> None:
    mapping = mapped(fx.administration_bundle())
    assert mapping.problems == []
    taken, skipped = mapping.events
    assert taken["event_type"] == "DoseTaken"
    assert (taken["medication_id"], taken["quantity"]) == (fx.REQUEST_ID, 1.0)
    assert taken["taken_at"] == taken["occurred_at"] == "2026-12-02T14:03:00Z"
    assert taken["patient_id"] == fx.PATIENT_ID  # from the absolute subject URL
    assert skipped["event_type"] == "DoseSkipped"
    assert skipped["reason"] == "Drug declined by patient"


def test_an_administration_over_a_period_is_taken_at_its_start() -> None:
    resource = fx.administration(
        effectivePeriod={"start": "2026-12-02T09:00:00Z", "end": "2026-12-02T09:30:00Z"}
    )
    del resource["effectiveDateTime"]
    assert mapped(resource).events[0]["taken_at"] == "2026-12-02T09:00:00Z"


@pytest.mark.parametrize("status", ["in-progress", "on-hold", "stopped", "entered-in-error"])
def test_an_unfinished_administration_is_not_mapped(status: str) -> None:
    problem = only_problem(mapped(fx.administration(status=status)))
    assert problem.error_type == "FhirUnsupported"


def test_statements_give_doses_taken_and_skipped() -> None:
    mapping = mapped(fx.statement_bundle())
    assert mapping.problems == []
    taken, skipped = mapping.events
    assert (taken["event_type"], taken["taken_at"]) == ("DoseTaken", "2026-12-03T13:10:00Z")
    assert (skipped["event_type"], skipped["reason"]) == ("DoseSkipped", "felt dizzy")
    assert taken["medication_id"] == skipped["medication_id"] == fx.REQUEST_ID


def test_an_active_statement_is_taken_and_dated_when_asserted_without_effective() -> None:
    resource = fx.statement(status="active")
    del resource["effectiveDateTime"]
    (event,) = mapped(resource).events
    assert event["event_type"] == "DoseTaken"
    assert event["occurred_at"] == "2026-12-03T17:00:00Z"
    assert event["taken_at"] is None


@pytest.mark.parametrize("status", ["intended", "stopped", "on-hold", "unknown"])
def test_statements_that_report_no_dose_are_not_mapped(status: str) -> None:
    problem = only_problem(mapped(fx.statement(status=status)))
    assert (problem.path, problem.error_type) == ("MedicationStatement.status", "FhirUnsupported")


def test_a_statement_based_on_a_care_plan_and_a_request_links_the_request() -> None:
    resource = fx.statement(
        basedOn=[
            {"reference": "CarePlan/cp-4"},
            {"reference": f"MedicationRequest/{fx.REQUEST_ID}"},
        ]
    )
    assert mapped(resource).events[0]["medication_id"] == fx.REQUEST_ID


# --- Bundles -----------------------------------------------------------------------------


def test_context_resources_and_entries_without_a_resource_are_skipped_silently() -> None:
    bundle = fx.administration_bundle()
    bundle["entry"] += [
        {"resource": {"resourceType": "Practitioner", "id": "pr-12"}},
        {
            "resource": {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "information", "code": "informational"}],
            },
            "search": {"mode": "outcome"},
        },
        {"request": {"method": "DELETE", "url": "Practitioner/pr-9"}},
        {"request": {"method": "GET", "url": "MedicationRequest/rx-0"}},
    ]
    mapping = mapped(bundle)
    assert mapping.problems == []
    assert types(mapping) == ["DoseTaken", "DoseSkipped"]


@pytest.mark.parametrize(
    "url",
    [
        "MedicationRequest/rx-0",
        "https://ehr.example.org/fhir/MedicationRequest/rx-0",
        "MedicationStatement?identifier=urn:oid:1.2|ms-7",
        "MedicationDispense/md-1/_history/2",
    ],
)
def test_a_delete_of_a_mapped_resource_is_a_problem_and_the_rest_still_maps(url: str) -> None:
    # A deleted order would otherwise keep its reminders without a word: the deletion names
    # no patient, so it cannot become a MedicationDiscontinued, and the operator must see it.
    bundle = fx.administration_bundle()
    index = len(bundle["entry"])
    bundle["entry"].append({"request": {"method": "DELETE", "url": url}})
    mapping = mapped(bundle)
    assert types(mapping) == ["DoseTaken", "DoseSkipped"]
    [problem] = mapping.problems
    assert problem.path == f"Bundle.entry[{index}].request"
    assert problem.error_type == "FhirUnmappable"
    assert "DELETE" in problem.reason
    assert "rx-0" not in problem.reason
    assert "ms-7" not in problem.reason


def test_a_bundle_with_one_bad_entry_keeps_the_good_entries() -> None:
    mapping = mapped(fx.bundle_with_one_bad_entry())
    assert types(mapping) == [
        "MedicationPrescribed",
        "ScheduleSet",
        "MedicationPrescribed",
        "ScheduleSet",
    ]
    assert [(p.path, p.error_type) for p in mapping.problems] == [
        ("Bundle.entry[2].resource.dosageInstruction[0].timing.repeat.frequency", "FhirInvalid")
    ]


def test_entries_of_unknown_types_and_a_malformed_bundle_are_invalid() -> None:
    bundle = fx.dispense_bundle()
    bundle["entry"].append({"resource": {"resourceType": "Prescription", "id": "x"}})
    mapping = mapped(bundle)
    assert types(mapping) == ["RefillDispensed"]
    assert [(p.path, p.error_type) for p in mapping.problems] == [
        ("Bundle.entry[2].resource.resourceType", "FhirInvalid")
    ]
    problem = only_problem(mapped({"resourceType": "Bundle", "type": "collection", "entry": {}}))
    assert (problem.path, problem.error_type) == ("Bundle.entry", "FhirInvalid")


# --- every unmappable case, with its path ---------------------------------------------------

UNMAPPABLE: list[Any] = [
    (fx.prn_request, "MedicationRequest.dosageInstruction[0].asNeededBoolean", "FhirUnmappable"),
    (
        fx.prn_codeable_request,
        "MedicationRequest.dosageInstruction[0].asNeededCodeableConcept",
        "FhirUnmappable",
    ),
    (
        fx.every_two_days_request,
        "MedicationRequest.dosageInstruction[0].timing.repeat.period",
        "FhirUnmappable",
    ),
    (
        fx.count_limited_request,
        "MedicationRequest.dosageInstruction[0].timing.repeat.count",
        "FhirUnmappable",
    ),
    (
        fx.duration_request,
        "MedicationRequest.dosageInstruction[0].timing.repeat.duration",
        "FhirUnmappable",
    ),
    (
        fx.events_and_repeat_request,
        "MedicationRequest.dosageInstruction[0].timing.event",
        "FhirUnmappable",
    ),
    (fx.unit_mismatch_request, "MedicationRequest.dispenseRequest.quantity", "FhirUnmappable"),
    (fx.dispense_unit_mismatch, "Bundle.entry[1].resource.quantity", "FhirUnmappable"),
    (
        fx.medication_without_code_request,
        "MedicationRequest.medicationCodeableConcept",
        "FhirUnmappable",
    ),
    (fx.missing_patient_dispense, "MedicationDispense.subject", "FhirUnmappable"),
    (fx.missing_patient_request, "MedicationRequest.subject", "FhirInvalid"),
    (fx.unlinked_dispense, "MedicationDispense.authorizingPrescription", "FhirUnmappable"),
    (fx.unlinked_administration, "MedicationAdministration.request", "FhirUnmappable"),
    (fx.unlinked_statement, "MedicationStatement.basedOn", "FhirUnmappable"),
    (
        fx.invalid_fhir_request,
        "MedicationRequest.dosageInstruction[0].timing.repeat.frequency",
        "FhirInvalid",
    ),
    (fx.not_json, "record", "FhirInvalid"),
    (fx.unsupported_resource, "Observation", "FhirUnsupported"),
    (fx.no_time_request, "MedicationRequest.authoredOn", "FhirUnmappable"),
]


@pytest.mark.parametrize(
    ("example", "path", "error_type"), UNMAPPABLE, ids=[case[0].__name__ for case in UNMAPPABLE]
)
def test_each_unmappable_case_is_a_problem_at_its_path(
    example: Callable[[], Any], path: str, error_type: str
) -> None:
    problems = [p for p in mapped(example()).problems]
    assert [(p.path, p.error_type) for p in problems] == [(path, error_type)]
    assert problems[0].reason


@pytest.mark.parametrize(
    ("value", "path"),
    [
        (b"[1, 2]", "record"),
        (b"\xff\xfe", "record"),
        (b'{"id": "x"}', "resourceType"),
        (b'{"resourceType": "NoSuchThing"}', "resourceType"),
        (b'{"resourceType": 7}', "resourceType"),
    ],
)
def test_records_that_are_no_fhir_resource_are_invalid(value: bytes, path: str) -> None:
    problem = only_problem(mapped(value))
    assert (problem.path, problem.error_type) == (path, "FhirInvalid")


def test_a_top_level_context_resource_is_unsupported() -> None:
    problem = only_problem(mapped(fx.patient()))
    assert (problem.path, problem.error_type) == ("Patient", "FhirUnsupported")


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"medicationReference": {"reference": "Medication/elsewhere"}}, "medicationReference"),
        (
            {
                "medicationCodeableConcept": {
                    "coding": [{"system": fx.RXNORM, "code": "abc", "display": "x"}]
                }
            },
            "medicationCodeableConcept",
        ),
        ({"dispenseRequest": {"numberOfRepeatsAllowed": 1}}, "dispenseRequest.quantity"),
        ({"dosageInstruction": []}, "dosageInstruction"),
    ],
)
def test_more_request_shapes_that_cannot_be_mapped(changes: dict[str, Any], path: str) -> None:
    resource = fx.medication_request(**changes)
    if "medicationReference" in changes:
        del resource["medicationCodeableConcept"]
    if changes.get("dosageInstruction") == []:
        del resource["dosageInstruction"]
    problem = only_problem(mapped(resource))
    assert problem.path == f"MedicationRequest.{path}"


def test_a_dose_range_is_not_mapped() -> None:
    resource = fx.medication_request()
    resource["dosageInstruction"][0]["doseAndRate"][0] = {
        "doseRange": {"low": {"value": 1, "unit": "tablet"}, "high": {"value": 2, "unit": "tablet"}}
    }
    problem = only_problem(mapped(resource))
    assert problem.path == "MedicationRequest.dosageInstruction[0].doseAndRate[0].doseQuantity"


# --- determinism ---------------------------------------------------------------------------


def event_ids(resource: dict[str, Any]) -> list[str]:
    return [event["event_id"] for event in mapped(resource).events]


def test_the_same_resource_sent_again_gives_identical_events() -> None:
    first = mapped(fx.medication_request_bundle())
    again = mapped(fx.medication_request_bundle())
    assert first.events == again.events
    reordered = json.loads(json.dumps(fx.medication_request_bundle(), sort_keys=True))
    assert event_ids(reordered) == [event["event_id"] for event in first.events]
    ids = [event["event_id"] for event in first.events]
    assert len(set(ids)) == len(ids)


def test_a_changed_resource_gives_new_ids() -> None:
    before = event_ids(fx.medication_request())
    dose = fx.medication_request()
    dose["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] = 2
    after_dose = event_ids(dose)
    assert after_dose[0] != before[0]  # the prescription changed
    assert after_dose[1] == before[1]  # the schedule did not
    times = fx.medication_request()
    times["dosageInstruction"][0]["timing"]["repeat"]["frequency"] = 3
    assert event_ids(times)[1] != before[1]
    stopped = event_ids(fx.stopped_request())
    assert not set(stopped) & set(before)
    on_hold = event_ids(fx.on_hold_request())
    assert not set(on_hold) & set(before)


def test_a_resource_without_id_is_named_by_its_fullurl_or_its_content() -> None:
    dispense = fx.dispense()
    del dispense["id"]
    assert event_ids(dispense) == event_ids(copy.deepcopy(dispense))
    changed = copy.deepcopy(dispense)
    changed["note"] = [{"text": "another note"}]
    assert event_ids(changed) != event_ids(dispense)  # other content, other identity
    in_bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": "urn:uuid:4f3e2d1c-0000-4000-8000-000000000009", "resource": dispense}
        ],
    }
    bundle_ids = event_ids(in_bundle)
    in_bundle["entry"][0]["resource"] = changed
    assert event_ids(in_bundle) == bundle_ids  # same fullUrl, same mapped content
    assert event_ids(dispense) != bundle_ids


def test_the_same_resource_id_in_another_type_gives_other_ids() -> None:
    taken = fx.administration(id="same-id")
    statement = fx.statement(id="same-id", effectiveDateTime="2026-12-02T09:03:00-05:00")
    assert event_ids(taken) != event_ids(statement)


# --- no patient data in problems -----------------------------------------------------------


def every_example() -> list[Any]:
    examples: list[Any] = [case[0]() for case in UNMAPPABLE]
    examples += [fx.medication_request_bundle(), fx.bundle_with_one_bad_entry()]
    leaky = fx.medication_request(subject={"reference": f"Patient/{fx.PATIENT_ID}"})
    leaky["dosageInstruction"][0]["timing"]["repeat"]["periodUnit"] = fx.PATIENT_FAMILY
    examples.append(leaky)
    names = fx.medication_request(
        subject={"reference": f"Group/{fx.PATIENT_MRN}", "display": fx.PATIENT_GIVEN}
    )
    examples.append(names)
    bad_patient = fx.medication_request_bundle()
    bad_patient["entry"][0]["resource"]["birthDate"] = fx.PATIENT_FAMILY
    bad_patient["entry"][0]["resource"]["extension"][1]["valueCode"] = fx.PATIENT_GIVEN
    examples.append(bad_patient)
    rules_miss = fx.medication_request_bundle()
    examples.append(rules_miss)
    return examples


@pytest.mark.parametrize(
    "rules",
    [RULES, FhirRules.from_settings(Settings(fhir_patient_identifier_system="urn:none"))],
)
def test_no_problem_path_or_reason_contains_patient_data(rules: FhirRules) -> None:
    problems = [
        problem
        for example in every_example()
        for problem in map_fhir_record(
            example if isinstance(example, bytes) else fx.record(example), rules
        ).problems
    ]
    assert len(problems) >= len(UNMAPPABLE)
    for problem in problems:
        for secret in fx.PATIENT_SECRETS:
            assert secret not in problem.path, problem
            assert secret not in problem.reason, problem


def test_a_library_message_that_echoes_a_value_is_scrubbed() -> None:
    raw = fx.medication_request()
    problem = _problem(
        "MedicationRequest", "FhirInvalid", f"bad value {fx.FREE_TEXT} for {fx.PATIENT_ID}", raw
    )
    assert fx.FREE_TEXT not in problem.reason
    assert fx.PATIENT_ID not in problem.reason
    kept = _problem("MedicationRequest.status", "FhirUnsupported", "status active here", raw)
    assert kept.reason == "status active here"  # a FHIR code is not redacted


# --- units, robustness ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dispensed", "agrees"),
    [
        ({"value": 30, "unit": "tablet"}, True),  # text against UCUM {tbl} "tablet"
        ({"value": 30, "unit": "Tablet "}, True),
        ({"value": 30, "system": fx.UCUM, "code": "{tbl}"}, True),
        ({"value": 30}, True),  # no unit: read in the dose unit
        ({"value": 30, "system": fx.UCUM, "code": "mL", "unit": "tablet"}, False),  # UCUM decides
        ({"value": 30, "unit": "capsule"}, False),
    ],
)
def test_units_agree_by_ucum_code_or_by_name(dispensed: dict[str, Any], agrees: bool) -> None:
    bundle = fx.dispense_unit_mismatch()
    bundle["entry"][1]["resource"]["quantity"] = dispensed
    refills = [e for e in mapped(bundle).events if e["event_type"] == "RefillDispensed"]
    assert bool(refills) == agrees


def test_a_supply_in_text_units_agrees_with_a_ucum_dose() -> None:
    resource = fx.medication_request()
    resource["dispenseRequest"]["quantity"] = {"value": 60, "unit": "tablets"}
    assert only_problem(mapped(resource)).path == "MedicationRequest.dispenseRequest.quantity"
    resource["dispenseRequest"]["quantity"] = {"value": 60, "unit": "TABLET"}
    assert types(mapped(resource)) == ["MedicationPrescribed", "ScheduleSet"]


@pytest.mark.parametrize(
    "value",
    [
        b'{"resourceType": "MedicationRequest", "x": NaN}',
        b'{"resourceType": "MedicationRequest", "x": Infinity}',
        b"[" * 100_000 + b"]" * 100_000,
        b"",
        b"null",
    ],
)
def test_nothing_strange_makes_the_mapper_raise(value: bytes) -> None:
    problem = only_problem(mapped(value))
    assert problem.error_type == "FhirInvalid"


def test_an_empty_identifier_system_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="identifier system"):
        Settings(fhir_patient_identifier_system=" ")


def _leaf_paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in _leaf_paths(item, (*prefix, key))]
    if isinstance(value, list):
        return [p for index, item in enumerate(value) for p in _leaf_paths(item, (*prefix, index))]
    return [prefix]


EXAMPLES = [
    fx.medication_request_bundle,
    fx.dispense_bundle,
    fx.administration_bundle,
    fx.statement_bundle,
    fx.contained_medication_request,
]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=5,
)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_a_mutated_export_never_makes_the_mapper_raise(data: st.DataObject) -> None:
    example = data.draw(st.sampled_from(EXAMPLES))()
    path = data.draw(st.sampled_from(_leaf_paths(example)))
    target = example
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = data.draw(JSON_VALUES)
    mapping = mapped(example)  # validates every event against the contract
    for problem in mapping.problems:
        assert problem.path
        assert problem.reason
        assert problem.error_type.startswith("Fhir")
        assert "could not be mapped" not in problem.reason, problem


def test_the_same_meaning_written_another_way_gives_the_same_ids() -> None:
    before = event_ids(fx.medication_request())
    other = fx.medication_request(authoredOn="2026-11-30T14:12:00Z")  # same instant, UTC
    other["dispenseRequest"]["quantity"]["value"] = 60.0
    assert event_ids(other) == before
