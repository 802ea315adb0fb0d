"""FHIR R4 in, on the real broker: Bundles as EHR and pharmacy exports have them (several
codings, extensions, a contained Medication) become contract events, then reminders, refill
alerts and interaction warnings; a stopped MedicationRequest ends its reminders; a re-sent
Bundle changes nothing; what cannot be mapped is dead-lettered with its FHIR path, whole."""

from __future__ import annotations

import asyncio
import base64
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from streams.app import create_app
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.fhir_scenarios import (
    PATIENT,
    administration,
    aspirin,
    bundle,
    dispense,
    metformin,
    patient,
    statement_not_taken,
    unmappable,
    warfarin,
)
from tests.integration.test_patient_state import ShiftedClock, use_clock, values, wait_for
from tests.kafka_helpers import consume, produce, running, wait_until_committed


async def publish_fhir(settings: Settings, *values: bytes) -> None:
    topic = settings.topic_name("fhir-resources")
    await produce(settings, topic, [(PATIENT.encode(), value) for value in values])


async def settled(settings: Settings) -> None:
    """Everything published so far handled: the FHIR record, then the events it became."""
    names = ["fhir-resources", "medication-events", "schedule-events"]
    for _ in range(2):
        await wait_until_committed(
            settings, settings.app_id, [settings.topic_name(n) for n in names], 90
        )


async def reminder_for(settings: Settings, medication_id: str) -> dict[str, Any]:
    """The first ReminderDue of ``medication_id`` on medication-reminders (waits up to 60 s)."""
    deadline = time.monotonic() + 60
    seen = 0
    while time.monotonic() < deadline:
        records = values(
            await consume(settings, settings.topic_name("medication-reminders"), seen + 1, 5)
        )
        seen = len(records)
        for reminder in records:
            if (
                reminder["event_type"] == "ReminderDue"
                and reminder["medication_id"] == medication_id
            ):
                return reminder
    raise AssertionError(f"no ReminderDue of {medication_id} in {seen} reminders")


def next_slot(after: datetime, clock_time: str, zone: ZoneInfo) -> datetime:
    """The first ``clock_time`` (HH:MM, in ``zone``) more than five minutes after ``after``."""
    local = after.astimezone(zone)
    hour, minute = (int(part) for part in clock_time.split(":"))
    slot = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if slot <= local + timedelta(minutes=5):
        slot += timedelta(days=1)
    return slot.astimezone(UTC)


def by_type(records: list[Any]) -> Counter[str]:
    return Counter(value["event_type"] for value in values(records))


