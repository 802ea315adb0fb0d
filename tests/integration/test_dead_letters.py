"""Through the real broker and the app's agent: valid events applied, bad ones dead-lettered."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.app import Medstream, create_app
from streams.contracts.codecs import EventDecoder, encode_avro, encode_confluent
from streams.contracts.models import DeadLetter, DoseTaken, MedicationPrescribed
from streams.contracts.schemas import default_catalog
from streams.kafka_client import client_options
from streams.settings import OutputEncoding, Settings
from streams.topics import ensure_topics
from tests.kafka_helpers import consume, produce, running

pytestmark = pytest.mark.integration

PATIENT_NAME = "Margaret Hamilton"
PATIENT_EMAIL = "margaret.hamilton@example.org"
PATIENT_PHONE = "+1-617-555-0199"


def prescribed(event_id: str, patient_id: str, **overrides: Any) -> dict[str, Any]:
    payload = {
        "event_id": event_id,
        "event_type": "MedicationPrescribed",
        "patient_id": patient_id,
        "occurred_at": "2026-11-29T08:00:00+01:00",
        "medication_id": "med-1",
        "name": "Warfarin 5 mg tablet",
        "rxnorm_code": "11289",
        "dose_quantity": 5,
        "dose_unit": "mg",
        "supply_quantity": 150,
        "refills_remaining": 2,
    }
    payload.update(overrides)
    return payload


def dose_taken(event_id: str, patient_id: str) -> DoseTaken:
    return DoseTaken(
        event_id=event_id,
        patient_id=patient_id,
        occurred_at=datetime(2026, 11, 29, 9, 0, tzinfo=UTC),
        medication_id="med-1",
    )


def as_json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


async def settle(medstream: Medstream, expected: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while medstream.stats.total_settled < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)


def decoded_dead_letters(records: list[Any]) -> list[DeadLetter]:
    return [DeadLetter.model_validate_json(record.value) for record in records]


async def test_a_mix_of_good_and_bad_input(settings: Settings) -> None:
    await ensure_topics(settings)
    medstream = create_app(settings)
    catalog = default_catalog()
    dose_schema = catalog.by_name("DoseTaken")
    assert dose_schema is not None
    valid_avro = encode_avro(dose_schema, dose_taken("e-avro", "p1"))
    topic = settings.topic_name("medication-events")

    good = [
        (b"p1", as_json(prescribed("e-json", "p1"))),
        (b"p1", valid_avro),
    ]
    duplicate = [(b"p1", as_json(prescribed("e-json", "p1")))]
    bad = [
        (b"p1", valid_avro[:-4]),  # truncated Avro
        (b"p2", b'{"event_id": "\xff\xfe"}'),  # not UTF-8
        (b"p2", as_json({**prescribed("e-unknown", "p2"), "event_type": "MedicationTeleported"})),
        (
            b"p3",
            as_json(
                prescribed(
                    "e-invalid",
                    "p3",
                    dose_quantity=0,
                    supply_quantity=-5,
                    name=PATIENT_NAME,
                    dose_unit=PATIENT_EMAIL,
                    rxnorm_code=PATIENT_PHONE,
                )
            ),
        ),
        (b"p4", b"\x00\x00\x00\x00\x07" + valid_avro[10:]),  # Confluent framing, no registry
        (b"p5", as_json({"event_type": "ScheduleCleared", "patient_id": "p5"})),  # no event_id
        (b"someone-else", as_json(prescribed("e-wrong-key", "p6"))),
        (b"p7", b"\x13\x37 garbage"),
    ]
    last = [(b"p8", as_json(prescribed("e-last", "p8")))]
    records = good + duplicate + bad + last

    async with running(medstream):
        await produce(settings, topic, records)
        await settle(medstream, len(records))
        dead = decoded_dead_letters(
            await consume(settings, settings.topic_name("dead-letters"), count=len(bad))
        )
        stats = medstream.stats
        assert stats.total_consumed == len(records)
        assert sum(stats.processed.values()) == len(good) + len(last)
        assert sum(stats.duplicates.values()) == 1
        assert sum(stats.dead_lettered.values()) == len(bad)
        # The same counts reach the Prometheus metrics the worker serves on /metrics.
        rendered = medstream.metrics.render().decode()
        assert f'medstream_events_consumed_total{{topic="{topic}"}} {len(records)}.0' in rendered
        assert 'medstream_dead_letters_total{reason="DecodeError"}' in rendered
        assert 'medstream_duplicates_total{event_type="MedicationPrescribed"} 1.0' in rendered
        # The worker is still running: the agent survived every bad record before the last.
        assert medstream.patients.store.seen("p8").entries

    assert len(dead) == len(bad)
    by_value = {base64.b64decode(d.value or ""): d for d in dead}
    assert set(by_value) == {value for _, value in bad}
    for key, value in bad:
        letter = by_value[value]
        assert letter.original_topic == topic
        assert base64.b64decode(letter.key or "") == key
        assert letter.error_type in {"DecodeError", "ValidationError"}
        assert letter.error_message
        for secret in (PATIENT_NAME, PATIENT_EMAIL, PATIENT_PHONE, "Margaret", "555-0199"):
            assert secret not in letter.error_message
    reasons = {value: by_value[value].error_message for _, value in bad}
    assert "truncated" in reasons[bad[0][1]]
    assert "UTF-8" in reasons[bad[1][1]]
    assert "event_type: not an event type of the contract" in reasons[bad[2][1]]
    assert "dose_quantity" in reasons[bad[3][1]]
    assert "supply_quantity" in reasons[bad[3][1]]
    assert "no schema registry is configured" in reasons[bad[4][1]]
    assert "event_id" in reasons[bad[5][1]]
    assert "record key" in reasons[bad[6][1]]
    assert "unrecognised encoding" in reasons[bad[7][1]]


@pytest.fixture
async def schema_registry() -> AsyncIterator[tuple[str, dict[str, int]]]:
    """A real HTTP server answering the schema registry's GET /schemas/ids/{id}; its second
    item says how many requests to come fail with 503 (an outage)."""
    dose_schema = default_catalog().by_name("DoseTaken")
    assert dose_schema is not None

    outage = {"left": 0}

    async def schema_by_id(request: web.Request) -> web.Response:
        if outage["left"]:
            outage["left"] -= 1
            return web.json_response({"message": "unavailable"}, status=503)
        if request.match_info["schema_id"] != "42":
            return web.json_response({"error_code": 40403, "message": "not found"}, status=404)
        return web.json_response({"schema": json.dumps(dose_schema.source)})

    application = web.Application()
    application.router.add_get("/schemas/ids/{schema_id}", schema_by_id)
    runner = web.AppRunner(application)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", outage
    finally:
        await runner.cleanup()


async def test_confluent_framing_resolves_through_a_schema_registry(
    settings: Settings, schema_registry: tuple[str, dict[str, int]]
) -> None:
    url, outage = schema_registry
    # The registry is down for its first answers: the records wait for it, none is
    # dead-lettered for an outage that was not its fault.
    outage["left"] = 3
    settings = settings.model_copy(update={"schema_registry_url": url})
    await ensure_topics(settings)
    medstream = create_app(settings)
    dose_schema = default_catalog().by_name("DoseTaken")
    assert dose_schema is not None
    known = encode_confluent(42, dose_schema, dose_taken("e-confluent", "p1"))
    unknown = encode_confluent(43, dose_schema, dose_taken("e-unknown-id", "p1"))
    records = [
        (b"p1", as_json(prescribed("e-first", "p1"))),
        (b"p1", known),
        (b"p1", unknown),
    ]
    async with running(medstream):
        await produce(settings, settings.topic_name("medication-events"), records)
        await settle(medstream, len(records))
        assert medstream.stats.processed["DoseTaken"] == 1
        assert medstream.stats.processed["MedicationPrescribed"] == 1
        dead = decoded_dead_letters(
            await consume(settings, settings.topic_name("dead-letters"), count=1)
        )
    assert [d.error_message for d in dead] == ["schema id 43 is unknown to the schema registry"]
    assert outage["left"] == 0


async def test_outputs_can_be_avro(settings: Settings) -> None:
    settings = settings.model_copy(update={"output_encoding": OutputEncoding.AVRO})
    await ensure_topics(settings)
    medstream = create_app(settings)
    async with running(medstream):
        await produce(settings, settings.topic_name("medication-events"), [(b"p1", b"{oops")])
        records = await consume(settings, settings.topic_name("dead-letters"), count=1)
    assert records[0].value[:2] == b"\xc3\x01"
    letter = EventDecoder(default_catalog()).decode(records[0].value)
    assert isinstance(letter, DeadLetter)
    assert letter.error_type == "DecodeError"


async def set_max_message_bytes(settings: Settings, topic: str, limit: int) -> None:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": str(limit)})]
        )
    finally:
        await admin.close()


async def test_an_unstorable_dead_letter_holds_the_stream_until_it_is_stored(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    dead_letters = settings.topic_name("dead-letters")
    # The broker refuses every dead letter: they are all larger than this.
    await set_max_message_bytes(settings, dead_letters, 100)
    medstream = create_app(settings)
    stats = medstream.stats
    topic = settings.topic_name("medication-events")
    async with running(medstream):
        await produce(
            settings,
            topic,
            [
                (b"p-hold", b"{not json"),
                (b"p-hold", as_json(prescribed("hold-1", "p-hold"))),  # same partition, behind it
            ],
        )
        # The worker has reached the bad record (however slowly it started); then it has a
        # few seconds to get it wrong, by skipping it or the event behind it.
        async with asyncio.timeout(60):
            while stats.total_consumed < 1:
                await asyncio.sleep(0.1)
        await asyncio.sleep(6)
        # Neither stored nor skipped: the event behind it waits too.
        assert stats.total_settled == 0
        assert stats.total_consumed == 1
        await set_max_message_bytes(settings, dead_letters, 1_048_588)
        async with asyncio.timeout(30):
            while stats.total_settled < 2:
                await asyncio.sleep(0.2)
    assert stats.dead_lettered == {"DecodeError": 1}
    assert stats.processed == {"MedicationPrescribed": 1}
    (stored,) = await consume(settings, dead_letters, 1, 10)
    assert DeadLetter.model_validate_json(stored.value).offset == 0


def test_the_valid_events_used_above_are_valid() -> None:
    MedicationPrescribed.model_validate(prescribed("x", "p"))
