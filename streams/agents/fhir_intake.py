"""The FHIR intake: resources and Bundles from `fhir-resources` become contract events on the
input topics; what cannot be mapped is dead-lettered with its FHIR path, the rest still sent."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import faust

from streams.agents.emitter import Emitter
from streams.agents.intake import Failure, Intake, ProcessingError
from streams.contracts.codecs import ContractError, validate_event
from streams.contracts.models import Event
from streams.fhir import FhirProblem, FhirRules, map_fhir_record
from streams.observability import tracing
from streams.observability.metrics import Metrics
from streams.publish import INPUT_EVENT_TOPIC
from streams.topics import TopicSpec
from streams.topology import MAP_FHIR_RESOURCES

log = logging.getLogger(__name__)

# The event_type label of medstream_events_processed_total for a mapped FHIR record.
FHIR_RECORD = "FhirRecord"
# A dead letter's reason names this many problems, then how many more there were.
_REPORTED_PROBLEMS = 5


@dataclass(frozen=True)
class FhirPlan:
    """What to do with one FHIR record: the events to send, each to its input topic, and the
    dead letter's failure when part of it (or all) could not be mapped."""

    sends: tuple[tuple[TopicSpec, Event], ...]
    failure: Failure | None


def plan_fhir_record(
    events: Sequence[Mapping[str, Any]], problems: Sequence[FhirProblem]
) -> FhirPlan:
    """The mapped events, validated as any publisher's are, and one failure naming every
    problem's FHIR path (the record is dead-lettered whole: a replay after a fix sends its
    mapped events again, and their derived event_ids make that harmless)."""
    sends: list[tuple[TopicSpec, Event]] = []
    reasons = [f"{problem.path}: {problem.reason}" for problem in problems]
    error_types = [problem.error_type for problem in problems]
    for payload in events:
        try:
            event = validate_event(dict(payload), INPUT_EVENT_TOPIC.keys())
        except ContractError as error:
            # The mapper's own defect: its events are meant to meet the contract.
            reasons.append(f"a mapped {payload.get('event_type')!s:.40} event: {error.message}")
            error_types.append(ProcessingError.error_type)
            continue
        sends.append((INPUT_EVENT_TOPIC[event.event_type], event))
    if not reasons:
        return FhirPlan(tuple(sends), None)
    shown = "; ".join(reasons[:_REPORTED_PROBLEMS])
    if len(reasons) > _REPORTED_PROBLEMS:
        shown += f"; and {len(reasons) - _REPORTED_PROBLEMS} more"
    return FhirPlan(tuple(sends), Failure(False, error_types[0], shown))


@dataclass
class FhirIntake:
    """Runs the FHIR agent: maps each record, sends its events and waits for the broker's
    acknowledgements, dead-letters what could not be mapped, and only then lets the offset move
    on. A crash in between maps the record again: the same event_ids, dropped as repeats."""

    rules: FhirRules
    emitter: Emitter
    intake: Intake
    topics: Mapping[TopicSpec, faust.TopicT]
    metrics: Metrics

    async def run(self, stream: faust.StreamT[Any]) -> None:
        async for record in stream.events():
            await self.handle(record.message)

    async def handle(self, message: Any) -> None:
        with tracing.consume_span(
            message.topic, message.partition, message.offset, message.headers
        ):
            self.metrics.consumed(message.topic)
            plan = self._plan(message.value)
            sent = [await self.emitter.emit(self.topics[spec], event) for spec, event in plan.sends]
            for handed in sent:
                await self.emitter.send_confirmed(
                    handed.topic,
                    handed.event,
                    f"event mapped from {message.topic} partition {message.partition} "
                    f"offset {message.offset}",
                    sent=handed,
                )
            if plan.sends or plan.failure is None:
                # One per FHIR record (a Bundle of context only maps to nothing); the events it
                # became are counted again as the patient agent applies them.
                self.metrics.processed(FHIR_RECORD)
            if plan.failure is not None:
                await self.intake.send_dead_letter(message, plan.failure)
                self.metrics.dead_lettered(plan.failure.error_type)

    def _plan(self, value: bytes | None) -> FhirPlan:
        try:
            mapping = map_fhir_record(value or b"", self.rules)
            return plan_fhir_record(mapping.events, mapping.problems)
        except Exception as error:
            # No record may stop the agent: the mapper's own failure is dead-lettered too.
            log.error("mapping a FHIR record failed: %s", type(error).__name__)
            return FhirPlan(
                (),
                Failure(
                    False,
                    ProcessingError.error_type,
                    f"{type(error).__name__} while mapping a FHIR record",
                ),
            )


def install_fhir_intake(app: faust.App, source: faust.TopicT, fhir_intake: FhirIntake) -> None:
    """Declare the FHIR agent, named as in ``streams.topology``."""

    @app.agent(source, name=MAP_FHIR_RESOURCES.name)
    async def map_fhir_resources(stream: faust.StreamT[Any]) -> None:
        await fhir_intake.run(stream)
