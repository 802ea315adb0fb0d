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
from aiosmtpd.controller import Controller
from pydantic import SecretStr

from streams.app import create_app
from streams.notify.channels import verify_signature
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.integration.conftest import Receiver
from tests.integration.test_cli import medstream as medstream_cli
from tests.integration.test_patient_state import Events, publish, schedule_reminder, values
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


def slot_in(seconds: int) -> datetime:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).replace(microsecond=0)


async def outcomes(settings: Settings, count: int, timeout: float = 30) -> list[dict[str, Any]]:
    return values(await consume(settings, settings.topic_name("notifications"), count, timeout))


async def test_a_reminder_reaches_webhook_and_email(
    settings: Settings, receiver: Receiver, mailbox: tuple[Mailbox, int]
) -> None:
    box, smtp_port = mailbox
    settings = notifier_settings(settings, smtp_port)
    await ensure_topics(settings)
    medstream = create_app(settings)
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
        slot = slot_in(4)
        await schedule_reminder(settings, events, slot)
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
    settings = notifier_settings(settings)
    await ensure_topics(settings)
    medstream = create_app(settings)
    flaky, dead, healthy = Events("p-flaky"), Events("p-dead"), Events("p-healthy")
    receiver.failures_left = {"p-flaky": 2, "p-dead": -1}  # -1: fails for ever
    async with running(medstream):
        for events in (flaky, dead, healthy):
            await publish(
                settings,
                "patient-events",
                contact(
                    events, {"kind": "webhook", "target": f"{receiver.url}/{events.patient_id}"}
                ),
            )
        slot = slot_in(4)
        for events in (flaky, dead, healthy):
            await schedule_reminder(settings, events, slot)
        results = await outcomes(settings, 3, timeout=40)
        alerts = values(await consume(settings, settings.topic_name("admin-alerts"), 1, 10))

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
    assert arrival - slot.timestamp() < 1.5


async def test_a_refill_alert_in_quiet_hours_waits_until_they_end(
    settings: Settings, receiver: Receiver
) -> None:
    settings = notifier_settings(settings)
    await ensure_topics(settings)
    medstream = create_app(settings)
    events = Events("p-quiet")
    zone = __import__("zoneinfo").ZoneInfo("Europe/Berlin")
    now = datetime.now(zone)
    quiet_end = (now + timedelta(minutes=1)).replace(second=0, microsecond=0)
    if quiet_end - now < timedelta(seconds=20):  # time to see the alert held back first
        quiet_end += timedelta(minutes=1)
    quiet = {
        "start": (now - timedelta(hours=1)).strftime("%H:%M"),
        "end": quiet_end.strftime("%H:%M"),
    }
    async with running(medstream):
        await publish(
            settings,
            "patient-events",
            contact(
                events, {"kind": "webhook", "target": f"{receiver.url}/p-quiet"}, quiet_hours=quiet
            ),
        )
        await asyncio.sleep(1)
        # Out of supply at once: a refill alert, which is not urgent.
        await publish(
            settings,
            "medication-events",
            events.prescribed("m1", "Atorvastatin", supply_quantity=0),
        )
        await asyncio.sleep(3)
        assert receiver.for_path("p-quiet") == []  # still quiet
        results = await outcomes(settings, 2, timeout=90)

    delivered = [o for o in results if o["status"] == "delivered"]
    assert {o["source_event_type"] for o in delivered} == {"RefillAlert"}
    arrivals = receiver.arrivals["p-quiet"]
    assert arrivals
    assert min(arrivals) >= quiet_end.timestamp()
    assert min(arrivals) - quiet_end.timestamp() < 3.0


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
        await asyncio.sleep(1)
        await publish(
            settings,
            "medication-events",
            events.prescribed("w", "Warfarin", rxnorm_code="11289", supply_quantity=0),
            events.prescribed("a", "Aspirin", rxnorm_code="1191"),
        )
        first = await outcomes(settings, 3)
        # Replay: every record of the alert topics again, as an operator would after an outage.
        for topic in ("refill-alerts", "interaction-warnings"):
            records = await consume(settings, settings.topic_name(topic), 10, 3)
            await produce(settings, settings.topic_name(topic), [(r.key, r.value) for r in records])
        await asyncio.sleep(5)
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
        await asyncio.sleep(1)
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
        deadline = time.monotonic() + 60
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
