"""FHIR R4 JSON (one resource or a Bundle) to validated contract events, or problems.

The resources are parsed and validated with fhir.resources' R4B models (FHIR 4.3.0). R4B is
wire-compatible with R4 (4.0.1) for every element read here, checked field by field against
the R4 definitions: MedicationRequest (status, intent, doNotPerform, medication[x], subject,
authoredOn, dosageInstruction, dispenseRequest.quantity and numberOfRepeatsAllowed,
contained, meta.lastUpdated), MedicationDispense (status, medication[x], subject,
authorizingPrescription, quantity, dosageInstruction, whenHandedOver), MedicationAdministration
(status, statusReason, subject, effective[x], request, dosage.dose), MedicationStatement
(status with R4's codes including not-taken, statusReason, basedOn, subject, effective[x],
dateAsserted; R4 has no `taken` element, that was STU3), Medication.code, Patient (id,
identifier, extension), Bundle (type, entry.fullUrl, entry.resource) and Dosage/Timing
(asNeeded[x], doseAndRate.doseQuantity, timing.event, timing.repeat: bounds[x], count,
countMax, duration, durationMax, frequency, frequencyMax, period, periodMax, periodUnit,
dayOfWeek, timeOfDay, when, offset). HL7's R4B difference files (medicationrequest.diff,
medicationstatement.diff) list for these resources only new version labels of the status,
intent and priority bindings, whose codes are R4's. The rules are in docs/fhir.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from streams.contracts.codecs import describe_validation_error, string_leaves
from streams.contracts.models import (
    DoseSkipped,
    DoseTaken,
    Event,
    MedicationDiscontinued,
    MedicationPrescribed,
    RefillDispensed,
    ScheduleCleared,
    ScheduleSet,
)
from streams.fhir.ids import event_id, resource_identity
from streams.fhir.problems import (
    FHIR_INVALID,
    FHIR_UNMAPPABLE,
    FHIR_UNSUPPORTED,
    FhirMapping,
    FhirProblem,
    MappingRefused,
    join_path,
)
from streams.fhir.resolve import Located, RecordContext, patient_of, patient_zone
from streams.fhir.rules import FhirRules
from streams.fhir.timing import Schedule, schedule_from_timing

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
MAPPED_TYPES = (
    "MedicationRequest",
    "MedicationDispense",
    "MedicationAdministration",
    "MedicationStatement",
)
# The R4 value sets of the statuses (R4B has the same codes for these four resources).
REQUEST_STATUSES = frozenset(
    {
        "active",
        "on-hold",
        "cancelled",
        "completed",
        "entered-in-error",
        "stopped",
        "draft",
        "unknown",
    }
)
REQUEST_ENDED = frozenset({"cancelled", "completed", "stopped", "entered-in-error"})
DISPENSE_STATUSES = frozenset(
    {
        "preparation",
        "in-progress",
        "cancelled",
        "on-hold",
        "completed",
        "entered-in-error",
        "stopped",
        "declined",
        "unknown",
    }
)
ADMINISTRATION_STATUSES = frozenset(
    {"in-progress", "not-done", "on-hold", "completed", "entered-in-error", "stopped", "unknown"}
)
STATEMENT_STATUSES = frozenset(
    {
        "active",
        "completed",
        "entered-in-error",
        "intended",
        "stopped",
        "on-hold",
        "unknown",
        "not-taken",
    }
)
# Words a problem may contain even when the record has them as values: FHIR's own codes.
_SAFE_WORDS = (
    REQUEST_STATUSES
    | DISPENSE_STATUSES
    | ADMINISTRATION_STATUSES
    | STATEMENT_STATUSES
    | {
        "order",
        "original-order",
        "reflex-order",
        "filler-order",
        "instance-order",
        "option",
        "proposal",
        "plan",
        "true",
        "false",
        "min",
        "wk",
        "mo",
    }
)
_MAX_REPORTED_ERRORS = 10
# Stands in for the event_id while the event is validated; the id is a hash of the result.
_PENDING_ID = "fhir-pending"
_MAX_TEXT = 1000
_LOCATION_PART = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# --- entry point -------------------------------------------------------------------------


def map_fhir_record(value: bytes, rules: FhirRules) -> FhirMapping:
    """The contract events of one Kafka record's value (a FHIR resource or Bundle as JSON),
    each validated against streams.contracts.models, and the problems of what gave none.

    Pure: no I/O, no clock; the same bytes and rules always give the same mapping."""
    try:
        data = json.loads(value, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError):
        return FhirMapping(
            problems=[FhirProblem("record", FHIR_INVALID, "the record is not UTF-8 JSON")]
        )
    if not isinstance(data, dict):
        return FhirMapping(
            problems=[FhirProblem("record", FHIR_INVALID, "the record is not a JSON object")]
        )
    resource_type = data.get("resourceType")
    if not isinstance(resource_type, str) or _model_class(resource_type) is None:
        return FhirMapping(
            problems=[
                FhirProblem(
                    "resourceType", FHIR_INVALID, "resourceType is missing or not a FHIR type"
                )
            ]
        )
    if resource_type == "Bundle":
        return _map_bundle(data, rules)
    if resource_type not in MAPPED_TYPES:
        return FhirMapping(
            problems=[
                FhirProblem(
                    resource_type,
                    FHIR_UNSUPPORTED,
                    f"{resource_type} alone is not mapped (only {', '.join(MAPPED_TYPES)} "
                    "and Bundles of them)",
                )
            ]
        )
    located, problems = _validate(data, resource_type, None)
    if located is None:
        return FhirMapping(problems=problems)
    return _map_located([located], RecordContext([located]), rules, data)


def _refuse_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, which JSON (and FHIR) does not have.
    raise ValueError("not JSON")


# --- validation with fhir.resources ---------------------------------------------------------


def _model_class(resource_type: str) -> Any:
    if not resource_type.isascii() or not resource_type.isalpha():
        return None
    try:
        return get_fhir_model_class(resource_type)
    except ValueError:
        return None


def _fhir_location(location: tuple[int | str, ...]) -> str:
    text = ""
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _LOCATION_PART.match(part) and part != "root":  # fhir_core's model validator
            text += f".{part}" if text else part
    return text


def _validate(
    raw: dict[str, Any], base: str, full_url: str | None
) -> tuple[Located | None, list[FhirProblem]]:
    """The resource validated by its fhir.resources model, or FhirInvalid problems."""
    model = _model_class(str(raw.get("resourceType")))
    if model is None:
        return None, [
            _problem(
                join_path(base, "resourceType"),
                FHIR_INVALID,
                "resourceType is missing or not a FHIR type",
                raw,
            )
        ]
    try:
        resource = model.model_validate(raw)
    except ValidationError as error:
        items = error.errors(include_input=False, include_url=False, include_context=False)
        problems = [
            _problem(
                join_path(base, _fhir_location(tuple(item["loc"]))),
                FHIR_INVALID,
                " ".join(str(item["msg"]).removeprefix("Value error, ").split()),
                raw,
            )
            for item in items[:_MAX_REPORTED_ERRORS]
        ]
        return None, problems
    except (TypeError, ValueError, RecursionError):
        return None, [_problem(base, FHIR_INVALID, "fhir.resources refused the resource", raw)]
    return Located(resource, base, full_url, raw), []


def _map_bundle(data: dict[str, Any], rules: FhirRules) -> FhirMapping:
    entries = data.get("entry", [])
    if not isinstance(entries, list):
        return FhirMapping(
            problems=[FhirProblem("Bundle.entry", FHIR_INVALID, "entry must be an array")]
        )
    # The Bundle is validated without its resources, each entry's resource on its own, so
    # that one bad entry does not take the good ones with it.
    skeleton = dict(data)
    skeleton["entry"] = [
        {key: item for key, item in entry.items() if key != "resource"}
        if isinstance(entry, dict)
        else entry
        for entry in entries
    ]
    bundle, problems = _validate(skeleton, "Bundle", None)
    if bundle is None:
        return FhirMapping(problems=problems)
    located: list[Located] = []
    for index, entry in enumerate(entries):
        raw = entry.get("resource")
        if raw is None:
            deleted = _deleted_type(entry.get("request"))
            if deleted is not None:
                problems.append(
                    FhirProblem(
                        f"Bundle.entry[{index}].request",
                        FHIR_UNMAPPABLE,
                        f"a DELETE of a {deleted} cannot be mapped: it names no patient "
                        "(send the resource with its new status instead, such as "
                        "entered-in-error)",
                    )
                )
            continue  # any other entry without a resource (a search outcome, a DELETE of context)
        base = f"Bundle.entry[{index}].resource"
        if not isinstance(raw, dict):
            problems.append(_problem(base, FHIR_INVALID, "the resource is not an object", data))
            continue
        full_url = entry.get("fullUrl")
        resource, invalid = _validate(raw, base, full_url if isinstance(full_url, str) else None)
        problems.extend(invalid)
        if resource is not None:
            located.append(resource)
    mapping = _map_located(located, RecordContext(located), rules, data)
    return FhirMapping(mapping.events, problems + mapping.problems)


def _deleted_type(request: Any) -> str | None:
    """The mapped resource type a Bundle entry's DELETE request names (``MedicationRequest/1``,
    an absolute URL, a conditional ``MedicationRequest?identifier=...``), else None."""
    if not isinstance(request, dict) or request.get("method") != "DELETE":
        return None
    url = request.get("url")
    if not isinstance(url, str):
        return None
    segments = url.split("?", 1)[0].split("/")
    return next((segment for segment in segments if segment in _MAPPERS), None)


def _map_located(
    located: list[Located], context: RecordContext, rules: FhirRules, raw: dict[str, Any]
) -> FhirMapping:
    # Every other resource type in a Bundle (Patient, Medication, Practitioner, Organization,
    # Encounter, ...) is context: read through references, never mapped, never a problem.
    events: list[dict[str, Any]] = []
    problems: list[FhirProblem] = []
    for item in located:
        mapper = _MAPPERS.get(item.resource.get_resource_type())
        if mapper is None:
            continue
        try:
            events.extend(mapper(item, context, rules))
        except MappingRefused as refused:
            path = refused.path if refused.absolute else join_path(item.path, refused.path)
            problems.append(_problem(path, refused.error_type, refused.reason, raw))
        except Exception as error:  # one resource must not take the others with it
            # A case the rules above did not foresee: the resource is refused, by the
            # exception's type only (its message may carry a value).
            reason = f"the resource could not be mapped ({type(error).__name__})"
            problems.append(_problem(item.path, FHIR_UNMAPPABLE, reason, raw))
    return FhirMapping(events, problems)


# --- problems without patient data ----------------------------------------------------------


def _problem(path: str, error_type: str, reason: str, raw: Any) -> FhirProblem:
    """A problem whose reason is scrubbed of any string value the record carried that is not
    a FHIR word (a status code, a resourceType). Reasons are built from element names and
    codes; this is the second line of defence, against a library message that echoes a
    value. Paths are built from element names and indexes only."""
    safe = _SAFE_WORDS | set(_resource_types(raw))
    leaves = set(string_leaves(raw))
    # The logical id in a reference (Patient/123, https://.../Patient/123) is a value too.
    leaves |= {part for leaf in leaves for part in leaf.split("/") if _model_class(part) is None}
    leaves = {leaf for leaf in leaves if len(leaf) >= 3} - safe
    for leaf in sorted(leaves, key=len, reverse=True):
        reason = reason.replace(leaf, "<redacted>")
    return FhirProblem(path, error_type, reason)


def _resource_types(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "resourceType" and isinstance(item, str):
                yield item
            else:
                yield from _resource_types(item)
    elif isinstance(value, list):
        for item in value:
            yield from _resource_types(item)


# --- shared pieces ---------------------------------------------------------------------------


def _instant(value: Any, zone: ZoneInfo, path: str) -> str:
    """A FHIR dateTime/instant as ISO-8601 with offset (a date: local midnight in ``zone``)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise MappingRefused(path, "a time without a time zone offset")
        return value.isoformat()
    if isinstance(value, date):
        return datetime.combine(value, time(0), zone).isoformat()
    raise MappingRefused(path, "a partial date (year or month only) is not a point in time")