async def test_bundles_of_every_resource_type_become_events_then_alerts_and_reminders(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    medstream = create_app(settings)
    clock = ShiftedClock()
    use_clock(medstream, clock)
    store = medstream.patients.store
    topic = settings.topic_name
    async with running(medstream):
        await publish_fhir(settings, bundle(patient(), warfarin(), aspirin(), metformin()))
        await wait_for(lambda: len(store.written_state(PATIENT).medications) == 3, 60)
        await publish_fhir(
            settings,
            bundle(administration("ma-1", "mr-metformin"), administration("ma-2", "mr-metformin")),
            bundle(dispense(), kind="collection"),
            bundle(statement_not_taken(), kind="searchset"),
        )
        await settled(settings)
        medication = await consume(settings, topic("medication-events"), 7, 30)
        assert by_type(medication) == {
            "MedicationPrescribed": 3,
            "DoseTaken": 2,
            "RefillDispensed": 1,
            "DoseSkipped": 1,
        }
        assert all(record.key == PATIENT.encode() for record in medication)
        schedules = values(await consume(settings, topic("schedule-events"), 3, 30))
        assert Counter(s["event_type"] for s in schedules) == {"ScheduleSet": 3}
        [warfarin_schedule] = [s for s in schedules if s["medication_id"] == "mr-warfarin"]
        assert warfarin_schedule["times_of_day"] == ["20:00"]
        # warfarin with aspirin: an interaction warning; the last two metformin tablets taken
        # with no refill left: refill alerts.
        warnings = values(await consume(settings, topic("interaction-warnings"), 1, 30))
        assert {tuple(sorted(w["medication_ids"])) for w in warnings} == {
            ("mr-aspirin", "mr-warfarin")
        }
        alerts = values(await consume(settings, topic("refill-alerts"), 1, 30))
        assert {a["medication_id"] for a in alerts} == {"mr-metformin"}
        # The warfarin schedule's next 20:00 comes due: a reminder.
        slot = next_slot(clock(), "20:00", ZoneInfo(warfarin_schedule["timezone"]))
        # (Slots of the other two medications before it come due on the way.)
        clock.reach_in(slot, 2.0)
        reminder = await reminder_for(settings, "mr-warfarin")
        assert reminder["scheduled_for"].startswith(slot.strftime("%Y-%m-%dT%H:%M"))


async def test_a_stopped_request_ends_its_reminders_and_a_resent_bundle_changes_nothing(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    medstream = create_app(settings)
    clock = ShiftedClock()
    use_clock(medstream, clock)
    store = medstream.patients.store
    topic = settings.topic_name
    first = bundle(patient(), warfarin(), aspirin())
    async with running(medstream):
        await publish_fhir(settings, first)
        await wait_for(lambda: "mr-warfarin" in store.written_state(PATIENT).schedules, 60)
        await settled(settings)
        before = {
            name: len(await consume(settings, topic(name), 100, 3))
            for name in ("interaction-warnings", "refill-alerts")
        }
        state_before = store.written_state(PATIENT)
        # The same Bundle again: the same event ids, every one a repeat.
        await publish_fhir(settings, first)
        await settled(settings)
        assert store.written_state(PATIENT) == state_before
        for name, count in before.items():
            assert len(await consume(settings, topic(name), 100, 3)) == count, name
        schedules = values(await consume(settings, topic("schedule-events"), 4, 10))
        ids = [schedule["event_id"] for schedule in schedules]
        assert len(ids) == 4, ids
        assert len(set(ids)) == 2, ids
        timezone = ZoneInfo(schedules[0]["timezone"])
        [morning] = {s["times_of_day"][0] for s in schedules if s["medication_id"] == "mr-aspirin"}
        # A new version of the request, stopped: its schedule is cleared, so no more reminders.
        stopped = warfarin(status="stopped", authored="2026-12-01T15:00:00Z")
        stopped["meta"] = {"versionId": "2", "lastUpdated": "2026-12-01T15:00:00Z"}
        await publish_fhir(settings, bundle(stopped))
        await wait_for(lambda: "mr-warfarin" not in store.written_state(PATIENT).schedules, 60)
        events = by_type(await consume(settings, topic("medication-events"), 100, 5))
        assert events["MedicationDiscontinued"] == 1
        cleared = by_type(await consume(settings, topic("schedule-events"), 100, 5))
        assert cleared["ScheduleCleared"] == 1
        # Its next 20:00 passes in real time with no reminder; aspirin's next morning after it
        # still comes due, so the timer ran past that 20:00 (it fires slots in order).
        evening = next_slot(clock(), "20:00", timezone)
        clock.reach_in(evening, 2.0)
        await asyncio.sleep(8)
        following_morning = next_slot(evening, morning, timezone)
        clock.reach_in(following_morning, 2.0)
        wanted = following_morning.strftime("%Y-%m-%dT%H:%M")

        def morning_reminder(reminders: list[dict[str, Any]]) -> bool:
            return any(
                r["medication_id"] == "mr-aspirin" and r["scheduled_for"].startswith(wanted)
                for r in reminders
            )

        deadline = time.monotonic() + 60
        reminders: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not morning_reminder(reminders):
            reminders = values(await consume(settings, topic("medication-reminders"), 100, 5))
        assert morning_reminder(reminders), reminders
        assert not [r for r in reminders if r["medication_id"] == "mr-warfarin"], reminders


async def test_every_unmappable_case_is_dead_lettered_whole_with_its_fhir_path(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    medstream = create_app(settings)
    cases = unmappable()
    store = medstream.patients.store
    async with running(medstream):
        await publish_fhir(settings, *(value for value, _ in cases.values()))
        letters = values(
            await consume(settings, settings.topic_name("dead-letters"), len(cases), 60)
        )
        # The stream goes on: a good Bundle after them is mapped and applied.
        await publish_fhir(settings, bundle(patient(), aspirin()))
        await wait_for(lambda: "mr-aspirin" in store.written_state(PATIENT).medications, 60)
    assert len(letters) == len(cases), [letter["error_message"] for letter in letters]
    for (name, (value, path)), letter in zip(cases.items(), letters, strict=True):
        assert letter["original_topic"] == settings.topic_name("fhir-resources"), name
        assert letter["error_type"].startswith("Fhir"), (name, letter["error_type"])
        assert path in letter["error_message"], (name, letter["error_message"])
        # The original resource is kept whole, for a replay after a fix.
        assert base64.b64decode(letter["value"]) == value, name
        # No patient data in the reason.
        for secret in ("Ada", "Example", "MRN-000042", PATIENT):
            assert secret not in letter["error_message"], (name, secret)
