"""The notifier against the real broker, a real HTTP receiver and a real SMTP server."""

from __future__ import annotations

import asyncio
import email
import json
import socket
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import Message as MailMessage
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiosmtpd.controller import Controller
from pydantic import SecretStr

from streams.app import Medstream, create_app
from streams.kafka_client import client_options
from streams.notify.channels import verify_signature
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.integration.conftest import Receiver
from tests.integration.test_cli import medstream as medstream_cli
from tests.integration.test_patient_state import (
    Events,
    ShiftedClock,
    SteppedClock,
    publish,
    schedule_reminder,
    use_clock,
    values,
    wait_for,
)
from tests.kafka_helpers import consume, produce, running
from tests.worker_process import WorkerProcess

pytestmark = pytest.mark.integration

SECRET = "webhook-test-secret"


class Mailbox:
    """An aiosmtpd handler that keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[MailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


def notifier_settings(settings: Settings, smtp_port: int | None = None) -> Settings:
    return settings.model_copy(
        update={
            "notify_webhook_secret": SecretStr(SECRET),
            "notify_smtp_host": "127.0.0.1" if smtp_port else None,
            "notify_smtp_port": smtp_port or 25,
            "notify_timeout_seconds": 2.0,
            "notify_max_attempts": 4,
            "notify_backoff_base_seconds": 0.1,
            "notify_backoff_cap_seconds": 0.5,
            "reminder_grace_minutes": 60.0,
            # The receiver is on loopback, which only an allow-list opens, and speaks http.
            "notify_webhook_allow": "127.0.0.1",
            "notify_webhook_allow_http": True,
        }
    )


def contact(events: Events, *channels: dict[str, str], **fields: Any) -> dict[str, Any]:
    return events.make(
        "ContactPreferencesSet", channels=list(channels), timezone="Europe/Berlin", **fields
    )


def shifted(medstream: Medstream) -> ShiftedClock:
    """One clock for the patient agents and the notifier, which the test moves forward."""
    clock = ShiftedClock()
    use_clock(medstream, clock)
    medstream.notifier.clock = clock
    return clock


async def known(medstream: Medstream, *patients: Events, schedule: str | None = None) -> None:
    """Until the patients' contacts (and the schedule of ``schedule``) are written."""
    store = medstream.patients.store

    def ready(events: Events) -> bool:
        state = store.written_state(events.patient_id)
        return state.contact is not None and (schedule is None or schedule in state.schedules)

    await wait_for(lambda: all(ready(events) for events in patients))


def settled(medstream: Medstream, *event_types: str) -> int:
    """Events of these types processed or recognised as duplicates so far."""
    stats = medstream.stats
    return sum(stats.processed[name] + stats.duplicates[name] for name in event_types)