def _occurred_at(
    resource: Any,
    zone: ZoneInfo,
    candidates: list[tuple[str, Any]],
    *,
    last_updated_first: bool = False,
) -> str:
    """occurred_at from the resource's own times, in order, else meta.lastUpdated (or that
    first, and then the others)."""
    last_updated = ("meta.lastUpdated", resource.meta.lastUpdated if resource.meta else None)
    candidates = [last_updated, *candidates] if last_updated_first else [*candidates, last_updated]
    for path, value in candidates:
        if value is not None:
            return _instant(value, zone, path)
    names = ", ".join(path for path, _ in candidates)
    raise MappingRefused(candidates[0][0], f"no time for occurred_at: none of {names} is given")


def _effective(resource: Any) -> tuple[str, Any]:
    if resource.effectiveDateTime is not None:
        return "effectiveDateTime", resource.effectiveDateTime
    if resource.effectivePeriod is not None:
        return "effectivePeriod.start", resource.effectivePeriod.start
    return "effectiveDateTime", None


def _status(resource: Any, codes: frozenset[str]) -> str:
    status = resource.status
    if status not in codes:
        raise MappingRefused(
            "status", f"status is not a code of {resource.get_resource_type()}.status", FHIR_INVALID
        )
    return str(status)


def _unsupported_status(resource: Any, status: str, what: str) -> MappingRefused:
    return MappingRefused(
        "status",
        f"a {resource.get_resource_type()} with status {status} {what}: not mapped",
        FHIR_UNSUPPORTED,
    )


