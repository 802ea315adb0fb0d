"""From a FHIR Bundle to a reminder: an EHR's MedicationRequest in, medstream's ReminderDue out.

    python examples/fhir_bundle_to_reminder.py PATIENT_ID [--lead SECONDS] [--timeout SECONDS]

Builds a FHIR R4 transaction Bundle as an EHR exports it (the Patient, and an active
MedicationRequest for metformin with RxNorm and NDC codings, a dose, a dispense request and a
daily timeOfDay --lead seconds from now, in UTC), publishes it to fhir-resources with the typed
client (mapped first exactly as the worker will map it), then waits in the downstream group for
the ReminderDue of that dose and prints it. Needs a running worker; the brokers, security and
topic prefix come from the MEDSTREAM_* environment (docs/client.md, docs/fhir.md).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from streams.client import Publisher, Subscriber
from streams.contracts.models import ReminderDue
from streams.settings import Settings

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
NDC = "http://hl7.org/fhir/sid/ndc"
UCUM = "http://unitsofmeasure.org"


def tablets(value: float) -> dict[str, Any]:
    return {"value": value, "unit": "tablet", "system": UCUM, "code": "{tbl}"}


def bundle(patient_id: str, request_id: str, due: datetime) -> dict[str, Any]:
    """A Patient and one MedicationRequest whose daily dose is at ``due`` (UTC)."""
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": patient_id,
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.19.5", "value": f"MRN-{patient_id}"}],
    }
    request: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": request_id,
        "status": "active",
        "intent": "order",
        "subject": {"reference": f"Patient/{patient_id}"},
        "authoredOn": datetime.now(UTC).isoformat(timespec="seconds"),
        "medicationCodeableConcept": {
            "coding": [
                {"system": NDC, "code": "00093-1048-01", "display": "Metformin 500 mg"},
                {"system": RXNORM, "code": "6809", "display": "metformin"},
            ],
            "text": "Metformin 500 mg tablet",
        },
        "dosageInstruction": [
            {
                "text": "one tablet daily",
                "timing": {
                    "repeat": {
                        "frequency": 1,
                        "period": 1,
                        "periodUnit": "d",
                        "timeOfDay": [due.strftime("%H:%M:%S")],
                    }
                },
                "doseAndRate": [{"doseQuantity": tablets(1)}],
            }
        ],
        "dispenseRequest": {"quantity": tablets(30), "numberOfRepeatsAllowed": 2},
    }
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{resource['resourceType'].lower()}-{resource['id']}",
                "resource": resource,
                "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"},
            }
            for resource in (patient, request)
        ],
    }


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patient_id")
    parser.add_argument("--lead", type=float, default=40.0, help="seconds until the dose")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for it")
    options = parser.parse_args()

    settings = Settings()
    # MEDSTREAM_FHIR_DEFAULT_TIMEZONE is UTC unless set: the dose time is written in UTC.
    due = (datetime.now(UTC) + timedelta(seconds=options.lead)).replace(microsecond=0)
    request_id = f"mr-{options.patient_id}"
    async with Publisher(settings) as publisher:
        mapping = await publisher.publish_fhir(bundle(options.patient_id, request_id, due))
    for event in mapping.events:
        print(f"published: maps to {event['event_type']} {event['event_id']}", flush=True)

    async with Subscriber(
        settings, topics=["medication-reminders"], idle_timeout=options.timeout
    ) as reminders:
        async for reminder in reminders:
            if (
                isinstance(reminder, ReminderDue)
                and reminder.patient_id == options.patient_id
                and reminder.medication_id == request_id
            ):
                print(
                    f"ReminderDue {reminder.reminder_id} {reminder.medication_name} "
                    f"{reminder.dose_quantity:g} {reminder.dose_unit} "
                    f"for {reminder.scheduled_for.isoformat()}",
                    flush=True,
                )
                return 0
    print("no reminder came", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
