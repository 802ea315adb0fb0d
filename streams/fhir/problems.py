"""What a FHIR mapping returns: the contract events, and problems free of patient data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The kinds of problem (FhirProblem.error_type).
FHIR_INVALID = "FhirInvalid"  # not JSON, or what fhir.resources refuses
FHIR_UNMAPPABLE = "FhirUnmappable"  # valid FHIR that medstream's events cannot express
FHIR_UNSUPPORTED = "FhirUnsupported"  # a resource type or status medstream does not map


@dataclass(frozen=True)
class FhirProblem:
    """One part of a record that gave no event: where (a FHIR path), what kind, and why.

    ``path`` and ``reason`` are built from FHIR element names, value-set codes and counts only,
    never from values of the resource (names, ids, codes, free text).
    """

    path: str
    error_type: str
    reason: str


@dataclass(frozen=True)
class FhirMapping:
    """The contract events of one record (JSON-ready dicts, validated) and its problems."""

    events: list[dict[str, Any]] = field(default_factory=list)
    problems: list[FhirProblem] = field(default_factory=list)


class MappingRefused(Exception):  # noqa: N818 (a refusal, not a bug)
    """Raised inside the mapper when a resource cannot be mapped; becomes a FhirProblem.

    ``path`` is relative to the resource (``dosageInstruction[0].timing``), or empty for the
    resource itself; the message is the reason, patient-free by construction.
    """

    def __init__(
        self,
        path: str,
        reason: str,
        error_type: str = FHIR_UNMAPPABLE,
        *,
        absolute: bool = False,
    ) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason
        self.error_type = error_type
        # True when path names the place in the whole record (e.g. another Bundle entry).
        self.absolute = absolute

    def within(self, prefix: str) -> MappingRefused:
        """The same refusal with its relative path under ``prefix`` (e.g. ``timing``)."""
        if self.absolute:
            return self
        return MappingRefused(join_path(prefix, self.path), self.reason, self.error_type)


def join_path(base: str, relative: str) -> str:
    """``base`` (``MedicationRequest`` or ``Bundle.entry[2].resource``) plus a relative path."""
    return f"{base}.{relative}" if relative else base