def _number(value: Decimal | float | int) -> float:
    return float(value)


def _unit_names(quantity: Any) -> set[str]:
    return {
        " ".join(str(text).split()).casefold() for text in (quantity.unit, quantity.code) if text
    }


def _same_unit(first: Any, second: Any) -> bool:
    """Units agree when both are UCUM codes and equal, or else when their unit or code texts
    share a name, ignoring case and spacing (``tablet`` agrees with UCUM ``{tbl}`` whose unit
    is ``tablet``); a quantity without a unit is read in the other's unit."""
    if first.system == UCUM and second.system == UCUM and first.code and second.code:
        return bool(first.code == second.code)
    names, other = _unit_names(first), _unit_names(second)
    if not names or not other:
        return True
    return bool(names & other)


def _first_dose(dosages: list[Any]) -> Any:
    if not dosages or not dosages[0].doseAndRate:
        return None
    return dosages[0].doseAndRate[0].doseQuantity


def _reason_text(reasons: list[Any] | None) -> str | None:
    for concept in reasons or ():
        if concept.text:
            return str(concept.text)[:_MAX_TEXT]
        for coding in concept.coding or ():
            if coding.display or coding.code:
                return str(coding.display or coding.code)[:_MAX_TEXT]
    return None


class _Emitter:
    """Builds one resource's events: the envelope, deterministic ids, contract validation."""

    def __init__(self, item: Located, patient_id: str, occurred_at: str) -> None:
        resource = item.resource
        self.identity = resource_identity(
            resource.get_resource_type(), resource.id, item.full_url, item.raw or {}
        )
        self.envelope = {"patient_id": patient_id, "occurred_at": occurred_at}

    def emit(self, model: type[Event], role: str, **fields: Any) -> dict[str, Any]:
        payload = {
            "event_id": _PENDING_ID,
            "event_type": model.EVENT_TYPE,
            **self.envelope,
            **{key: value for key, value in fields.items() if value is not None},
        }
        try:
            event = model.model_validate(payload)
        except ValidationError as error:
            raise MappingRefused(
                "",
                f"the mapped {model.EVENT_TYPE} breaks the contract: "
                f"{describe_validation_error(error)}",
            ) from None
        # The id hashes the event as the contract reads it (UTC milliseconds, floats), so the
        # same meaning written another way (another offset, 1 or 1.0) gives the same id.
        content = event.model_dump(mode="json", exclude={"event_id"})
        # The validated event's fields with its id in place of the placeholder: an id of the
        # same form, so nothing to validate again (the intake validates what it sends anyway).
        return {**content, "event_id": event_id(self.identity, role, content)}


