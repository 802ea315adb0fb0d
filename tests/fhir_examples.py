"""FHIR R4 JSON examples shaped like real EHR exports, shared by the unit and integration tests.

Each function returns a fresh dict (or bytes, for records that are not JSON); ``record()``
makes a Kafka record value of one. The patient's data (PATIENT_* below) must never appear
in a problem's path or reason.
"""

from __future__ import annotations

import json
from typing import Any

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
NDC = "http://hl7.org/fhir/sid/ndc"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
MRN_SYSTEM = "urn:oid:2.16.840.1.113883.3.4424.1.1"
SSN_SYSTEM = "http://hl7.org/fhir/sid/us-ssn"

PATIENT_ID = "pat-48213"
PATIENT_MRN = "MRN-7730415"
PATIENT_SSN = "999-41-7702"
PATIENT_FAMILY = "Marchetti"
PATIENT_GIVEN = "Rosalind"
PATIENT_PHONE = "+1-617-555-0143"
FREE_TEXT = "Rosalind asked to take it with orange juice"
PATIENT_SECRETS = (
    PATIENT_ID,
    PATIENT_MRN,
    PATIENT_SSN,
    PATIENT_FAMILY,
    PATIENT_GIVEN,
    PATIENT_PHONE,
    FREE_TEXT,
)
REQUEST_ID = "rx-1001"
PATIENT_URL = "urn:uuid:5f0c4d7e-0d7b-4b8e-9a61-1d3f0d5c2b11"
MEDICATION_URL = "urn:uuid:0a8e2f64-3c51-47f6-9b2e-8f7d6c5b4a39"
REQUEST_URL = "urn:uuid:c2b7a1d4-6e0f-4d3a-8b9c-7e6f5d4c3b2a"
BASE = "https://ehr.example.org/fhir"


def record(resource: dict[str, Any]) -> bytes:
    """The Kafka record value of a resource or Bundle."""
    return json.dumps(resource).encode()


def patient(timezone: str | None = "America/New_York") -> dict[str, Any]:
    """A Patient as EHRs export it: identifiers, name, telecom, a vendor extension."""
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": PATIENT_ID,
        "meta": {"lastUpdated": "2026-11-30T08:00:00Z"},
        "extension": [
            {
                "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex",
                "valueCode": "F",
            }
        ],
        "identifier": [
            {
                "use": "usual",
                "type": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}
                    ]
                },
                "system": MRN_SYSTEM,
                "value": PATIENT_MRN,
            },
            {"system": SSN_SYSTEM, "value": PATIENT_SSN},
        ],
        "name": [{"use": "official", "family": PATIENT_FAMILY, "given": [PATIENT_GIVEN]}],
        "telecom": [{"system": "phone", "value": PATIENT_PHONE, "use": "mobile"}],
        "gender": "female",
        "birthDate": "1951-04-17",
    }
    if timezone is not None:
        resource["extension"].append(
            {
                "url": "http://hl7.org/fhir/StructureDefinition/patient-timezone",
                "valueCode": timezone,
            }
        )
    return resource


def lisinopril_concept() -> dict[str, Any]:
    """Several codings (NDC, RxNorm SCD, SNOMED), as EHRs send them."""
    return {
        "coding": [
            {"system": NDC, "code": "68180-0514-01", "display": "Lisinopril 10mg Tab"},
            {"system": RXNORM, "code": "314076", "display": "lisinopril 10 MG Oral Tablet"},
            {"system": SNOMED, "code": "386873009", "display": "Lisinopril"},
        ],
        "text": "Lisinopril 10 mg oral tablet",
    }


