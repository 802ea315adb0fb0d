"""A typed publisher of medstream's input events, for upstream Python services."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from types import TracebackType
from typing import Any, Self, TypeVar

from aiokafka import AIOKafkaProducer
from pydantic_core import to_jsonable_python

from streams.client.ids import client_event_id
from streams.contracts.codecs import EventEncoder, EventValidationError, validate_event
from streams.contracts.models import (
    ContactChannel,
    ContactPreferencesSet,
    DoseSkipped,
    DoseTaken,
    Event,
    MedicationDiscontinued,
    MedicationPrescribed,
    QuietHours,
    RefillDispensed,
    ScheduleCleared,
    ScheduleSet,
)
from streams.contracts.schemas import default_catalog
from streams.contracts.vocabulary import Weekday
from streams.fhir import FhirMapping, FhirProblem, FhirRules, map_fhir_record
from streams.kafka_client import client_options
from streams.observability import tracing
from streams.publish import INPUT_EVENT_TOPIC, fhir_record_key
from streams.settings import OutputEncoding, Settings
from streams.topics import FHIR_RESOURCES

E = TypeVar("E", bound=Event)


class FhirRefusedError(ValueError):
    """A FHIR resource or Bundle that does not map whole to contract events."""

    def __init__(self, problems: Sequence[FhirProblem]) -> None:
        self.problems = tuple(problems)
        shown = "; ".join(f"{p.path}: {p.error_type}: {p.reason}" for p in self.problems[:5])
        more = len(self.problems) - 5
        super().__init__(shown + (f"; and {more} more" if more > 0 else ""))


INPUT_EVENT_TYPES = frozenset(INPUT_EVENT_TOPIC)
# The envelope fields a Publisher fills in itself (occurred_at: now, unless given).
DERIVED_FIELDS = frozenset({"event_id", "event_type"})


class Publisher:
    """Publishes typed input events, validated as the intake validates them.

    Built from the worker's ``Settings`` (brokers, security, topic prefix). Use as
    ``async with Publisher(settings) as publisher: await publisher.dose_taken(...)``. Every
    method returns the validated event once the broker acknowledged it (``acks="all"``, an
    idempotent producer, the key ``patient_id`` in UTF-8). An invalid call raises
    ``EventValidationError`` (field names and rules, never a value) and publishes nothing.
    """

    def __init__(self, settings: Settings, *, avro: bool | None = None) -> None:
        self.settings = settings
        if avro is None:
            encoding = settings.output_encoding
        else:
            encoding = OutputEncoding.AVRO if avro else OutputEncoding.JSON
        self.encoding = encoding
        self._encoder = EventEncoder(default_catalog(), encoding)
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(
            acks="all", enable_idempotence=True, **client_options(self.settings)
        )
        await producer.start()
        self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- the generic path ----------------------------------------------------------------

    def build(
        self,
        model: type[E],
        *,
        key: str,
        patient_id: str,
        occurred_at: datetime | None,
        **fields: Any,
    ) -> E:
        """The validated event of ``model`` for the fact ``key``; fields given as None are left
        to the contract's default. Raises EventValidationError."""
        payload: dict[str, Any] = {
            name: value for name, value in fields.items() if value is not None
        }
        # Checked before the id is derived from them; the messages name no value.
        if not isinstance(key, str) or not key:
            raise EventValidationError(f"{model.EVENT_TYPE}: key: must be a non-empty string")
        if not isinstance(patient_id, str):
            raise EventValidationError(f"{model.EVENT_TYPE}: patient_id: must be a string")
        payload.update(
            event_id=client_event_id(model.EVENT_TYPE, patient_id, key),
            event_type=model.EVENT_TYPE,
            patient_id=patient_id,
            occurred_at=occurred_at if occurred_at is not None else datetime.now(UTC),
        )
        return self._validated(model, payload)

    @staticmethod
    def _validated(model: type[E], payload: dict[str, Any]) -> E:
        # The payload as the intake receives it from JSON (timestamps as ISO text, enums as
        # their values), checked by the intake's own function.
        event = validate_event(to_jsonable_python(payload), INPUT_EVENT_TYPES)
        assert isinstance(event, model)
        return event

    async def publish_event(self, event: E) -> E:
        """Validate a ready event as the intake does, publish it, return it once acknowledged."""
        if not isinstance(event, Event):
            raise TypeError("publish_event takes a contract event model")
        validated = self._validated(type(event), event.model_dump(mode="json"))
        await self._send(validated)
        return validated

    async def publish_fhir(self, resource: Mapping[str, Any] | bytes) -> FhirMapping:
        """Publish one FHIR R4 resource or Bundle (a dict, or its JSON) to ``fhir-resources``,
        after mapping it as the worker will; returns that mapping once the broker acknowledged
        the record. A resource that cannot be mapped whole raises ``FhirRefusedError`` (its
        problems: FHIR paths and reasons, no values) and publishes nothing: the worker would
        dead-letter it. The record is keyed by its patient (docs/fhir.md)."""
        value = resource if isinstance(resource, bytes) else json.dumps(resource).encode()
        mapping = map_fhir_record(value, FhirRules.from_settings(self.settings))
        if mapping.problems:
            raise FhirRefusedError(mapping.problems)
        if self._producer is None:
            raise RuntimeError("the Publisher is not started: use 'async with Publisher(...)'")
        topic = self.settings.topic_name(FHIR_RESOURCES.base_name)
        with tracing.produce_span(topic, "FHIR", new_trace=True) as headers:
            future = await self._producer.send(
                topic, value, key=fhir_record_key(mapping.events), headers=headers
            )
        await future
        return mapping

    async def _send(self, event: Event) -> None:
        if self._producer is None:
            raise RuntimeError("the Publisher is not started: use 'async with Publisher(...)'")
        topic = self.settings.topic_name(INPUT_EVENT_TOPIC[event.event_type].base_name)
        value = self._encoder.encode(event)
        # An upstream producer: each event starts its own trace, as `medstream publish` does.
        with tracing.produce_span(topic, event.event_type, new_trace=True) as headers:
            future = await self._producer.send(
                topic, value, key=event.patient_id.encode("utf-8"), headers=headers
            )
        await future

    async def _publish(
        self,
        model: type[E],
        key: str,
        patient_id: str,
        occurred_at: datetime | None,
        **fields: Any,
    ) -> E:
        event = self.build(model, key=key, patient_id=patient_id, occurred_at=occurred_at, **fields)
        await self._send(event)
        return event

    # --- one typed method per input event -------------------------------------------------
    # The parameters are the model's fields (tests/unit/test_client_ids.py checks that they
    # match); the rules are the model's. None means "not given": the contract's default.

    async def prescribe(
        self,
        *,
        key: str,
        patient_id: str,
        medication_id: str,
        name: str,
        dose_quantity: float,
        dose_unit: str,
        supply_quantity: float,
        refills_remaining: int,
        rxnorm_code: str | None = None,
        refill_threshold_days: int | None = None,
        route: str | None = None,
        occurred_at: datetime | None = None,
    ) -> MedicationPrescribed:
        """Publish a MedicationPrescribed to medication-events."""
        return await self._publish(
            MedicationPrescribed,
            key,
            patient_id,
            occurred_at,
            medication_id=medication_id,
            name=name,
            dose_quantity=dose_quantity,
            dose_unit=dose_unit,
            supply_quantity=supply_quantity,
            refills_remaining=refills_remaining,
            rxnorm_code=rxnorm_code,
            refill_threshold_days=refill_threshold_days,
            route=route,
        )

    async def discontinue(
        self,
        *,
        key: str,
        patient_id: str,
        medication_id: str,
        reason: str | None = None,
        occurred_at: datetime | None = None,
    ) -> MedicationDiscontinued:
        """Publish a MedicationDiscontinued to medication-events."""
        return await self._publish(
            MedicationDiscontinued,
            key,
            patient_id,
            occurred_at,
            medication_id=medication_id,
            reason=reason,
        )

    async def dose_taken(
        self,
        *,
        key: str,
        patient_id: str,
        medication_id: str,
        quantity: float | None = None,
        taken_at: datetime | None = None,
        scheduled_for: datetime | None = None,
        occurred_at: datetime | None = None,
    ) -> DoseTaken:
        """Publish a DoseTaken to medication-events."""
        return await self._publish(
            DoseTaken,
            key,
            patient_id,
            occurred_at,
            medication_id=medication_id,
            quantity=quantity,
            taken_at=taken_at,
            scheduled_for=scheduled_for,
        )

    async def dose_skipped(
        self,
        *,
        key: str,
        patient_id: str,
        medication_id: str,
        scheduled_for: datetime | None = None,
        reason: str | None = None,
        occurred_at: datetime | None = None,
    ) -> DoseSkipped:
        """Publish a DoseSkipped to medication-events."""
        return await self._publish(
            DoseSkipped,
            key,
            patient_id,
            occurred_at,
            medication_id=medication_id,
            scheduled_for=scheduled_for,
            reason=reason,
        )

    async def refill_dispensed(
        self,
        *,
        key: str,
        patient_id: str,
        medication_id: str,
        quantity: float,
        refills_remaining: int | None = None,
        occurred_at: datetime | None = None,
    ) -> RefillDispensed:
        """Publish a RefillDispensed to medication-events."""
        return await self._publish(
            RefillDispensed,
            key,
            patient_id,
            occurred_at,
            medication_id=medication_id,
            quantity=quantity,
            refills_remaining=refills_remaining,
        )

    async def set_schedule(
        self,
        *,
        key: str,
        patient_id: str,
        medication_id: str,
        timezone: str,
        times_of_day: Sequence[str],
        days_of_week: Sequence[Weekday | str] | None = None,
        start_date: date | None = None,
        end_date: date | None = None,
        occurred_at: datetime | None = None,
    ) -> ScheduleSet:
        """Publish a ScheduleSet to schedule-events."""
        return await self._publish(
            ScheduleSet,
            key,
            patient_id,
            occurred_at,
            medication_id=medication_id,
            timezone=timezone,
            times_of_day=list(times_of_day),
            days_of_week=None if days_of_week is None else list(days_of_week),
            start_date=start_date,
            end_date=end_date,
        )

    async def clear_schedule(
        self,
        *,
        key: str,
        patient_id: str,
        medication_id: str,
        occurred_at: datetime | None = None,
    ) -> ScheduleCleared:
        """Publish a ScheduleCleared to schedule-events."""
        return await self._publish(
            ScheduleCleared, key, patient_id, occurred_at, medication_id=medication_id
        )

    async def set_contact_preferences(
        self,
        *,
        key: str,
        patient_id: str,
        channels: Sequence[ContactChannel | dict[str, str]],
        timezone: str,
        quiet_hours: QuietHours | dict[str, str] | None = None,
        caregiver_channels: Sequence[ContactChannel | dict[str, str]] | None = None,
        occurred_at: datetime | None = None,
    ) -> ContactPreferencesSet:
        """Publish a ContactPreferencesSet to patient-events."""
        return await self._publish(
            ContactPreferencesSet,
            key,
            patient_id,
            occurred_at,
            channels=list(channels),
            timezone=timezone,
            quiet_hours=quiet_hours,
            caregiver_channels=None if caregiver_channels is None else list(caregiver_channels),
        )


__all__ = ["Publisher"]
