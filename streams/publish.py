"""Publishing input events from a file: validated against the contract, keyed by patient_id."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from streams.contracts.codecs import ContractError, EventDecoder, encode_avro, validate_event
from streams.contracts.models import OUTPUT_EVENT_TYPES, Event
from streams.contracts.schemas import SchemaCatalog, default_catalog
from streams.kafka_client import client_options
from streams.observability import tracing
from streams.settings import Settings
from streams.topics import EVENT_INPUT_TOPICS, FHIR_RESOURCES, TopicSpec

INPUT_EVENT_TOPIC: dict[str, TopicSpec] = {
    event_type: spec for spec in EVENT_INPUT_TOPICS for event_type in spec.event_types
}

OUTPUT_EVENT_NAMES = frozenset(model.EVENT_TYPE for model in OUTPUT_EVENT_TYPES)


@dataclass(frozen=True)
class ValidEvent:
    """One event of the file that meets the contract, with the bytes to publish."""

    line: int
    event: Event
    payload: bytes

    @property
    def topic(self) -> TopicSpec:
        return INPUT_EVENT_TOPIC[self.event.event_type]


@dataclass(frozen=True)
class InvalidEvent:
    """One line of the file that does not meet the contract, and why."""

    line: int
    reason: str


@dataclass(frozen=True)
class CheckedFile:
    """A file's events, split into those that are valid and those that are not."""

    valid: list[ValidEvent]
    invalid: list[InvalidEvent]


def _records(text: str) -> list[tuple[int, bytes]]:
    """(line number, JSON bytes) of each event in a JSON-lines, JSON object or JSON array text."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as error:
            return [(error.lineno, text.encode())]
        # Each element is reported by its position, counted like a line from 1.
        return [(index, json.dumps(item).encode()) for index, item in enumerate(items, 1)]
    if stripped.startswith("{"):
        try:
            json.loads(text)
        except json.JSONDecodeError:
            pass  # not one object: read it as JSON lines below
        else:
            return [(text[: text.index("{")].count("\n") + 1, text.encode())]
    return [
        (number, line.encode())
        for number, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]


def check_events(text: str, catalog: SchemaCatalog | None = None) -> CheckedFile:
    """Validate every event of a file's text as the agents would."""
    decoder = EventDecoder(catalog or default_catalog())
    input_types = set(INPUT_EVENT_TOPIC)
    valid: list[ValidEvent] = []
    invalid: list[InvalidEvent] = []
    for line, payload in _records(text):
        try:
            decoded = decoder.decode_payload(payload)
            event_type = decoded.get("event_type") if isinstance(decoded, dict) else None
            if event_type in OUTPUT_EVENT_NAMES:
                raise ContractError(f"event_type: {event_type} is an output of medstream")
            event = validate_event(decoded, input_types)
        except ContractError as error:
            invalid.append(InvalidEvent(line, error.message))
            continue
        valid.append(ValidEvent(line, event, payload))
    return CheckedFile(valid, invalid)


def check_file(path: Path) -> CheckedFile:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        return CheckedFile([], [InvalidEvent(0, f"the file is not UTF-8 (byte {error.start})")])
    return check_events(text)


async def publish_events(
    settings: Settings, events: Sequence[ValidEvent], *, avro: bool = False
) -> Counter[str]:
    """Send the events in order, keyed by patient_id; returns the count per topic.

    Waits for every acknowledgement, so that a successful return means all are stored.
    """
    catalog = default_catalog()
    producer = await _started_producer(settings)
    sent: Counter[str] = Counter()
    try:
        futures = []
        for item in events:
            topic = settings.topic_name(item.topic.base_name)
            value = item.payload
            if avro:
                schema = catalog.by_name(item.event.event_type)
                assert schema is not None
                value = encode_avro(schema, item.event)
            # medstream publish is an upstream producer: each event starts its own trace.
            with tracing.produce_span(topic, item.event.event_type, new_trace=True) as headers:
                futures.append(
                    await producer.send(
                        topic, value, key=item.event.patient_id.encode("utf-8"), headers=headers
                    )
                )
            sent[topic] += 1
        for future in futures:
            await future
    finally:
        await producer.stop()
    return sent


async def _started_producer(settings: Settings) -> AIOKafkaProducer:
    # Idempotent, acks from every in-sync replica: a retried batch can neither be lost nor
    # overtake the next one, so one patient's records keep their order.
    producer = AIOKafkaProducer(acks="all", enable_idempotence=True, **client_options(settings))
    await producer.start()
    return producer


def mapped_patients(events: Sequence[Mapping[str, Any]]) -> list[str]:
    """The patients a FHIR record's mapped events are about, in their order."""
    return list(dict.fromkeys(str(event["patient_id"]) for event in events))


def fhir_record_key(events: Sequence[Mapping[str, Any]]) -> bytes | None:
    """The key of a FHIR record: its patient's id, so that one patient's resources stay on one
    partition and in order (a Bundle of several patients is keyed by the first)."""
    patients = mapped_patients(events)
    return patients[0].encode("utf-8") if patients else None


async def publish_fhir(settings: Settings, records: Sequence[tuple[bytes, bytes | None]]) -> str:
    """Send FHIR resources or Bundles, each as it is with its key, to ``fhir-resources``, in
    their order; returns the topic once the broker acknowledged every one."""
    topic = settings.topic_name(FHIR_RESOURCES.base_name)
    producer = await _started_producer(settings)
    try:
        futures = []
        for value, key in records:
            with tracing.produce_span(topic, "FHIR", new_trace=True) as headers:
                futures.append(await producer.send(topic, value, key=key, headers=headers))
        for future in futures:
            await future
    finally:
        await producer.stop()
    return topic
