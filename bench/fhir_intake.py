"""FHIR intake throughput: the pipeline's story sent as FHIR R4 records, and the mapper alone."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

from bench.harness import Context, EventFactory, record_of
from bench.pipeline import measure
from streams.fhir import FhirRules, map_fhir_record
from streams.settings import Settings
from tests import fhir_scenarios

NAME = "fhir-intake"


def fhir_records(events: int, doses_per_patient: int) -> list[tuple[str, bytes, bytes]]:
    """Per patient: contact preferences (a contract event: FHIR has no such resource), one
    transaction Bundle as an EHR sends an order (the Patient, a twice-daily MedicationRequest
    whose supply lasts exactly the doses, three repeats), then one MedicationAdministration
    record per dose, as a medication administration record system sends them. Refill alerts:
    low supply at the prescription (the schedule gives its days of supply), and out of supply
    at the last dose.

    The pipeline benchmark's prescriptions and doses (plus each order's schedule), so the two
    figures compare."""
    run = uuid.uuid4().hex[:6]
    factory = EventFactory(f"f{run}")
    patients = max(1, events // (doses_per_patient + 2))
    records: list[tuple[str, bytes, bytes]] = []
    for index in range(patients):
        patient = f"p{index}"
        records.append(record_of(factory.contact(patient)))
        order = fhir_scenarios.request(
            "mr-metformin",
            fhir_scenarios.coded("6809", "metformin", "Metformin 500 mg tablet"),
            repeat={"frequency": 2, "period": 1, "periodUnit": "d"},
            supply=doses_per_patient,
            repeats=3,
            patient_id=patient,
        )
        records.append(fhir_record(fhir_scenarios.bundle(fhir_scenarios.patient(patient), order)))
    # Twice a day, the last one an hour ago: within the worker's clock-skew bound.
    first_dose = datetime.now(UTC) - timedelta(hours=12 * doses_per_patient)
    for dose in range(doses_per_patient):
        taken = (first_dose + timedelta(hours=12 * dose)).isoformat()
        for index in range(patients):
            patient = f"p{index}"
            resource = fhir_scenarios.administration(
                f"ma-{run}-{index}-{dose}", "mr-metformin", patient_id=patient
            )
            resource["effectiveDateTime"] = taken
            records.append(fhir_record(json.dumps(resource).encode(), patient))
    return records


def fhir_record(value: bytes, patient: str | None = None) -> tuple[str, bytes, bytes]:
    """(base topic, key, value) of a FHIR record, keyed by its patient as docs/fhir.md says."""
    if patient is None:
        patient = json.loads(value)["entry"][0]["resource"]["id"]
    return ("fhir-resources", patient.encode("utf-8"), value)


def expected_settled(records: list[tuple[str, bytes, bytes]]) -> int:
    """What the worker settles: each record, plus each contract event a FHIR record maps to."""
    rules = FhirRules.from_settings(Settings())
    mapped = sum(
        len(map_fhir_record(value, rules).events)
        for topic, _key, value in records
        if topic == "fhir-resources"
    )
    return len(records) + mapped


def mapping_us(values: list[bytes], rules: FhirRules) -> float:
    started = time.perf_counter()
    for value in values:
        map_fhir_record(value, rules)
    return (time.perf_counter() - started) / len(values) * 1e6


async def run(context: Context) -> None:
    sizes = context.sizes
    records = fhir_records(sizes.pipeline_events, sizes.doses_per_patient)
    fhir = [value for topic, _key, value in records if topic == "fhir-resources"]
    total = expected_settled(records)

    # The mapper alone, in this process: a Bundle (Patient and order) and an administration.
    rules = FhirRules.from_settings(Settings())
    bundles = [value for value in fhir if b'"Bundle"' in value]
    administrations = [value for value in fhir if b'"Bundle"' not in value]
    mapping_us(fhir[:100], rules)  # warm-up
    bundle_us = mapping_us(bundles, rules)
    administration_us = mapping_us(administrations, rules)

    result = await measure(context, records, benchmark=NAME, settled=total)
    records_per_second = result["share_done"] * len(records) / result["seconds"]
    context.add(
        NAME,
        "throughput",
        records_per_second,
        "records/s",
        ratio=context.ratio(records_per_second),
    )
    pipeline = next(
        (f.value for f in context.figures if (f.benchmark, f.name) == ("pipeline", "throughput")),
        None,
    )
    if pipeline:
        context.add(NAME, "FHIR records / pipeline events", records_per_second / pipeline, "x")
    context.add(NAME, "records", len(records), "records")
    context.add(NAME, "alerts delivered", result["delivered"], "deliveries")
    context.add(NAME, "dead-lettered", result["dead_lettered"], "records")
    context.add(NAME, "map a Bundle (Patient + MedicationRequest)", bundle_us, "us/record")
    context.add(NAME, "map a MedicationAdministration", administration_us, "us/record")
    context.note(
        NAME,
        f"{result['patients']:.0f} patients x (contact event + Bundle of Patient and "
        f"MedicationRequest + {sizes.doses_per_patient} MedicationAdministration records), "
        "refill alerts (low supply, then out of supply); pre-published; timed from the "
        "first record consumed until every record is settled and an alert per patient "
        "delivered; the pipeline benchmark sends the same prescriptions and doses as contract "
        "events, without the schedule",
    )