def medication_request(**changes: Any) -> dict[str, Any]:
    """An active MedicationRequest: one tablet twice a day, 60 tablets, 3 refills."""
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": REQUEST_ID,
        "meta": {"lastUpdated": "2026-11-30T09:15:00Z"},
        "extension": [
            {
                "url": "http://ehr.example.org/fhir/StructureDefinition/order-source",
                "valueString": "CPOE",
            }
        ],
        "identifier": [{"system": "http://ehr.example.org/orders", "value": "ORD-99812"}],
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": lisinopril_concept(),
        "subject": {
            "reference": f"Patient/{PATIENT_ID}",
            "display": f"{PATIENT_GIVEN} {PATIENT_FAMILY}",
        },
        "authoredOn": "2026-11-30T09:12:00-05:00",
        "requester": {"reference": "Practitioner/pr-77", "display": "Dr. Okafor"},
        "note": [{"text": FREE_TEXT}],
        "dosageInstruction": [
            {
                "sequence": 1,
                "text": "Take 1 tablet by mouth twice daily",
                "patientInstruction": FREE_TEXT,
                "timing": {
                    "repeat": {
                        "boundsPeriod": {"start": "2026-12-01", "end": "2027-02-28"},
                        "frequency": 2,
                        "period": 1,
                        "periodUnit": "d",
                    },
                    "code": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation",
                                "code": "BID",
                            }
                        ]
                    },
                },
                "route": {
                    "coding": [{"system": SNOMED, "code": "26643006", "display": "Oral route"}]
                },
                "doseAndRate": [
                    {
                        "type": {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/dose-rate-type",
                                    "code": "ordered",
                                }
                            ]
                        },
                        "doseQuantity": {
                            "value": 1,
                            "unit": "tablet",
                            "system": UCUM,
                            "code": "{tbl}",
                        },
                    }
                ],
            }
        ],
        "dispenseRequest": {
            "validityPeriod": {"start": "2026-11-30", "end": "2027-11-30"},
            "numberOfRepeatsAllowed": 3,
            "quantity": {"value": 60, "unit": "tablet", "system": UCUM, "code": "{tbl}"},
            "expectedSupplyDuration": {"value": 30, "unit": "days", "system": UCUM, "code": "d"},
        },
    }
    resource.update(changes)
    return resource


def medication() -> dict[str, Any]:
    """A Medication resource (in a Bundle, or contained)."""
    return {
        "resourceType": "Medication",
        "id": "med-metformin",
        "code": {
            "coding": [
                {"system": NDC, "code": "65162-0175-10"},
                {
                    "system": RXNORM,
                    "code": "861007",
                    "display": "metformin hydrochloride 500 MG Oral Tablet",
                },
            ]
        },
        "form": {"coding": [{"system": SNOMED, "code": "385055001", "display": "Tablet"}]},
    }


def medication_request_bundle() -> dict[str, Any]:
    """A transaction Bundle: the Patient, a Medication and two active MedicationRequests, one
    coded inline (BID), one naming the Bundle's Medication by fullUrl (morning and evening)."""
    metformin = medication_request(
        id="rx-1002",
        medicationReference={"reference": MEDICATION_URL},
        subject={"reference": PATIENT_URL},
    )
    del metformin["medicationCodeableConcept"]
    metformin["dosageInstruction"][0]["timing"] = {
        "repeat": {"when": ["CM", "CV"], "boundsPeriod": {"start": "2026-12-01"}}
    }
    return {
        "resourceType": "Bundle",
        "id": "bundle-tx-1",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": PATIENT_URL,
                "resource": patient(),
                "request": {"method": "PUT", "url": f"Patient/{PATIENT_ID}"},
            },
            {
                "fullUrl": MEDICATION_URL,
                "resource": medication(),
                "request": {"method": "PUT", "url": "Medication/med-metformin"},
            },
            {
                "fullUrl": REQUEST_URL,
                "resource": medication_request(),
                "request": {"method": "PUT", "url": f"MedicationRequest/{REQUEST_ID}"},
            },
            {
                "fullUrl": "urn:uuid:9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a",
                "resource": metformin,
                "request": {"method": "PUT", "url": "MedicationRequest/rx-1002"},
            },
        ],
    }


def stopped_request() -> dict[str, Any]:
    """A MedicationRequest, alone, that was stopped."""
    return medication_request(
        status="stopped",
        statusReason={"text": FREE_TEXT},
        meta={"lastUpdated": "2026-12-10T14:00:00Z"},
    )


def on_hold_request() -> dict[str, Any]:
    return medication_request(status="on-hold")


def contained_medication_request() -> dict[str, Any]:
    """A MedicationRequest whose Medication is contained (``#med1``)."""
    resource = medication_request(
        id="rx-1003",
        contained=[{**medication(), "id": "med1"}],
        medicationReference={"reference": "#med1"},
    )
    del resource["medicationCodeableConcept"]
    return resource


