"""streams.client against the real broker: the Publisher's records, the Subscriber's alerts,
their commits, and a Publisher-to-worker-to-Subscriber round trip."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from streams.app import create_app
from streams.client import Alert, EventValidationError, Publisher, Subscriber, Undecodable
from streams.contracts.codecs import (
    AVRO_SINGLE_OBJECT_MARKER,
    EventDecoder,
    encode_avro,
    encode_confluent,
    encode_json,
)
from streams.contracts.models import (
    ContactChannel,
    DoseTaken,
    Event,
    InteractionWarning,
    RefillAlert,
    ReminderDue,
)
from streams.contracts.schemas import default_catalog
from streams.contracts.vocabulary import ChannelKind, RefillReason, Severity
from streams.settings import Settings
from streams.topics import INPUT_TOPICS, ensure_topics
from tests.kafka_helpers import consume, produce, running

pytestmark = pytest.mark.integration

CATALOG = default_catalog()
NOW = datetime(2026, 11, 30, 8, tzinfo=UTC)


def decode(value: bytes) -> Event:
    return EventDecoder(CATALOG).decode(value)


async def inputs(settings: Settings, counts: dict[str, int]) -> dict[str, list[Any]]:
    return {
        base: await consume(settings, settings.topic_name(base), count, timeout=10)
        for base, count in counts.items()
    }


# --- Publisher -----------------------------------------------------------------------------


async def publish_one_of_each(publisher: Publisher, patient: str) -> list[Event]:
    return [
        await publisher.prescribe(
            key="rx-1",
            patient_id=patient,
            medication_id="m1",
            name="Metformin 500 mg",
            dose_quantity=1,
            dose_unit="tablet",
            supply_quantity=60,
            refills_remaining=2,
            rxnorm_code="860975",
        ),
        await publisher.discontinue(key="stop-1", patient_id=patient, medication_id="m0"),
        await publisher.dose_taken(
            key="confirmation-1", patient_id=patient, medication_id="m1", taken_at=NOW
        ),
        await publisher.dose_skipped(
            key="skip-1", patient_id=patient, medication_id="m1", reason="nausea"
        ),
        await publisher.refill_dispensed(
            key="dispense-1", patient_id=patient, medication_id="m1", quantity=30
        ),
        await publisher.set_schedule(
            key="schedule-1",
            patient_id=patient,
            medication_id="m1",
            timezone="Europe/Paris",
            times_of_day=["08:00", "20:00"],
            days_of_week=["mon", "wed"],
        ),
        await publisher.clear_schedule(key="schedule-2", patient_id=patient, medication_id="m0"),
        await publisher.set_contact_preferences(
            key="prefs-1",
            patient_id=patient,
            channels=[ContactChannel(kind=ChannelKind.EMAIL, target="a@example.org")],
            timezone="Europe/Paris",
            quiet_hours={"start": "22:00", "end": "07:00"},
        ),
    ]


@pytest.mark.parametrize("avro", [False, True], ids=["json", "avro"])
async def test_each_method_lands_on_its_topic_keyed_by_patient(
    settings: Settings, avro: bool
) -> None:
    await ensure_topics(settings, INPUT_TOPICS)
    async with Publisher(settings, avro=avro) as publisher:
        sent = await publish_one_of_each(publisher, "patient-é1")

    records = await inputs(
        settings, {"medication-events": 5, "schedule-events": 2, "patient-events": 1}
    )
    by_id: dict[str, tuple[str, Any]] = {
        decode(record.value).event_id: (base, record)
        for base, found in records.items()
        for record in found
    }
    assert len(by_id) == 8
    expected_topic = {
        "MedicationPrescribed": "medication-events",
        "MedicationDiscontinued": "medication-events",
        "DoseTaken": "medication-events",
        "DoseSkipped": "medication-events",
        "RefillDispensed": "medication-events",
        "ScheduleSet": "schedule-events",
        "ScheduleCleared": "schedule-events",
        "ContactPreferencesSet": "patient-events",
    }
    for event in sent:
        base, record = by_id[event.event_id]
        assert base == expected_topic[event.event_type]
        assert record.key == "patient-é1".encode()
        assert decode(record.value) == event
        assert (record.value[:2] == AVRO_SINGLE_OBJECT_MARKER) is avro
        if not avro:
            assert json.loads(record.value)["event_type"] == event.event_type


async def test_the_same_key_gives_the_same_event_id(settings: Settings) -> None:
    await ensure_topics(settings, INPUT_TOPICS)
    async with Publisher(settings) as publisher:
        first = await publisher.refill_dispensed(
            key="dispense-42", patient_id="p1", medication_id="m1", quantity=30
        )
        retried = await publisher.refill_dispensed(
            key="dispense-42", patient_id="p1", medication_id="m1", quantity=30
        )
        other = await publisher.refill_dispensed(
            key="dispense-43", patient_id="p1", medication_id="m1", quantity=30
        )
    assert first.event_id == retried.event_id != other.event_id
    records = await consume(settings, settings.topic_name("medication-events"), 3, timeout=10)
    assert [decode(r.value).event_id for r in records] == [
        first.event_id,
        first.event_id,
        other.event_id,
    ]


async def test_an_invalid_call_raises_without_values_and_publishes_nothing(
    settings: Settings,
) -> None:
    await ensure_topics(settings, INPUT_TOPICS)
    async with Publisher(settings) as publisher:
        with pytest.raises(EventValidationError) as caught:
            await publisher.prescribe(
                key="rx-Jane",
                patient_id="Jane Doe",
                medication_id="warfarin-jane",
                name="Warfarin for Jane Doe",
                dose_quantity=0,
                dose_unit="tablet",
                supply_quantity=-30,
                refills_remaining=2,
                rxnorm_code="not-a-code-Jane",
            )
        with pytest.raises(EventValidationError) as caught_schedule:
            await publisher.set_schedule(
                key="s",
                patient_id="Jane Doe",
                medication_id="m",
                timezone="Jane/Doe",
                times_of_day=["8 o'clock Jane"],
            )
        # The producer still works after a refusal.
        valid = await publisher.clear_schedule(key="s2", patient_id="p2", medication_id="m")
    for message in (str(caught.value), str(caught_schedule.value)):
        assert "Jane" not in message
        assert "warfarin" not in message.lower()
    assert "dose_quantity" in str(caught.value)
    assert "rxnorm_code" in str(caught.value)
    assert "timezone" in str(caught_schedule.value)
    assert "times_of_day" in str(caught_schedule.value)
    assert await consume(settings, settings.topic_name("medication-events"), 1, timeout=3) == []
    schedules = await consume(settings, settings.topic_name("schedule-events"), 2, timeout=3)
    assert [decode(r.value).event_id for r in schedules] == [valid.event_id]


async def test_publish_event_sends_a_ready_model(settings: Settings) -> None:
    await ensure_topics(settings, INPUT_TOPICS)
    event = DoseTaken(
        event_id="dose-confirmation:c-1", patient_id="p3", occurred_at=NOW, medication_id="m1"
    )
    async with Publisher(settings) as publisher:
        assert await publisher.publish_event(event) == event
        with pytest.raises(EventValidationError, match="does not belong"):
            await publisher.publish_event(alert(RefillAlert, "p3", "x"))
    [record] = await consume(settings, settings.topic_name("medication-events"), 1, timeout=10)
    assert record.key == b"p3"
    assert decode(record.value) == event


# --- Subscriber ----------------------------------------------------------------------------


def alert(model: type[Event], patient: str, name: str) -> Any:
    fields: dict[str, Any] = {
        "event_id": f"{model.EVENT_TYPE}-{name}",
        "patient_id": patient,
        "occurred_at": NOW,
    }
    if model is RefillAlert:
        fields |= {
            "alert_id": fields["event_id"],
            "medication_id": "m1",
            "medication_name": "Metformin",
            "reason": RefillReason.LOW_SUPPLY,
            "supply_quantity": 9,
            "refills_remaining": 1,
        }
    elif model is InteractionWarning:
        fields |= {
            "warning_id": fields["event_id"],
            "medication_ids": ["m1", "m2"],
            "medication_names": ["Warfarin", "Aspirin"],
            "severity": Severity.MAJOR,
            "description": "bleeding risk",
            "source": "test",
        }
    elif model is ReminderDue:
        fields |= {
            "reminder_id": fields["event_id"],
            "medication_id": "m1",
            "medication_name": "Metformin",
            "dose_quantity": 1,
            "dose_unit": "tablet",
            "scheduled_for": NOW,
        }
    return model.model_validate(fields)


async def put(settings: Settings, base: str, *records: tuple[str, bytes]) -> None:
    await produce(
        settings, settings.topic_name(base), [(key.encode(), value) for key, value in records]
    )


async def collect(subscriber: Subscriber, count: int, settle: float = 2.0) -> list[Alert]:
    """Alerts until ``count`` arrived, then any more within ``settle`` seconds."""
    received: list[Alert] = []
    async for item in subscriber:
        received.append(item)
        if len(received) >= count:
            subscriber.idle_timeout = settle
    return received


@pytest.fixture
async def registry() -> AsyncIterator[tuple[str, dict[int, str]]]:
    """A schema registry serving GET /schemas/ids/{id} from a dict the test fills."""
    schemas: dict[int, str] = {}

    async def by_id(request: web.Request) -> web.Response:
        schema_id = int(request.match_info["id"])
        if schema_id not in schemas:
            return web.json_response({"error_code": 40403}, status=404)
        return web.json_response({"schema": schemas[schema_id]})

    application = web.Application()
    application.router.add_get("/schemas/ids/{id}", by_id)
    runner = web.AppRunner(application)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", schemas
    finally:
        await runner.cleanup()


async def test_json_avro_and_confluent_alerts_come_out_typed(
    settings: Settings, registry: tuple[str, dict[int, str]]
) -> None:
    url, schemas = registry
    settings = settings.model_copy(update={"schema_registry_url": url})
    await ensure_topics(settings)
    refill_schema = CATALOG.by_name("RefillAlert")
    warning_schema = CATALOG.by_name("InteractionWarning")
    reminder_schema = CATALOG.by_name("ReminderDue")
    assert refill_schema
    assert warning_schema
    assert reminder_schema
    schemas[7] = json.dumps(reminder_schema.source)
    refill = alert(RefillAlert, "p1", "json")
    warning = alert(InteractionWarning, "p1", "avro")
    reminder = alert(ReminderDue, "p1", "confluent")
    await put(settings, "refill-alerts", ("p1", encode_json(refill)))
    await put(settings, "interaction-warnings", ("p1", encode_avro(warning_schema, warning)))
    await put(
        settings,
        "medication-reminders",
        ("p1", encode_confluent(7, reminder_schema, reminder)),
    )

    async with Subscriber(settings, idle_timeout=30) as subscriber:
        received = await collect(subscriber, 3)
    assert sorted(received, key=lambda e: e.event_id) == sorted(
        [refill, warning, reminder], key=lambda e: e.event_id
    )
    assert {type(item) for item in received} == {RefillAlert, InteractionWarning, ReminderDue}


async def test_a_duplicate_event_id_is_delivered_once(settings: Settings) -> None:
    await ensure_topics(settings)
    first = alert(RefillAlert, "p1", "a")
    second = alert(RefillAlert, "p1", "b")
    await put(
        settings,
        "refill-alerts",
        ("p1", encode_json(first)),
        ("p1", encode_json(first)),  # a worker's retry: the same id again
        ("p1", encode_avro(CATALOG.by_name("RefillAlert"), first)),  # type: ignore[arg-type]
        ("p1", encode_json(second)),
    )
    async with Subscriber(settings, topics=["refill-alerts"], idle_timeout=30) as subscriber:
        received = await collect(subscriber, 2)
    assert [item.event_id for item in received] == [first.event_id, second.event_id]
    assert subscriber.duplicates == 2
    # Duplicates are committed with the rest: the group has nothing left.
    async with Subscriber(settings, idle_timeout=5) as again:
        assert await collect(again, 0) == []


async def refuse_all(subscriber: Subscriber) -> None:
    async with subscriber:
        async for item in subscriber:
            raise RuntimeError(f"not handled: {item.event_type}")


async def test_a_handler_exception_leaves_the_record_for_the_next_subscriber(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    handled = alert(RefillAlert, "p1", "handled")
    failing = alert(RefillAlert, "p1", "failing")
    later = alert(RefillAlert, "p1", "later")
    await put(
        settings,
        "refill-alerts",
        ("p1", encode_json(handled)),
        ("p1", encode_json(failing)),
        ("p1", encode_json(later)),
    )
    seen: list[str] = []

    async def handler(item: Alert) -> None:
        seen.append(item.event_id)
        if item.event_id == failing.event_id:
            raise RuntimeError("the pharmacy system is down")

    async with Subscriber(settings, group_id="pharmacy", idle_timeout=30) as subscriber:
        with pytest.raises(RuntimeError, match="pharmacy system"):
            await subscriber.run(handler)
    assert seen == [handled.event_id, failing.event_id]

    # The same with async for: the loop body raising out of the block leaves its alert
    # uncommitted.
    with pytest.raises(RuntimeError, match="not handled"):
        await refuse_all(Subscriber(settings, group_id="pharmacy", idle_timeout=30))

    async with Subscriber(settings, group_id="pharmacy", idle_timeout=30) as restarted:
        received = await collect(restarted, 2)
    assert [item.event_id for item in received] == [failing.event_id, later.event_id]
    # Leaving the block without an exception committed the last one too.
    async with Subscriber(settings, group_id="pharmacy", idle_timeout=5) as last:
        assert await collect(last, 0) == []


async def test_an_undecodable_record_is_reported_and_skipped(settings: Settings) -> None:
    await ensure_topics(settings)
    before = alert(RefillAlert, "Jane Doe", "before")
    after = alert(RefillAlert, "Jane Doe", "after")
    not_an_alert = alert(ReminderDue, "Jane Doe", "wrong-topic")
    bad = {**json.loads(encode_json(before)), "event_id": "x", "supply_quantity": "Jane Doe"}
    await put(
        settings,
        "refill-alerts",
        ("Jane Doe", encode_json(before)),
        ("Jane Doe", b"\xff\xfe Jane Doe"),
        ("Jane Doe", b'{"patient_id": "Jane Doe", '),
        ("Jane Doe", encode_json(not_an_alert)),
        ("Jane Doe", json.dumps(bad).encode()),
        ("Jane Doe", encode_json(after)),
    )
    reports: list[Undecodable] = []
    async with Subscriber(
        settings, topics=["refill-alerts"], on_undecodable=reports.append, idle_timeout=30
    ) as subscriber:
        received = await collect(subscriber, 2)
    assert [item.event_id for item in received] == [before.event_id, after.event_id]
    assert [report.offset for report in reports] == [1, 2, 3, 4]
    assert [report.error_type for report in reports] == [
        "DecodeError",
        "DecodeError",
        "ValidationError",
        "ValidationError",
    ]
    for report in reports:
        assert "Jane" not in report.reason
    assert subscriber.undecodable == 4
    # Skipped records are committed: a restart does not report them again.
    again_reports: list[Undecodable] = []
    async with Subscriber(settings, on_undecodable=again_reports.append, idle_timeout=5) as again:
        assert await collect(again, 0) == []
    assert again_reports == []


async def test_a_subscriber_logs_an_undecodable_record_without_its_value(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    await ensure_topics(settings)
    after = alert(InteractionWarning, "p1", "after")
    await put(
        settings,
        "interaction-warnings",
        ("p1", b"Jane Doe's record"),
        ("p1", encode_json(after)),
    )
    with caplog.at_level("WARNING", logger="streams.client.subscriber"):
        async with Subscriber(settings, idle_timeout=30) as subscriber:
            assert [item.event_id for item in await collect(subscriber, 1)] == [after.event_id]
    [line] = [r.getMessage() for r in caplog.records if "undecodable" in r.getMessage()]
    assert "offset=0" in line
    assert "Jane" not in line


# --- end to end ----------------------------------------------------------------------------


async def test_publisher_events_through_a_worker_reach_a_subscriber(settings: Settings) -> None:
    await ensure_topics(settings)
    medstream = create_app(settings)
    patient = "p-client"
    async with running(medstream), Publisher(settings) as publisher:
        await publisher.set_schedule(
            key="schedule-1",
            patient_id=patient,
            medication_id="m1",
            timezone="UTC",
            times_of_day=["08:00", "20:00"],
        )
        await publisher.prescribe(
            key="rx-1",
            patient_id=patient,
            medication_id="m1",
            name="Metformin",
            dose_quantity=1,
            dose_unit="tablet",
            supply_quantity=12,
            refills_remaining=1,
            refill_threshold_days=5,
        )
        # Twice a day, 12 tablets: below 5 days' supply after the third dose.
        for number in range(3):
            await publisher.dose_taken(
                key=f"confirmation-{number}",
                patient_id=patient,
                medication_id="m1",
                taken_at=datetime.now(UTC) - timedelta(minutes=3 - number),
            )
        # A retried call: the same event_id, dropped by the worker.
        await publisher.dose_taken(key="confirmation-2", patient_id=patient, medication_id="m1")
        async with Subscriber(settings, topics=["refill-alerts"], idle_timeout=60) as subscriber:
            received = await asyncio.wait_for(collect(subscriber, 1, settle=3), 90)
    [refill] = received
    assert isinstance(refill, RefillAlert)
    assert (refill.reason, refill.supply_quantity) == (RefillReason.LOW_SUPPLY, 9.0)
    assert refill.patient_id == patient


async def test_two_subscribers_of_one_group_share_the_alerts(settings: Settings) -> None:
    """A second instance joining takes partitions from the first (a rebalance): between them
    they get every alert, and once both are done the group has nothing left."""
    await ensure_topics(settings)
    patients = [f"p{number}" for number in range(12)]
    await produce(
        settings,
        settings.topic_name("refill-alerts"),
        [(p.encode(), encode_json(alert(RefillAlert, p, f"share-{p}"))) for p in patients[:6]],
    )
    first = Subscriber(settings, group_id="shared", idle_timeout=30)
    second = Subscriber(settings, group_id="shared", idle_timeout=30)
    got: dict[str, list[str]] = {"first": [], "second": []}

    async def read(name: str, subscriber: Subscriber) -> None:
        async with subscriber:
            async for item in subscriber:
                got[name].append(item.patient_id)
                if sum(map(len, got.values())) >= len(patients):
                    subscriber.idle_timeout = 3
                    first.idle_timeout = second.idle_timeout = 3

    reading_first = asyncio.create_task(read("first", first))
    await asyncio.sleep(3)
    reading_second = asyncio.create_task(read("second", second))
    await asyncio.sleep(3)
    await produce(
        settings,
        settings.topic_name("refill-alerts"),
        [(p.encode(), encode_json(alert(RefillAlert, p, f"share-{p}"))) for p in patients[6:]],
    )
    await asyncio.wait_for(asyncio.gather(reading_first, reading_second), 120)
    assert sorted(got["first"] + got["second"]) == sorted(patients)
    async with Subscriber(settings, group_id="shared", idle_timeout=5) as after:
        assert await collect(after, 0) == []


async def test_run_takes_a_plain_function_and_commits_after_it(settings: Settings) -> None:
    await ensure_topics(settings)
    alerts = [alert(RefillAlert, "p1", f"plain-{number}") for number in range(3)]
    await put(settings, "refill-alerts", *(("p1", encode_json(item)) for item in alerts))
    handled: list[str] = []
    async with Subscriber(settings, topics=["refill-alerts"], idle_timeout=10) as subscriber:
        await subscriber.run(lambda item: handled.append(item.event_id))
    assert handled == [item.event_id for item in alerts]
    async with Subscriber(settings, topics=["refill-alerts"], idle_timeout=5) as again:
        assert await collect(again, 0) == []