def _link(item: Located, context: RecordContext, references: list[Any], path: str) -> str:
    """The medication_id: the logical id of the MedicationRequest the first reference names."""
    for index, reference in enumerate(references):
        logical = context.referenced_id(reference.reference, "MedicationRequest", item)
        if logical is not None:
            return logical
        if index == len(references) - 1:
            raise MappingRefused(
                path if len(references) == 1 else f"{path}[{index}]",
                "no reference here gives a MedicationRequest logical id (the medication_id)",
            )
    raise MappingRefused(path, "no MedicationRequest is named: nothing to link the event to")


# --- MedicationRequest -------------------------------------------------------------------------


def _medication(item: Located, context: RecordContext) -> tuple[str, str | None]:
    """(name, RxNorm code) from medicationCodeableConcept or the Medication referenced."""
    resource = item.resource
    if resource.medicationCodeableConcept is not None:
        concept, path = resource.medicationCodeableConcept, "medicationCodeableConcept"
    else:
        path = "medicationReference"
        target = context.resolve(resource.medicationReference.reference, item)
        if target is None or target.resource.get_resource_type() != "Medication":
            raise MappingRefused(
                path, "the Medication it names is neither contained nor in the Bundle"
            )
        concept = target.resource.code
        if concept is None:
            raise MappingRefused(path, "the Medication has no code")
    codings = list(concept.coding or ())
    rxnorm = [coding for coding in codings if coding.system == RXNORM and coding.code]
    code = str(rxnorm[0].code) if rxnorm else None
    if code is not None and not (code.isascii() and code.isdigit() and len(code) <= 10):
        raise MappingRefused(path, "the RxNorm code is not an RxCUI (1 to 10 digits)")
    displays = [coding.display for coding in (*rxnorm, *codings) if coding.display]
    name = concept.text or (displays[0] if displays else None)
    if not name:
        raise MappingRefused(path, "the medication has no text and no coding display to name it")
    return str(name), code