def dispense(**changes: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "MedicationDispense",
        "id": "disp-5501",
        "contained": [{**medication(), "id": "m"}],
        "status": "completed",
        "medicationReference": {"reference": "#m"},
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "authorizingPrescription": [{"reference": f"MedicationRequest/{REQUEST_ID}"}],
        "type": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "RF"}]
        },
        "quantity": {"value": 60, "unit": "tablet", "system": UCUM, "code": "{tbl}"},
        "daysSupply": {"value": 30, "unit": "day", "system": UCUM, "code": "d"},
        "whenHandedOver": "2026-12-02T16:40:00-05:00",
        "note": [{"text": FREE_TEXT}],
    }
    resource.update(changes)
    return resource


def dispense_bundle() -> dict[str, Any]:
    """A collection Bundle: the Patient and a completed MedicationDispense."""
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": f"{BASE}/Patient/{PATIENT_ID}", "resource": patient()},
            {"fullUrl": f"{BASE}/MedicationDispense/disp-5501", "resource": dispense()},
        ],
    }


def administration(**changes: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "MedicationAdministration",
        "id": "adm-301",
        "status": "completed",
        "medicationCodeableConcept": lisinopril_concept(),
        "subject": {"reference": f"{BASE}/Patient/{PATIENT_ID}"},
        "effectiveDateTime": "2026-12-02T09:03:00-05:00",
        "request": {"reference": f"MedicationRequest/{REQUEST_ID}"},
        "performer": [{"actor": {"reference": "Practitioner/pr-12", "display": "RN Adeyemi"}}],
        "dosage": {
            "text": FREE_TEXT,
            "route": {"coding": [{"system": SNOMED, "code": "26643006"}]},
            "dose": {"value": 1, "unit": "tablet", "system": UCUM, "code": "{tbl}"},
        },
    }
    resource.update(changes)
    return resource


def administration_bundle() -> dict[str, Any]:
    """A searchset Bundle: a dose given, a dose not given (with a reason), and the Patient
    included."""
    not_done = administration(
        id="adm-302",
        status="not-done",
        statusReason=[
            {
                "coding": [
                    {"system": SNOMED, "code": "182895007", "display": "Drug declined by patient"}
                ]
            }
        ],
        effectiveDateTime="2026-12-02T21:05:00-05:00",
    )
    del not_done["dosage"]
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": 2,
        "link": [{"relation": "self", "url": f"{BASE}/MedicationAdministration?patient=x"}],
        "entry": [
            {
                "fullUrl": f"{BASE}/MedicationAdministration/adm-301",
                "resource": administration(),
                "search": {"mode": "match"},
            },
            {
                "fullUrl": f"{BASE}/MedicationAdministration/adm-302",
                "resource": not_done,
                "search": {"mode": "match"},
            },
            {
                "fullUrl": f"{BASE}/Patient/{PATIENT_ID}",
                "resource": patient(),
                "search": {"mode": "include"},
            },
        ],
    }


def statement(**changes: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "MedicationStatement",
        "id": "stmt-71",
        "status": "completed",
        "basedOn": [{"reference": f"MedicationRequest/{REQUEST_ID}"}],
        "medicationCodeableConcept": lisinopril_concept(),
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "effectiveDateTime": "2026-12-03T08:10:00-05:00",
        "dateAsserted": "2026-12-03T12:00:00-05:00",
        "informationSource": {"reference": f"Patient/{PATIENT_ID}"},
        "note": [{"text": FREE_TEXT}],
    }
    resource.update(changes)
    return resource


def statement_bundle() -> dict[str, Any]:
    """A collection Bundle: a dose reported taken and one reported not taken."""
    not_taken = statement(
        id="stmt-72",
        status="not-taken",
        statusReason=[{"text": "felt dizzy"}],
        effectiveDateTime="2026-12-03T20:00:00-05:00",
    )
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": f"{BASE}/MedicationStatement/stmt-71", "resource": statement()},
            {"fullUrl": f"{BASE}/MedicationStatement/stmt-72", "resource": not_taken},
        ],
    }


# --- one per unmappable case (each with the path of its problem in tests) ---------------


def _with_timing(repeat: dict[str, Any], **dosage: Any) -> dict[str, Any]:
    resource = medication_request()
    resource["dosageInstruction"][0]["timing"] = {"repeat": repeat}
    resource["dosageInstruction"][0].update(dosage)
    return resource


def prn_request() -> dict[str, Any]:
    """As needed (asNeededBoolean), no timing."""
    resource = medication_request()
    del resource["dosageInstruction"][0]["timing"]
    resource["dosageInstruction"][0]["asNeededBoolean"] = True
    return resource