async def everything(settings: Settings, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record the topic holds now: read up to its end offsets, however long it takes."""
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_options(settings))
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        received: list[ConsumerRecord[bytes, bytes]] = []
        async with asyncio.timeout(60):
            for tp in partitions:
                while await consumer.position(tp) < ends[tp]:
                    for records in (await consumer.getmany(tp, timeout_ms=200)).values():
                        received.extend(records)
        return received
    finally:
        await consumer.stop()


async def outcomes(settings: Settings, count: int, timeout: float = 30) -> list[dict[str, Any]]:
    return values(await consume(settings, settings.topic_name("notifications"), count, timeout))


async def test_a_reminder_reaches_webhook_and_email(
    settings: Settings, receiver: Receiver, mailbox: tuple[Mailbox, int]
) -> None:
    box, smtp_port = mailbox
    settings = notifier_settings(settings, smtp_port)
    await ensure_topics(settings)
    medstream = create_app(settings)
    clock = shifted(medstream)
    events = Events("p-both")
    async with running(medstream):
        await publish(
            settings,
            "patient-events",
            contact(
                events,
                {"kind": "webhook", "target": f"{receiver.url}/p-both"},
                {"kind": "email", "target": "patient@example.org"},
            ),
        )
        # An hour ahead, so the schedule is in place however slowly it is handled; then the
        # clock brings the slot to a second from now.
        slot = (clock() + timedelta(hours=1)).replace(microsecond=0)
        await schedule_reminder(settings, events, slot)
        await known(medstream, events, schedule="m1")
        clock.reach_in(slot, 1.0)
        delivered = await outcomes(settings, 2)

    assert sorted((o["channel"], o["status"], o["attempts"]) for o in delivered) == [
        ("email#1", "delivered", 1),
        ("webhook#0", "delivered", 1),
    ]
    (request,) = receiver.for_path("p-both")
    assert verify_signature(
        SECRET.encode(),
        request["timestamp"],
        request["raw"],
        request["signature"],
        now=time.time(),
    )
    assert not verify_signature(
        b"wrong", request["timestamp"], request["raw"], request["signature"], now=time.time()
    )
    body = request["body"]
    assert body["event_type"] == "ReminderDue"
    assert "Metformin 500 mg" in json.dumps(body)
    assert request["idempotency_key"] in {o["notification_id"] for o in delivered}
    (mail,) = box.messages
    assert mail["To"] == "patient@example.org"
    text = next(
        part.get_payload(decode=True).decode()
        for part in mail.walk()
        if part.get_content_type() == "text/plain"
    )
    assert "Metformin 500 mg" in text
    # Shown in the patient's zone: Berlin is UTC+1 in winter, UTC+2 in summer.
    local = slot.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Berlin"))
    assert local.strftime("%H:%M") in text


async def test_retries_then_one_delivery_and_a_dead_endpoint_fails_alone(
    settings: Settings, receiver: Receiver
) -> None:
    # A long request timeout: the dead endpoint's first attempt is held open (below).
    settings = notifier_settings(settings).model_copy(update={"notify_timeout_seconds": 30.0})
    await ensure_topics(settings)
    medstream = create_app(settings)
    clock = shifted(medstream)
    flaky, dead, healthy = Events("p-flaky"), Events("p-dead"), Events("p-healthy")
    receiver.failures_left = {"p-flaky": 2, "p-dead": -1}  # -1: fails for ever
    # The dead endpoint answers (its 500) only once the healthy patient's reminder arrived: a
    # notifier that waited for the dead endpoint would send that reminder after every retry.
    receiver.waits_for = {"p-dead": "p-healthy"}
    async with running(medstream):
        for events in (flaky, dead, healthy):
            await publish(
                settings,
                "patient-events",
                contact(
                    events, {"kind": "webhook", "target": f"{receiver.url}/{events.patient_id}"}
                ),
            )
        slot = (clock() + timedelta(hours=1)).replace(microsecond=0)
        for events in (flaky, dead, healthy):
            await schedule_reminder(settings, events, slot)
        await known(medstream, flaky, dead, healthy, schedule="m1")
        clock.reach_in(slot, 1.0)
        results = await outcomes(settings, 3, timeout=60)
        alerts = values(await consume(settings, settings.topic_name("admin-alerts"), 1, 30))

    by_patient = {o["patient_id"]: o for o in results}
    assert by_patient["p-flaky"]["status"] == "delivered"
    assert by_patient["p-flaky"]["attempts"] == 3
    assert len(receiver.for_path("p-flaky")) == 1
    assert by_patient["p-dead"]["status"] == "failed"
    assert by_patient["p-dead"]["attempts"] == 4
    assert "HTTP 500" in by_patient["p-dead"]["error"]
    assert receiver.url not in by_patient["p-dead"]["error"]
    assert len(alerts) == 1
    assert alerts[0]["alert_type"] == "DELIVERY_FAILED"
    assert alerts[0]["details"]["notification_id"] == by_patient["p-dead"]["notification_id"]
    # The healthy patient's reminder was not held back by the dead endpoint's retries.
    assert by_patient["p-healthy"]["status"] == "delivered"
    (arrival,) = receiver.arrivals["p-healthy"]
    assert arrival < max(receiver.arrivals["p-dead"])


async def test_a_refill_alert_in_quiet_hours_waits_until_they_end(
    settings: Settings, receiver: Receiver
) -> None:
    settings = notifier_settings(settings)
    await ensure_topics(settings)
    medstream = create_app(settings)
    events = Events("p-quiet")
    zone = __import__("zoneinfo").ZoneInfo("Europe/Berlin")
    # The notifier's clock stands still inside the quiet hours until the test ends them.
    now = (datetime.now(zone) + timedelta(minutes=1)).replace(second=30, microsecond=0)
    quiet_end = now.replace(second=0) + timedelta(minutes=1)
    clock = SteppedClock(now.astimezone(UTC))
    medstream.notifier.clock = clock
    quiet = {
        "start": (now - timedelta(hours=1)).strftime("%H:%M"),
        "end": quiet_end.strftime("%H:%M"),
    }
    ledger = medstream.notifier.ledger

    def deferred() -> bool:
        return any(
            value.get("patient_id") == "p-quiet" and value.get("status") == "deferred"
            for _key, value in ledger.items()
        )

    async with running(medstream):
        await publish(
            settings,
            "patient-events",
            contact(
                events, {"kind": "webhook", "target": f"{receiver.url}/p-quiet"}, quiet_hours=quiet
            ),
        )
        await known(medstream, events)
        # Out of supply at once: a refill alert, which is not urgent.
        await publish(
            settings,
            "medication-events",
            events.prescribed("m1", "Atorvastatin", supply_quantity=0),
        )
        await wait_for(deferred)  # held back until the quiet hours end
        assert receiver.for_path("p-quiet") == []  # still quiet
        quiet_ended = time.time()
        clock.move_to(quiet_end.astimezone(UTC))
        (result,) = await outcomes(settings, 1, timeout=60)
        # Then nothing else: the delivery above is the positive control of this check.
        results = await outcomes(settings, 2, timeout=3)

    assert result["status"] == "delivered"
    delivered = [o for o in results if o["status"] == "delivered"]
    assert {o["source_event_type"] for o in delivered} == {"RefillAlert"}
    arrivals = receiver.arrivals["p-quiet"]
    assert arrivals
    assert min(arrivals) >= quiet_ended


async def test_replaying_the_alert_topics_delivers_nothing_twice(
    settings: Settings, receiver: Receiver
) -> None:
    settings = notifier_settings(settings)
    await ensure_topics(settings)
    medstream = create_app(settings)
    events = Events("p-replay")
    async with running(medstream):
        await publish(
            settings,
            "patient-events",
            contact(events, {"kind": "webhook", "target": f"{receiver.url}/p-replay"}),
        )
        await known(medstream, events)
        await publish(
            settings,
            "medication-events",
            events.prescribed("w", "Warfarin", rxnorm_code="11289", supply_quantity=0),
            events.prescribed("a", "Aspirin", rxnorm_code="1191"),
        )
        # The refill alert and the interaction warning, each delivered once.
        first = await outcomes(settings, 2)
        alert_types = ("RefillAlert", "InteractionWarning")
        alerts = {
            topic: await everything(settings, settings.topic_name(topic))
            for topic in ("refill-alerts", "interaction-warnings")
        }
        replayed = sum(len(records) for records in alerts.values())
        assert replayed
        # Every alert handled and every delivery finished: the first outcomes are all there.
        await wait_for(lambda: settled(medstream, *alert_types) >= replayed, 60)
        await wait_for(lambda: not medstream.notifier.running, 60)
        first = await outcomes(settings, len(first) + 1, timeout=3)
        # Replay: every record of the alert topics again, as an operator would after an outage.
        settled_before = settled(medstream, *alert_types)
        for topic, records in alerts.items():
            await produce(settings, settings.topic_name(topic), [(r.key, r.value) for r in records])
        # The positive control: the notifier has handled every replayed alert.
        await wait_for(lambda: settled(medstream, *alert_types) >= settled_before + replayed, 60)
        after = await outcomes(settings, len(first) + 1, timeout=3)

    assert len(after) == len(first)
    ids = Counter(r["idempotency_key"] for r in receiver.for_path("p-replay"))
    assert ids
    assert all(count == 1 for count in ids.values())


async def test_replaying_a_day_of_medication_events_creates_no_new_notification(
    settings: Settings, receiver: Receiver
) -> None:
    settings = notifier_settings(settings)
    await ensure_topics(settings)
    medstream = create_app(settings)
    patients = [Events(f"p-day-{n}") for n in range(8)]
    day_start = datetime.now(UTC) - timedelta(hours=24)
    async with running(medstream):
        for events in patients:
            await publish(
                settings,
                "patient-events",
                contact(
                    events, {"kind": "webhook", "target": f"{receiver.url}/{events.patient_id}"}
                ),
            )
        await known(medstream, *patients)
        day: list[dict[str, Any]] = []
        for events in patients:
            day += [
                events.prescribed("w", "Warfarin", rxnorm_code="11289", supply_quantity=3),
                events.prescribed("a", "Aspirin", rxnorm_code="1191"),
            ]
            for hour in (8, 14, 20):  # the day's doses: warfarin runs out
                day.append(
                    events.make(
                        "DoseTaken",
                        medication_id="w",
                        occurred_at=(day_start + timedelta(hours=hour)).isoformat(),
                    )
                )
        await publish(settings, "medication-events", *day)

        async def settled_outcomes() -> list[dict[str, Any]]:
            seen: list[dict[str, Any]] = []
            while True:  # until a few quiet seconds pass without a new outcome
                latest = await outcomes(settings, len(seen) + 1, timeout=4)
                if len(latest) == len(seen):
                    return seen
                seen = latest

        # Before counting what was notified: the day handled, then every alert it raised
        # handled by the notifier and delivered; only then can nothing more be on its way.
        await wait_for(
            lambda: settled(medstream, "MedicationPrescribed", "DoseTaken") >= len(day), 60
        )
        alerts = 0
        for topic in ("refill-alerts", "interaction-warnings"):
            alerts += len(await everything(settings, settings.topic_name(topic)))
        assert alerts
        await wait_for(
            lambda: settled(medstream, "RefillAlert", "InteractionWarning") >= alerts, 60
        )
        await wait_for(lambda: not medstream.notifier.running, 60)
        before = await settled_outcomes()
        requests_before = len(receiver.requests)
        assert before
        assert requests_before == len(before)
        duplicates_before = sum(medstream.stats.duplicates.values())

        replayed = await asyncio.to_thread(
            medstream_cli,
            settings,
            "replay",
            "--topic",
            "medication-events",
            "--since",
            day_start.isoformat(),
        )
        assert replayed.returncode == 0, replayed.stderr
        assert f"replayed {len(day)} records" in replayed.stdout
        deadline = time.monotonic() + 60
        while sum(medstream.stats.duplicates.values()) < duplicates_before + len(day):
            assert time.monotonic() < deadline, "the replay was not consumed"
            await asyncio.sleep(0.2)
        after = await settled_outcomes()

    assert len(after) == len(before), "the replay created notifications"
    assert len(receiver.requests) == requests_before


async def test_sigkill_during_a_burst_delivers_nothing_twice(
    settings: Settings, receiver: Receiver, tmp_path: Path
) -> None:
    settings = notifier_settings(settings).model_copy(
        update={"consumer_session_timeout": 8.0, "topic_partitions": 2}
    )
    await ensure_topics(settings)
    extra = {
        "MEDSTREAM_NOTIFY_WEBHOOK_SECRET": SECRET,
        "MEDSTREAM_NOTIFY_TIMEOUT_SECONDS": "2",
        "MEDSTREAM_NOTIFY_MAX_ATTEMPTS": "4",
        "MEDSTREAM_NOTIFY_BACKOFF_BASE_SECONDS": "0.1",
        "MEDSTREAM_NOTIFY_BACKOFF_CAP_SECONDS": "0.5",
    }
    first = WorkerProcess(settings, tmp_path / "w1", tmp_path / "w1.log", **extra)
    second = WorkerProcess(settings, tmp_path / "w2", tmp_path / "w2.log", **extra)
    patients = [Events(f"burst-{n}") for n in range(40)]
    try:
        first.start()
        from streams.consumer_groups import wait_until_stable

        await wait_until_stable(settings, settings.app_id, timeout=90)
        for events in patients:
            await publish(
                settings,
                "patient-events",
                contact(
                    events, {"kind": "webhook", "target": f"{receiver.url}/{events.patient_id}"}
                ),
            )
        for events in patients:
            # Out of supply: each patient gets one refill alert at once.
            await publish(
                settings,
                "medication-events",
                events.prescribed("m1", "Metformin", supply_quantity=0),
            )
        while len(receiver.requests) < 5:
            await asyncio.sleep(0.01)
        # Mid-burst, and usually before the first offset commit: the replacement then finds
        # partitions never committed, which must still be read from their beginning.
        first.kill()
        second.start()
        await wait_until_stable(settings, settings.app_id, timeout=90)
        # Generous: the replacement reports interrupted deliveries only once the longest
        # delivery could have ended, and a loaded machine slows its start; it stops at success.
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            results = await outcomes(settings, 2 * len(patients), timeout=2)
            if len({o["notification_id"] for o in results}) >= len(patients):
                break
    finally:
        first.stop()
        second.stop()

    keys = Counter(r["idempotency_key"] for r in receiver.requests)
    assert all(count == 1 for count in keys.values()), "a notification was delivered twice"
    # Every notification ends in an outcome: delivered, or interrupted and reported as failed.
    final = {o["notification_id"]: o for o in results}
    assert len(final) == len(patients), second.log_tail()
    assert {o["status"] for o in final.values()} <= {"delivered", "failed"}
    for outcome in final.values():
        if outcome["status"] == "failed":
            assert "interrupted" in outcome["error"]
    # A graceful stop closes the channels' connections.
    assert "Unclosed client session" not in second.log_file.read_text(errors="replace")