def _schedule(resource: Any, dosages: list[Any], rules: FhirRules, zone: ZoneInfo) -> Schedule:
    """One ScheduleSet's content from every dosageInstruction's timing."""
    schedules: list[Schedule] = []
    for index, dosage in enumerate(dosages):
        base = f"dosageInstruction[{index}]"
        as_needed = dosage.asNeededBoolean is True or dosage.asNeededCodeableConcept is not None
        if dosage.timing is None:
            if as_needed:
                field = "asNeededBoolean" if dosage.asNeededBoolean else "asNeededCodeableConcept"
                raise MappingRefused(
                    f"{base}.{field}", "as-needed (PRN) dosing without times has no schedule"
                )
            raise MappingRefused(f"{base}.timing", "the dosage has no timing: no schedule")
        try:
            schedules.append(schedule_from_timing(dosage.timing, rules, zone))
        except MappingRefused as refused:
            if as_needed and refused.path == "repeat":
                raise MappingRefused(
                    f"{base}.asNeededBoolean"
                    if dosage.asNeededBoolean
                    else f"{base}.asNeededCodeableConcept",
                    "as-needed (PRN) dosing without times has no schedule",
                ) from None
            raise refused.within(f"{base}.timing") from None
    first = schedules[0]
    for index, other in enumerate(schedules[1:], 1):
        if (other.days_of_week, other.start_date, other.end_date, other.timezone) != (
            first.days_of_week,
            first.start_date,
            first.end_date,
            first.timezone,
        ):
            raise MappingRefused(
                f"dosageInstruction[{index}].timing",
                "dosage instructions with other days, bounds or zone are not one schedule",
            )
    times = sorted({time for schedule in schedules for time in schedule.times_of_day})
    return Schedule(
        tuple(times), first.timezone, first.days_of_week, first.start_date, first.end_date
    )


def _route(dosage: Any) -> str | None:
    """The route: its SNOMED CT code, else its text (an unknown route reads as oral)."""
    if dosage.route is None:
        return None
    for coding in dosage.route.coding or ():
        if coding.system == SNOMED and coding.code:
            return str(coding.code)[:100]
    return str(dosage.route.text)[:100] if dosage.route.text else None


def _dose(dosages: list[Any]) -> Any:
    if not dosages:
        raise MappingRefused("dosageInstruction", "no dosageInstruction: no dose and no schedule")
    dose = _first_dose(dosages)
    path = "dosageInstruction[0].doseAndRate[0].doseQuantity"
    if dose is None:
        raise MappingRefused(path, "no doseQuantity (a dose range or no dose is not mapped)")
    if dose.value is None or not (dose.unit or dose.code):
        raise MappingRefused(path, "the doseQuantity needs a value and a unit")
    for index, dosage in enumerate(dosages[1:], 1):
        other = _first_dose([dosage])
        if other is not None and (other.value != dose.value or not _same_unit(other, dose)):
            raise MappingRefused(
                f"dosageInstruction[{index}].doseAndRate[0].doseQuantity",
                "dosage instructions with different doses are not one prescription",
            )
    return dose