def prn_codeable_request() -> dict[str, Any]:
    """As needed for a reason (asNeededCodeableConcept), a timing with no times."""
    resource = medication_request()
    resource["dosageInstruction"][0]["timing"] = {
        "repeat": {"boundsPeriod": {"start": "2026-12-01"}}
    }
    resource["dosageInstruction"][0]["asNeededCodeableConcept"] = {
        "coding": [{"system": SNOMED, "code": "22253000", "display": "Pain"}]
    }
    return resource


def every_two_days_request() -> dict[str, Any]:
    return _with_timing({"frequency": 1, "period": 2, "periodUnit": "d"})


def count_limited_request() -> dict[str, Any]:
    return _with_timing({"frequency": 2, "period": 1, "periodUnit": "d", "count": 10})


def duration_request() -> dict[str, Any]:
    return _with_timing(
        {"frequency": 1, "period": 1, "periodUnit": "d", "duration": 30, "durationUnit": "min"}
    )


def events_and_repeat_request() -> dict[str, Any]:
    resource = medication_request()
    resource["dosageInstruction"][0]["timing"] = {
        "event": ["2026-12-01T08:00:00-05:00"],
        "repeat": {"frequency": 2, "period": 1, "periodUnit": "d"},
    }
    return resource


def unit_mismatch_request() -> dict[str, Any]:
    """Dose in tablets, supply in mL."""
    resource = medication_request()
    resource["dispenseRequest"]["quantity"] = {
        "value": 150,
        "unit": "mL",
        "system": UCUM,
        "code": "mL",
    }
    return resource


def dispense_unit_mismatch() -> dict[str, Any]:
    """A dispense in mL of a prescription dosed in tablets (the request in the Bundle)."""
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": f"{BASE}/MedicationRequest/{REQUEST_ID}", "resource": medication_request()},
            {
                "fullUrl": f"{BASE}/MedicationDispense/disp-5501",
                "resource": dispense(quantity={"value": 100, "unit": "milliliter"}),
            },
        ],
    }


def medication_without_code_request() -> dict[str, Any]:
    """A medicationCodeableConcept with a coding that has neither code nor display, no text."""
    return medication_request(medicationCodeableConcept={"coding": [{"system": NDC}]})


def missing_patient_dispense() -> dict[str, Any]:
    """A MedicationDispense without subject (0..1 in R4)."""
    resource = dispense()
    del resource["subject"]
    return resource


def missing_patient_request() -> dict[str, Any]:
    """A MedicationRequest without subject (1..1: fhir.resources refuses it)."""
    resource = medication_request()
    del resource["subject"]
    return resource


def unlinked_dispense() -> dict[str, Any]:
    resource = dispense()
    del resource["authorizingPrescription"]
    return resource


def unlinked_administration() -> dict[str, Any]:
    resource = administration()
    del resource["request"]
    return resource


def unlinked_statement() -> dict[str, Any]:
    """basedOn names a CarePlan, no MedicationRequest."""
    return statement(basedOn=[{"reference": "CarePlan/cp-4"}])


def invalid_fhir_request() -> dict[str, Any]:
    """frequency must be a positiveInt: fhir.resources refuses the string."""
    return _with_timing({"frequency": PATIENT_GIVEN, "period": 1, "periodUnit": "d"})


def not_json() -> bytes:
    return b"MSH|^~\\&|EHR|" + PATIENT_FAMILY.encode() + b"|\r"


def unsupported_resource() -> dict[str, Any]:
    """A top-level Observation: not a medication resource."""
    return {
        "resourceType": "Observation",
        "id": "obs-1",
        "status": "final",
        "code": {"text": "Blood pressure"},
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
    }


def no_time_request() -> dict[str, Any]:
    """Neither authoredOn nor meta.lastUpdated."""
    resource = medication_request()
    del resource["authoredOn"]
    del resource["meta"]
    return resource


def bundle_with_one_bad_entry() -> dict[str, Any]:
    """A Bundle whose third entry fhir.resources refuses; the others map."""
    bundle = medication_request_bundle()
    bad = medication_request(id="rx-bad")
    bad["dosageInstruction"][0]["timing"]["repeat"]["frequency"] = "twice"
    bundle["entry"].insert(
        2, {"fullUrl": "urn:uuid:1b2c3d4e-0000-4000-8000-000000000001", "resource": bad}
    )
    return bundle
