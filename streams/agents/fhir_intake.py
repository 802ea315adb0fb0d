"""The FHIR intake: resources and Bundles from `fhir-resources` become contract events on the
input topics; what cannot be mapped is dead-lettered with its FHIR path, the rest still sent."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import faust
from aiokafka.errors import KafkaError

from streams.agents.emitter import Emitter, Sent
from streams.agents.intake import Failure, Intake, ProcessingError, Settled
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


@dataclass(frozen=True)
class Unconfirmed:
    """A mapped event sent (``sent``) or still to send (None), not yet acknowledged; ``what``
    names its record in log lines."""

    topic: faust.TopicT
    event: Event
    sent: Sent | None
    what: str


@dataclass
class FhirIntake:
    """Runs the FHIR agent in the intake's batches: maps each record and sends its events
    without waiting, dead-letters what could not be mapped (awaited, as every dead letter is),
    and, as a batch ends, waits for the broker's acknowledgements of every event sent before
    the records' offsets move on. A crash in between maps the records again: the same
    event_ids, dropped as repeats."""

    rules: FhirRules
    emitter: Emitter
    intake: Intake
    topics: Mapping[TopicSpec, faust.TopicT]
    metrics: Metrics

    async def run(self, stream: faust.StreamT[Any]) -> None:
        unconfirmed: deque[Unconfirmed] = deque()

        async def handle(record: faust.EventT[Any], _finish: Callable[[], Awaitable[None]]) -> None:
            await self.handle(record.message, unconfirmed)

        async def finish() -> None:
            await self.confirm(unconfirmed)

        await self.intake.run_batches(stream, handle, finish)

    async def handle(self, message: Any, unconfirmed: deque[Unconfirmed]) -> None:
        """Map one record, send its events (their sends joining ``unconfirmed``) and
        dead-letter what could not be mapped; never raises."""
        with tracing.consume_span(
            message.topic, message.partition, message.offset, message.headers
        ):
            self.metrics.consumed(message.topic)
            plan = self._plan(message.value)
            what = (
                f"event mapped from {message.topic} partition {message.partition} "
                f"offset {message.offset}"
            )
            for spec, event in plan.sends:
                topic = self.topics[spec]
                try:
                    sent: Sent | None = await self.emitter.emit(topic, event)
                except KafkaError:
                    sent = None  # refused before it left (a full buffer, no metadata): later
                unconfirmed.append(Unconfirmed(topic, event, sent, what))
            if plan.sends or plan.failure is None:
                # One per FHIR record (a Bundle of context only maps to nothing); the events it
                # became are counted again as the patient agent applies them.
                self.intake.settle(Settled.PROCESSED, FHIR_RECORD)
            if plan.failure is not None:
                await self.intake.dead_letter(message, plan.failure)

    async def confirm(self, unconfirmed: deque[Unconfirmed]) -> None:
        """Return once the broker acknowledged every event in ``unconfirmed`` (sending again
        what it refused or what was never sent), each dropped from it once acknowledged."""
        while unconfirmed:
            item = unconfirmed[0]
            await self.emitter.send_confirmed(item.topic, item.event, item.what, sent=item.sent)
            unconfirmed.popleft()

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
