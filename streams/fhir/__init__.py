"""FHIR R4 resources and Bundles mapped to medstream's contract events (pure, no Kafka)."""

from streams.fhir.mapping import map_fhir_record
from streams.fhir.problems import FhirMapping, FhirProblem
from streams.fhir.rules import FhirRules

__all__ = ["FhirMapping", "FhirProblem", "FhirRules", "map_fhir_record"]
