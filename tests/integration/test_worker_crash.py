"""A worker killed with SIGKILL is replaced; its state comes back and nothing is emitted twice."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from streams.consumer_groups import wait_until_stable
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.integration.test_patient_state import Events, publish, values
from tests.kafka_helpers import consume, wait_until_committed
from tests.worker_process import WorkerProcess

pytestmark = pytest.mark.integration

PATIENTS = [f"crash-patient-{n}" for n in range(8)]


def local(slot: datetime) -> str:
    return slot.strftime("%H:%M:%S")


async def read_all(settings: Settings, topic: str, at_least: int, timeout: float) -> list[Any]:
    return values(await consume(settings, settings.topic_name(topic), at_least, timeout))


async def schedule_reminders(settings: Settings, patients: list[Events], slot: datetime) -> None:
    """A prescription of m1 and a daily UTC schedule at ``slot`` for each patient, published
    with one producer per topic: the slot is a few seconds ahead, and the setup must not eat
    them (a producer per event took most of them on a loaded machine)."""
    await publish(
        settings,
        "medication-events",
        *(events.prescribed("m1", "Metformin") for events in patients),
    )
    await publish(
        settings,
        "schedule-events",
        *(
            events.make(
                "ScheduleSet", medication_id="m1", timezone="UTC", times_of_day=[local(slot)]
            )
            for events in patients
        ),
    )


async def processed(settings: Settings, *topics: str) -> None:
    """Everything published to ``topics`` so far is handled, its table writes flushed to the
    changelog and its offsets committed (Faust flushes the producer before committing)."""
    names = [settings.topic_name(topic) for topic in topics]
    await wait_until_committed(settings, settings.app_id, names, timeout=90)


async def test_sigkill_then_replacement_recovers_state_without_duplicates(
    settings: Settings, tmp_path: Path
) -> None:
    settings = settings.model_copy(
        update={
            "topic_partitions": 4,
            "consumer_session_timeout": 8.0,
            "reminder_grace_minutes": 30.0,
            "reminder_tick_seconds": 0.1,
        }
    )
    await ensure_topics(settings)
    first = WorkerProcess(settings, tmp_path / "worker-1", tmp_path / "worker-1.log")
    # The replacement has an empty data directory: its state can only come from the changelog.
    second = WorkerProcess(settings, tmp_path / "worker-2", tmp_path / "worker-2.log")
    try:
        first.start()
        await wait_until_stable(settings, settings.app_id, timeout=90)
        start = datetime.now(UTC).replace(microsecond=0)
        slot_1 = start + timedelta(seconds=12)
        slot_2 = start + timedelta(seconds=75)
        builders = {patient: Events(patient) for patient in PATIENTS}
        # One producer per topic: slot_1 is seconds ahead, and a schedule handled after it
        # would not remind it (the schedule took effect later).
        await publish(
            settings,
            "schedule-events",
            *(
                events.make(
                    "ScheduleSet",
                    medication_id="warfarin",
                    timezone="UTC",
                    times_of_day=[local(slot_1), local(slot_2)],
                )
                for events in builders.values()
            ),
        )
        await publish(
            settings,
            "medication-events",
            *(
                prescription
                for events in builders.values()
                for prescription in (
                    # 10 tablets at two a day: 5 days, below the 7-day threshold at once.
                    events.prescribed(
                        "warfarin", "Coumadin", supply_quantity=10, refills_remaining=0
                    ),
                    events.prescribed("aspirin", "Aspirin 81 mg", rxnorm_code="1191"),
                )
            ),
        )
        alerts = await read_all(settings, "refill-alerts", 2 * len(PATIENTS), 60)
        warnings = await read_all(settings, "interaction-warnings", len(PATIENTS), 30)
        assert len(warnings) == len(PATIENTS), first.log_tail()
        assert Counter(a["reason"] for a in alerts) == {
            "LOW_SUPPLY": len(PATIENTS),
            "NO_REFILLS_REMAINING": len(PATIENTS),
        }
        reminders = await read_all(settings, "medication-reminders", len(PATIENTS), 40)
        assert len(reminders) == len(PATIENTS), first.log_tail()
        # The recorded reminders are in the changelog (a barrier, not a guess at the interval).
        await processed(settings, "medication-events", "schedule-events", "medication-reminders")

        first.kill()
        second.start()
        await wait_until_stable(settings, settings.app_id, timeout=90)

        # State survived: the same drugs again raise no new warning or supply alert.
        for events in builders.values():
            await publish(
                settings,
                "medication-events",
                events.prescribed("aspirin", "Aspirin 81 mg", rxnorm_code="1191"),
                # Naming its slot: without it, a replacement slow to start could see the dose
                # inside slot 2's early window and take it for slot 2's answer.
                events.make(
                    "DoseTaken", medication_id="warfarin", scheduled_for=slot_1.isoformat()
                ),
            )
        reminders = await read_all(settings, "medication-reminders", 2 * len(PATIENTS), 100)
        await asyncio.sleep(3)
        reminders = await read_all(settings, "medication-reminders", 3 * len(PATIENTS), 2)
        alerts = await read_all(settings, "refill-alerts", 3 * len(PATIENTS), 2)
        warnings = await read_all(settings, "interaction-warnings", 2 * len(PATIENTS), 2)
        assert second.running, second.log_tail()
    finally:
        first.stop()
        second.stop()

    assert len(warnings) == len(PATIENTS)
    assert len(alerts) == 2 * len(PATIENTS)
    slots = Counter(
        (r["patient_id"], datetime.fromisoformat(r["scheduled_for"])) for r in reminders
    )
    assert all(count == 1 for count in slots.values()), slots
    assert set(slots) == {(p, s) for p in PATIENTS for s in (slot_1, slot_2)}
    assert len({r["reminder_id"] for r in reminders}) == 2 * len(PATIENTS)
    assert json.dumps(sorted(slots.values())) == json.dumps([1] * 2 * len(PATIENTS))


async def test_a_restarted_worker_reminds_the_slots_it_missed_while_down(
    settings: Settings, tmp_path: Path
) -> None:
    settings = settings.model_copy(
        update={
            "consumer_session_timeout": 8.0,
            "reminder_grace_minutes": 30.0,
            "reminder_tick_seconds": 0.1,
        }
    )
    await ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker", tmp_path / "worker.log")
    patients = [Events(f"catch-up-{n}") for n in range(6)]  # on both partitions
    try:
        worker.start()
        await wait_until_stable(settings, settings.app_id, timeout=90)
        slot = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=20)
        await schedule_reminders(settings, patients, slot)
        await processed(settings, "medication-events", "schedule-events")
        assert datetime.now(UTC) < slot - timedelta(seconds=1), "set up too slowly to test"
        assert await read_all(settings, "medication-reminders", 1, 1) == []
        worker.kill()  # down before the slot ...
        while datetime.now(UTC) < slot + timedelta(seconds=3):
            await asyncio.sleep(0.5)
        worker.start()  # ... and back after it, with its local tables
        reminders = await read_all(settings, "medication-reminders", len(patients), 90)
        await asyncio.sleep(3)
        reminders = await read_all(settings, "medication-reminders", len(patients) + 1, 2)
    finally:
        worker.stop()

    due = [r for r in reminders if r["event_type"] == "ReminderDue"]
    assert sorted(r["patient_id"] for r in due) == sorted(e.patient_id for e in patients)
    assert {r["scheduled_for"] for r in due} == {slot.isoformat().replace("+00:00", "Z")}


async def test_two_workers_remind_every_patient_once_on_every_partition(
    settings: Settings, tmp_path: Path
) -> None:
    settings = settings.model_copy(
        update={"topic_partitions": 4, "reminder_grace_minutes": 30.0, "reminder_tick_seconds": 0.1}
    )
    await ensure_topics(settings)
    workers = [
        WorkerProcess(settings, tmp_path / f"worker-{n}", tmp_path / f"worker-{n}.log")
        for n in (1, 2)
    ]
    patients = [Events(f"two-workers-{n}") for n in range(16)]
    try:
        for worker in workers:
            worker.start()
        await wait_until_stable(settings, settings.app_id, timeout=120, members=2)
        slot = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=15)
        await schedule_reminders(settings, patients, slot)
        records = await consume(
            settings, settings.topic_name("medication-reminders"), len(patients), 60
        )
        await asyncio.sleep(3)
        records = await consume(
            settings, settings.topic_name("medication-reminders"), len(patients) + 1, 2
        )
        assert all(worker.running for worker in workers)
    finally:
        for worker in workers:
            worker.stop()

    due = [json.loads(r.value) for r in records]
    assert sorted(r["patient_id"] for r in due) == sorted(e.patient_id for e in patients)
    # Each worker owns two of the four partitions, and a reminder lands on its patient's
    # partition: reminders on all four mean both workers fired theirs, and none twice.
    assert {r.partition for r in records} == set(range(settings.topic_partitions))