def _map_request(item: Located, context: RecordContext, rules: FhirRules) -> list[dict[str, Any]]:
    resource = item.resource
    status = _status(resource, REQUEST_STATUSES)
    if status == "draft":
        raise _unsupported_status(resource, status, "is not in force yet")
    if status == "unknown":
        raise MappingRefused("status", "status unknown tells neither active nor stopped")
    if resource.intent in ("proposal", "plan"):
        raise MappingRefused(
            "intent", f"intent {resource.intent} is not an order: not mapped", FHIR_UNSUPPORTED
        )
    if resource.doNotPerform:
        raise MappingRefused(
            "doNotPerform", "an order not to give a medication is not mapped", FHIR_UNSUPPORTED
        )
    if not resource.id:
        raise MappingRefused("id", "a MedicationRequest needs a logical id (its medication_id)")
    medication_id = str(resource.id)
    patient_id, patient = patient_of(item, context, rules)
    zone, _ = patient_zone(patient, rules)
    # A stop or a hold happens after authoring, and R4 keeps no time of the status change on
    # the resource: the time it was last updated is that change.
    occurred_at = _occurred_at(
        resource,
        zone,
        [("authoredOn", resource.authoredOn)],
        last_updated_first=status != "active",
    )
    emitter = _Emitter(item, patient_id, occurred_at)
    if status in REQUEST_ENDED:
        return [
            emitter.emit(ScheduleCleared, "schedule-cleared", medication_id=medication_id),
            emitter.emit(
                MedicationDiscontinued,
                "discontinued",
                medication_id=medication_id,
                reason=f"FHIR MedicationRequest status {status}",
            ),
        ]
    name, rxnorm_code = _medication(item, context)
    dosages = list(resource.dosageInstruction or ())
    dose = _dose(dosages)
    supply = resource.dispenseRequest.quantity if resource.dispenseRequest else None
    if supply is None or supply.value is None:
        raise MappingRefused(
            "dispenseRequest.quantity", "no dispenseRequest.quantity: the supply is unknown"
        )
    if not _same_unit(supply, dose):
        raise MappingRefused(
            "dispenseRequest.quantity", "the supply's unit differs from the dose unit"
        )
    refills = resource.dispenseRequest.numberOfRepeatsAllowed or 0
    # The schedule is checked before anything is emitted: a resource maps whole or not at all.
    schedule = _schedule(resource, dosages, rules, zone) if status == "active" else None
    events = [
        emitter.emit(
            MedicationPrescribed,
            "prescribed",
            medication_id=medication_id,
            name=name,
            rxnorm_code=rxnorm_code,
            dose_quantity=_number(dose.value),
            dose_unit=str(dose.unit or dose.code),
            supply_quantity=_number(supply.value),
            refills_remaining=int(refills),
            route=_route(dosages[0]),
        )
    ]
    if schedule is None:  # on-hold: the medication stays, its reminders stop
        events.append(
            emitter.emit(ScheduleCleared, "schedule-cleared", medication_id=medication_id)
        )
        return events
    events.append(
        emitter.emit(
            ScheduleSet,
            "schedule",
            medication_id=medication_id,
            timezone=schedule.timezone,
            times_of_day=list(schedule.times_of_day),
            days_of_week=list(schedule.days_of_week) if schedule.days_of_week else None,
            start_date=schedule.start_date.isoformat() if schedule.start_date else None,
            end_date=schedule.end_date.isoformat() if schedule.end_date else None,
        )
    )
    return events


# --- MedicationDispense, MedicationAdministration, MedicationStatement ---------------------------


