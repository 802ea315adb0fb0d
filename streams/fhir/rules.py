"""The configurable rules of the FHIR mapping: patient identity, time zone and clock times."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import MappingProxyType

from streams.settings import (
    DEFAULT_FHIR_FREQUENCY_TIMES,
    DEFAULT_FHIR_WHEN_TIMES,
    Settings,
)


def _frozen_table(text: str) -> MappingProxyType[str, tuple[str, ...]]:
    table: dict[str, list[str]] = json.loads(text)
    return MappingProxyType({key: tuple(times) for key, times in table.items()})


@dataclass(frozen=True)
class FhirRules:
    """How FHIR resources become events (docs/fhir.md); build it with ``from_settings``.

    - ``patient_identifier_system``: patient_id is the Patient's identifier of this system;
      None: the logical id of the subject reference.
    - ``default_timezone``: schedules' IANA zone when the Patient carries none.
    - ``frequency_times``: doses per day (``"1"`` .. ``"24"``) to local times.
    - ``interval_start``: first local time of every-N-hours timings.
    - ``when_times``: Timing ``when`` codes to local times.
    """

    patient_identifier_system: str | None = None
    default_timezone: str = "UTC"
    frequency_times: MappingProxyType[str, tuple[str, ...]] = field(
        default_factory=lambda: _frozen_table(DEFAULT_FHIR_FREQUENCY_TIMES)
    )
    interval_start: str = "06:00"
    when_times: MappingProxyType[str, tuple[str, ...]] = field(
        default_factory=lambda: _frozen_table(DEFAULT_FHIR_WHEN_TIMES)
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> FhirRules:
        """The rules the settings give (their tables are validated by Settings)."""
        return cls(
            patient_identifier_system=settings.fhir_patient_identifier_system,
            default_timezone=settings.fhir_default_timezone,
            frequency_times=_frozen_table(settings.fhir_frequency_times),
            interval_start=settings.fhir_interval_start,
            when_times=_frozen_table(settings.fhir_when_times),
        )
