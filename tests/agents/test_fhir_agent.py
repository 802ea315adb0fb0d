"""Agent tests of the FHIR intake: a Bundle in, its events out on the input topics keyed by
patient; an unmappable entry dead-lettered whole while the rest still goes; nothing stops it."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import faust
import pytest
from aiokafka.errors import KafkaTimeoutError, NotLeaderForPartitionError

from streams.agents.emitter import Sent
from streams.app import Medstream
from streams.contracts.models import DeadLetter, Event, MedicationPrescribed, ScheduleSet
from streams.topology import MAP_FHIR_RESOURCES
from tests.agents.harness import Emitted, Feed, feeding, of_type
from tests.fhir_scenarios import PATIENT, bundle, metformin, patient, unmappable

FHIR = "fhir-resources"


def topics_of(emitted: Emitted) -> list[tuple[str, str]]:
    return [(topic, event.event_type) for topic, event in emitted]


async def test_a_bundle_becomes_a_prescription_and_a_schedule_on_the_input_topics(
    medstream: Medstream, emitted: Emitted
) -> None:
    async with feeding(medstream, MAP_FHIR_RESOURCES.name) as feed:
        await feed.put(FHIR, bundle(patient(), metformin()), key=PATIENT.encode())
    assert topics_of(emitted) == [
        (medstream.settings.topic_name("medication-events"), "MedicationPrescribed"),
        (medstream.settings.topic_name("schedule-events"), "ScheduleSet"),
    ]
    [(_, prescribed)] = of_type(emitted, MedicationPrescribed)
    [(_, schedule)] = of_type(emitted, ScheduleSet)
    assert prescribed.patient_id == schedule.patient_id == PATIENT
    assert prescribed.medication_id == schedule.medication_id == "mr-metformin"


async def test_the_same_bundle_twice_gives_the_same_event_ids(
    medstream: Medstream, emitted: Emitted
) -> None:
    value = bundle(patient(), metformin())
    async with feeding(medstream, MAP_FHIR_RESOURCES.name) as feed:
        await feed.put(FHIR, value, key=PATIENT.encode())
        await feed.put(FHIR, value, key=PATIENT.encode())
    ids = [event.event_id for _, event in emitted]
    assert len(ids) == 4
    assert ids[:2] == ids[2:]


async def test_an_unmappable_entry_is_dead_lettered_whole_and_the_rest_still_sent(
    medstream: Medstream, emitted: Emitted
) -> None:
    prn_value, path = unmappable()["prn"]
    [prn] = [entry["resource"] for entry in json.loads(prn_value)["entry"]]
    mixed = bundle(patient(), prn, metformin())
    async with feeding(medstream, MAP_FHIR_RESOURCES.name) as feed:
        await feed.put(FHIR, mixed, key=PATIENT.encode())
    sent = [event.event_type for _, event in emitted if not isinstance(event, DeadLetter)]
    assert "MedicationPrescribed" in sent
    [(topic, letter)] = of_type(emitted, DeadLetter)
    assert topic == medstream.settings.topic_name("dead-letters")
    assert letter.error_type == "FhirUnmappable"
    assert path in letter.error_message
    assert "Bundle.entry[1]" in letter.error_message
    assert letter.value is not None
    assert base64.b64decode(letter.value) == mixed


async def test_no_record_stops_the_agent(medstream: Medstream, emitted: Emitted) -> None:
    hostile: list[Any] = [
        b"",
        b"\x00" * 4096,
        b"[]",
        b'{"resourceType": "Bundle", "type": "collection", "entry": "nope"}',
        b'{"resourceType": "' + b"A" * 100_000 + b'"}',
    ]
    # Valid, and nothing to map: 500 entries without a resource (a batch of requests).
    empty = json.dumps({"resourceType": "Bundle", "type": "batch", "entry": [{}] * 500})
    async with feeding(medstream, MAP_FHIR_RESOURCES.name) as feed:
        for value in hostile:
            await feed.put(FHIR, value, key=None)
        await feed.put(FHIR, empty.encode(), key=None)
        assert emitted == [(t, e) for t, e in emitted if isinstance(e, DeadLetter)]
        await feed.put(FHIR, bundle(patient(), metformin()), key=PATIENT.encode())
    letters = [letter for _, letter in of_type(emitted, DeadLetter)]
    assert len(letters) == len(hostile)
    assert all(letter.error_type.startswith("Fhir") for letter in letters), [
        letter.error_type for letter in letters
    ]
    assert of_type(emitted, MedicationPrescribed)


async def test_a_record_is_settled_only_once_the_broker_acknowledged_its_events(
    medstream: Medstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The mapped events are sent without waiting (a batch of records shares one round trip),
    # but the record is not settled, nor its offset acknowledged to Faust, until every one of
    # them is stored; one the broker refused is sent again first.
    emitter = medstream.patients.store.emitter
    loop = asyncio.get_running_loop()
    held: list[asyncio.Future[None]] = []
    sends: list[str] = []

    async def emit(topic: faust.TopicT, event: Event, *, wait: bool = False) -> Sent:
        sends.append(event.event_type)
        acknowledged: asyncio.Future[None] = loop.create_future()
        held.append(acknowledged)
        return Sent(topic, event, acknowledged)

    monkeypatch.setattr(emitter, "emit", emit)
    stats = medstream.stats
    agent = medstream.app.agents[MAP_FHIR_RESOURCES.name]
    async with agent.test_context() as ctx:
        feed = Feed(medstream, ctx)
        feed.topic = FHIR
        message = await ctx.put(value=bundle(patient(), metformin()), key=PATIENT.encode())
        async with asyncio.timeout(5):
            while len(held) < 2:
                await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        assert sends == ["MedicationPrescribed", "ScheduleSet"]
        assert stats.total_settled == 0
        assert not message.message.acked
        held[0].set_result(None)
        held[1].set_exception(NotLeaderForPartitionError())
        # The refused one is sent again (after a back-off) and acknowledged this time.
        async with asyncio.timeout(10):
            while len(held) < 3:
                await asyncio.sleep(0.01)
        assert sends[2] == "ScheduleSet"
        assert stats.total_settled == 0
        held[2].set_result(None)
        async with asyncio.timeout(5):
            while stats.total_settled == 0:
                await asyncio.sleep(0.01)
        assert stats.processed == {"FhirRecord": 1}
        assert message.message.acked


async def test_an_event_the_producer_refused_to_take_is_sent_before_the_record_settles(
    medstream: Medstream, emitted: Emitted, monkeypatch: pytest.MonkeyPatch
) -> None:
    emitter = medstream.patients.store.emitter
    captured = emitter.emit
    refused: list[str] = []

    async def emit(topic: faust.TopicT, event: Event, *, wait: bool = False) -> Sent:
        if not refused:
            refused.append(event.event_type)
            raise KafkaTimeoutError  # the producer's buffer full: nothing left
        return await captured(topic, event, wait=wait)

    monkeypatch.setattr(emitter, "emit", emit)
    async with feeding(medstream, MAP_FHIR_RESOURCES.name) as feed:
        await feed.put(FHIR, bundle(patient(), metformin()), key=PATIENT.encode())
    assert refused == ["MedicationPrescribed"]
    assert sorted(event.event_type for _, event in emitted) == [
        "MedicationPrescribed",
        "ScheduleSet",
    ]
    assert medstream.stats.processed == {"FhirRecord": 1}