def _map_dispense(item: Located, context: RecordContext, rules: FhirRules) -> list[dict[str, Any]]:
    resource = item.resource
    status = _status(resource, DISPENSE_STATUSES)
    if status != "completed":
        raise _unsupported_status(resource, status, "hands nothing over")
    patient_id, patient = patient_of(item, context, rules)
    zone, _ = patient_zone(patient, rules)
    medication_id = _link(
        item, context, list(resource.authorizingPrescription or ()), "authorizingPrescription"
    )
    quantity = resource.quantity
    if quantity is None or quantity.value is None:
        raise MappingRefused("quantity", "no quantity: the amount dispensed is unknown")
    dose = _first_dose(list(resource.dosageInstruction or ()))
    if dose is None:
        # The dose unit of the prescription, when the record carries it.
        for reference in resource.authorizingPrescription or ():
            request = context.resolve(reference.reference, item)
            if request is not None and request.resource.get_resource_type() == "MedicationRequest":
                dose = _first_dose(list(request.resource.dosageInstruction or ()))
                break
    if dose is not None and not _same_unit(quantity, dose):
        raise MappingRefused("quantity", "the dispensed unit differs from the dose unit")
    occurred_at = _occurred_at(resource, zone, [("whenHandedOver", resource.whenHandedOver)])
    emitter = _Emitter(item, patient_id, occurred_at)
    return [
        emitter.emit(
            RefillDispensed,
            "dispensed",
            medication_id=medication_id,
            quantity=_number(quantity.value),
        )
    ]


def _map_administration(
    item: Located, context: RecordContext, rules: FhirRules
) -> list[dict[str, Any]]:
    resource = item.resource
    status = _status(resource, ADMINISTRATION_STATUSES)
    if status not in ("completed", "not-done"):
        raise _unsupported_status(resource, status, "is no finished dose")
    patient_id, patient = patient_of(item, context, rules)
    zone, _ = patient_zone(patient, rules)
    medication_id = _link(item, context, [resource.request] if resource.request else [], "request")
    effective_path, effective = _effective(resource)
    occurred_at = _occurred_at(resource, zone, [(effective_path, effective)])
    dose = resource.dosage.dose if resource.dosage else None
    return _dose_report(
        _Emitter(item, patient_id, occurred_at),
        resource,
        medication_id,
        skipped=status == "not-done",
        taken=(effective_path, effective, zone),
        quantity=_number(dose.value) if dose is not None and dose.value is not None else None,
    )


def _map_statement(item: Located, context: RecordContext, rules: FhirRules) -> list[dict[str, Any]]:
    resource = item.resource
    status = _status(resource, STATEMENT_STATUSES)
    if status not in ("active", "completed", "not-taken"):
        raise _unsupported_status(resource, status, "reports no dose taken or skipped")
    patient_id, patient = patient_of(item, context, rules)
    zone, _ = patient_zone(patient, rules)
    medication_id = _link(item, context, list(resource.basedOn or ()), "basedOn")
    effective_path, effective = _effective(resource)
    occurred_at = _occurred_at(
        resource, zone, [(effective_path, effective), ("dateAsserted", resource.dateAsserted)]
    )
    return _dose_report(
        _Emitter(item, patient_id, occurred_at),
        resource,
        medication_id,
        skipped=status == "not-taken",
        taken=(effective_path, effective, zone),
    )


def _dose_report(
    emitter: _Emitter,
    resource: Any,
    medication_id: str,
    *,
    skipped: bool,
    taken: tuple[str, Any, ZoneInfo],
    quantity: float | None = None,
) -> list[dict[str, Any]]:
    """What an administration or a statement reports: a DoseSkipped (its statusReason the
    reason), or a DoseTaken at its effective time (``taken``: the path, the value, the zone)."""
    if skipped:
        reason = _reason_text(resource.statusReason)
        return [
            emitter.emit(DoseSkipped, "dose-skipped", medication_id=medication_id, reason=reason)
        ]
    path, effective, zone = taken
    taken_at = _instant(effective, zone, path) if effective is not None else None
    return [
        emitter.emit(
            DoseTaken,
            "dose-taken",
            medication_id=medication_id,
            quantity=quantity,
            taken_at=taken_at,
        )
    ]


_MAPPERS: dict[str, Callable[[Located, RecordContext, FhirRules], list[dict[str, Any]]]] = {
    "MedicationRequest": _map_request,
    "MedicationDispense": _map_dispense,
    "MedicationAdministration": _map_administration,
    "MedicationStatement": _map_statement,
}

__all__ = ["FHIR_UNMAPPABLE", "map_fhir_record"]
