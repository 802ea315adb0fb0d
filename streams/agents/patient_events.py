"""The agent that applies every patient input event, exactly once per event_id."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TableT

from streams.agents.runtime import Intake, Outcome, RejectedEventError
from streams.contracts.models import Event
from streams.domain.dedup import Admission, SeenEvents, admit
from streams.settings import Settings

MILLIS_PER_DAY = 86_400_000


def seen_events_from_table(value: Any) -> SeenEvents:
    return SeenEvents.empty() if not value else SeenEvents(dict(value))


@dataclass
class PatientEventProcessor:
    """Decides, per event, whether it is new; applies new ones to the patient's state."""

    settings: Settings
    seen_events_by_patient: TableT[str, Any]

    async def handle(self, event: Event) -> Outcome:
        seen = seen_events_from_table(self.seen_events_by_patient.get(event.patient_id))
        admission, updated = admit(
            seen,
            event.event_id,
            int(event.occurred_at.timestamp() * 1000),
            retention_ms=self.settings.dedup_retention_days * MILLIS_PER_DAY,
            max_entries=self.settings.dedup_max_ids_per_patient,
        )
        if admission is Admission.DUPLICATE:
            return Outcome.DUPLICATE
        if admission is Admission.TOO_OLD:
            raise RejectedEventError(
                f"{event.event_type} occurred more than {self.settings.dedup_retention_days} "
                "days before the newest event of its patient (outside the de-duplication window)"
            )
        self.seen_events_by_patient[event.patient_id] = updated.entries
        return Outcome.PROCESSED


def install_patient_events(
    app: faust.App, input_topic: faust.TopicT, intake: Intake, settings: Settings
) -> PatientEventProcessor:
    """Declare the tables and the agent that consume the three input topics."""
    seen_events_by_patient = app.Table(
        "seen-events-by-patient",
        default=None,
        key_type=str,
        value_type=dict,
        partitions=settings.topic_partitions,
    )
    processor = PatientEventProcessor(settings, seen_events_by_patient)

    @app.agent(input_topic, name="apply-patient-events")
    async def apply_patient_events(stream: faust.StreamT[Any]) -> None:
        await intake.run(stream, processor.handle)

    return processor
