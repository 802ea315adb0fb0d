"""FHIR scenarios of one patient for the intake's agent and integration tests: warfarin with
aspirin (an interaction), metformin running out (refill alerts), each resource type as EHR and
pharmacy exports have them (several codings, extensions, a contained Medication), and one
record per unmappable case with the FHIR path its dead letter must name."""

from __future__ import annotations

import json
from typing import Any

from tests.fhir_examples import NDC, RXNORM, UCUM

PATIENT = "fhir-p1"
MRN = "urn:oid:2.16.840.1.113883.19.5"


def _tablets(value: float) -> dict[str, Any]:
    return {"value": value, "unit": "tablet", "system": UCUM, "code": "{tbl}"}


def request(
    request_id: str,
    medication: dict[str, Any],
    *,
    status: str = "active",
    repeat: dict[str, Any] | None = None,
    dose: float = 1,
    supply: float = 30,
    repeats: int = 2,
    authored: str = "2026-11-30T09:00:00Z",
    patient_id: str = PATIENT,
) -> dict[str, Any]:
    """A MedicationRequest as an EHR exports it: identifiers, an extension, a dosage with a
    text, timing and dose, and a dispense request."""
    return {
        "resourceType": "MedicationRequest",
        "id": request_id,
        "meta": {"versionId": "1", "lastUpdated": authored},
        "extension": [
            {
                "url": "http://example.org/fhir/StructureDefinition/order-source",
                "valueString": "cpoe",
            }
        ],
        "identifier": [{"system": "urn:oid:1.2.3.4.5", "value": f"order-{request_id}"}],
        "status": status,
        "intent": "order",
        "subject": {"reference": f"Patient/{patient_id}", "display": "Ada Example"},
        "authoredOn": authored,
        **medication,
        "dosageInstruction": [
            {
                "text": "take as directed",
                "timing": {"repeat": repeat or {"frequency": 1, "period": 1, "periodUnit": "d"}},
                "doseAndRate": [{"doseQuantity": _tablets(dose)}],
            }
        ],
        "dispenseRequest": {"quantity": _tablets(supply), "numberOfRepeatsAllowed": repeats},
    }


def coded(rxnorm: str, display: str, text: str) -> dict[str, Any]:
    """``medicationCodeableConcept`` with an NDC coding before the RxNorm one."""
    return {
        "medicationCodeableConcept": {
            "coding": [
                {"system": NDC, "code": "00093-0058-01", "display": display},
                {"system": RXNORM, "code": rxnorm, "display": display},
            ],
            "text": text,
        }
    }


def entry(resource: dict[str, Any]) -> dict[str, Any]:
    return {
        "fullUrl": f"urn:uuid:{resource['resourceType'].lower()}-{resource['id']}",
        "resource": resource,
        "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"},
    }


def bundle(*resources: dict[str, Any], kind: str = "transaction") -> bytes:
    return json.dumps(
        {"resourceType": "Bundle", "type": kind, "entry": [entry(r) for r in resources]}
    ).encode()


def patient(patient_id: str = PATIENT) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": patient_id,
        "identifier": [{"system": MRN, "value": "MRN-000042"}],
        "name": [{"family": "Example", "given": ["Ada"]}],
        "birthDate": "1950-01-01",
    }


def warfarin(**changes: Any) -> dict[str, Any]:
    return request(
        "mr-warfarin",
        coded("11289", "warfarin", "Warfarin sodium 5 mg tablet"),
        repeat={"frequency": 1, "period": 1, "periodUnit": "d", "timeOfDay": ["20:00:00"]},
        **changes,
    )


def aspirin() -> dict[str, Any]:
    # The medication as a contained resource, referenced from the request.
    medication = {
        "contained": [
            {
                "resourceType": "Medication",
                "id": "med-asa",
                "code": {
                    "coding": [{"system": RXNORM, "code": "1191", "display": "aspirin"}],
                    "text": "Aspirin 81 mg chewable tablet",
                },
            }
        ],
        "medicationReference": {"reference": "#med-asa"},
    }
    return request("mr-aspirin", medication, repeat={"when": ["MORN"]}, supply=90)


def metformin() -> dict[str, Any]:
    return request(
        "mr-metformin",
        coded("6809", "metformin", "Metformin 500 mg tablet"),
        repeat={"frequency": 2, "period": 1, "periodUnit": "d"},
        supply=2,
        repeats=0,
    )


def administration(
    admin_id: str, request_id: str, *, status: str = "completed", patient_id: str = PATIENT
) -> dict[str, Any]:
    return {
        "resourceType": "MedicationAdministration",
        "id": admin_id,
        "status": status,
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "6809"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": "2026-12-01T08:05:00Z",
        "request": {"reference": f"MedicationRequest/{request_id}"},
        "dosage": {"dose": _tablets(1)},
    }


def dispense() -> dict[str, Any]:
    return {
        "resourceType": "MedicationDispense",
        "id": "md-warfarin-1",
        "status": "completed",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "11289"}]},
        "subject": {"reference": f"Patient/{PATIENT}"},
        "authorizingPrescription": [{"reference": "MedicationRequest/mr-warfarin"}],
        "quantity": _tablets(30),
        "whenHandedOver": "2026-12-01T10:00:00Z",
    }


def statement_not_taken() -> dict[str, Any]:
    return {
        "resourceType": "MedicationStatement",
        "id": "ms-aspirin-1",
        "status": "not-taken",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "1191"}]},
        "subject": {"reference": f"Patient/{PATIENT}"},
        "basedOn": [{"reference": "MedicationRequest/mr-aspirin"}],
        "effectiveDateTime": "2026-12-01T08:30:00Z",
        "dateAsserted": "2026-12-01T12:00:00Z",
    }


def unmappable() -> dict[str, tuple[bytes, str]]:
    """Each case: the record, and the FHIR path its dead letter must name."""
    prn = warfarin()
    prn["dosageInstruction"][0] = {
        "asNeededBoolean": True,
        "doseAndRate": [{"doseQuantity": _tablets(1)}],
    }
    every_other_day = request(
        "mr-eod",
        coded("11289", "warfarin", "Warfarin"),
        repeat={"frequency": 1, "period": 2, "periodUnit": "d"},
    )
    other_unit = metformin()
    other_unit["dispenseRequest"]["quantity"] = {
        "value": 500,
        "unit": "mL",
        "system": UCUM,
        "code": "mL",
    }
    nameless = request("mr-nameless", {"medicationCodeableConcept": {"coding": [{"system": NDC}]}})
    return {
        "prn": (bundle(prn), "dosageInstruction[0]"),
        "every other day": (bundle(every_other_day), "timing.repeat"),
        "unit": (bundle(other_unit), "dispenseRequest.quantity"),
        "no code or text": (bundle(nameless), "medicationCodeableConcept"),
        "not FHIR": (b'{"resourceType": "MedicationRequest", "status": 42}', "MedicationRequest"),
        "not JSON": (b"\xff not json", ""),
        # A deleted order names no patient: it cannot end the reminders, the operator must see it.
        "deleted": (deleted("MedicationRequest/mr-warfarin"), "Bundle.entry[0].request"),
    }


def deleted(url: str) -> bytes:
    """A transaction Bundle deleting one resource."""
    return json.dumps(
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"request": {"method": "DELETE", "url": url}}],
        }
    ).encode()
