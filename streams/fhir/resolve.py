"""References inside a FHIR record: contained resources, Bundle entries, patient and time zone."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streams.fhir.problems import MappingRefused
from streams.fhir.rules import FhirRules

# IANA zone extensions read on the Patient. R4 core defines neither: its only zone extension is
# tz-code (on a date, dateTime or instant, read on boundsPeriod.start). `timezone` is the
# later extensions pack's; `patient-timezone` is a name EHR exports use.
PATIENT_TIMEZONE_EXTENSIONS = (
    "http://hl7.org/fhir/StructureDefinition/timezone",
    "http://hl7.org/fhir/StructureDefinition/patient-timezone",
)
TZ_CODE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/tz-code"


@dataclass(frozen=True)
class Located:
    """A validated fhir.resources resource and the FHIR path that names it in the record."""

    resource: Any
    path: str
    full_url: str | None = None
    # The JSON it was validated from: the identity of a resource with neither id nor fullUrl.
    raw: dict[str, Any] | None = None


@dataclass
class RecordContext:
    """The resources of one record (a Bundle's valid entries, or the one resource)."""

    entries: list[Located] = field(default_factory=list)

    def resolve(self, reference: str | None, holder: Located) -> Located | None:
        """The resource a reference names: ``#id`` among the holder's contained resources, a
        Bundle entry by fullUrl, or by ``Type/id`` (relative, or an absolute URL's last two
        segments, a ``_history`` version ignored). None when it is not in the record."""
        if not reference:
            return None
        if reference.startswith("#"):
            for index, contained in enumerate(holder.resource.contained or ()):
                if contained.id == reference[1:]:
                    return Located(contained, f"{holder.path}.contained[{index}]")
            return None
        for entry in self.entries:
            if entry.full_url is not None and entry.full_url == reference:
                return entry
        typed = type_and_id(reference)
        if typed is None:
            return None
        for entry in self.entries:
            resource = entry.resource
            if (resource.get_resource_type(), resource.id) == typed:
                return entry
        return None

    def referenced_id(
        self, reference: str | None, resource_type: str, holder: Located
    ) -> str | None:
        """The logical id of the ``resource_type`` a reference names, or None (a contained
        resource has no logical id; a ``urn:`` reference needs its entry, with an id)."""
        if not reference or reference.startswith("#"):
            return None
        if reference.startswith("urn:"):
            target = self.resolve(reference, holder)
            if target is None or target.resource.get_resource_type() != resource_type:
                return None
            return str(target.resource.id) if target.resource.id else None
        typed = type_and_id(reference)
        if typed is None or typed[0] != resource_type:
            return None
        return typed[1]


def type_and_id(reference: str) -> tuple[str, str] | None:
    """('Patient', '123') of ``Patient/123``, ``https://ehr/fhir/Patient/123/_history/4``."""
    segments = [part for part in reference.split("?", 1)[0].split("/") if part]
    if "_history" in segments:
        segments = segments[: segments.index("_history")]
    if len(segments) < 2 or not segments[-2][:1].isupper():
        return None
    return segments[-2], segments[-1]


def patient_of(
    holder: Located, context: RecordContext, rules: FhirRules
) -> tuple[str, Located | None]:
    """The patient_id of a resource's subject (docs/fhir.md), and the Patient when in the record."""
    subject = holder.resource.subject
    if subject is None:
        raise MappingRefused("subject", "the resource names no patient (no subject)")
    patient = context.resolve(subject.reference, holder)
    if patient is not None and patient.resource.get_resource_type() != "Patient":
        raise MappingRefused("subject", "the subject is not a Patient")
    system = rules.patient_identifier_system
    if system is not None:
        identifiers = list(patient.resource.identifier or ()) if patient else []
        if subject.identifier is not None:
            identifiers.append(subject.identifier)
        for identifier in identifiers:
            if identifier.system == system and identifier.value:
                return str(identifier.value), patient
        raise MappingRefused(
            "subject",
            "no Patient identifier has the system MEDSTREAM_FHIR_PATIENT_IDENTIFIER_SYSTEM names",
        )
    logical = context.referenced_id(subject.reference, "Patient", holder)
    if logical is None:
        raise MappingRefused(
            "subject.reference", "the subject reference gives no Patient logical id"
        )
    return logical, patient


def _zone(name: Any, path: str, *, absolute: bool) -> ZoneInfo:
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        raise MappingRefused(
            path, "the time zone extension is not an IANA time zone", absolute=absolute
        ) from None


def patient_zone(patient: Located | None, rules: FhirRules) -> tuple[ZoneInfo, str]:
    """The Patient's IANA zone from its timezone extension, else the rules' default; with the
    path it came from (empty for the default)."""
    if patient is not None:
        for index, extension in enumerate(patient.resource.extension or ()):
            if extension.url in PATIENT_TIMEZONE_EXTENSIONS:
                value = extension.valueCode or extension.valueString
                path = f"{patient.path}.extension[{index}]"
                return _zone(value, path, absolute=True), path
    return ZoneInfo(rules.default_timezone), ""


def tz_code(element_extension: Any, path: str) -> ZoneInfo | None:
    """The zone of R4's tz-code extension on a primitive (``_start``), if there is one."""
    if element_extension is None:
        return None
    for extension in element_extension.extension or ():
        if extension.url == TZ_CODE_EXTENSION:
            return _zone(extension.valueCode or extension.valueString, path, absolute=False)
    return None
