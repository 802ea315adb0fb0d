"""Reminders, missed doses, refill alerts and interaction warnings, end to end, real broker."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from streams.app import Medstream, create_app
from streams.domain.schedule import reminder_id
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.kafka_helpers import consume, produce, running

pytestmark = pytest.mark.integration


class Events:
    """Builds one patient's input events with unique ids."""

    def __init__(self, patient_id: str) -> None:
        self.patient_id = patient_id
        self._ids: Iterator[int] = iter(range(1, 10_000))

    def make(self, event_type: str, **fields: Any) -> dict[str, Any]:
        return {
            "event_id": f"{self.patient_id}-{next(self._ids)}",
            "event_type": event_type,
            "patient_id": self.patient_id,
            "occurred_at": datetime.now(UTC).isoformat(),
            **fields,
        }

    def prescribed(self, medication_id: str, name: str, **fields: Any) -> dict[str, Any]:
        defaults: dict[str, Any] = {
            "dose_quantity": 1,
            "dose_unit": "tablet",
            "supply_quantity": 100,
            "refills_remaining": 3,
        }
        return self.make(
            "MedicationPrescribed",
            medication_id=medication_id,
            name=name,
            **{**defaults, **fields},
        )


async def publish(
    settings: Settings, topic: str, *events: dict[str, Any], pipelined: bool = False
) -> None:
    await produce(
        settings,
        settings.topic_name(topic),
        [(event["patient_id"].encode(), json.dumps(event).encode()) for event in events],
        pipelined=pipelined,
    )


async def schedule_reminder(
    settings: Settings,
    events: Events,
    slot: datetime,
    *,
    name: str = "Metformin 500 mg",
    timezone: str = "UTC",
    **prescription: Any,
) -> None:
    """A prescription of m1 and a daily schedule with one slot, set in ``timezone``."""
    await publish(settings, "medication-events", events.prescribed("m1", name, **prescription))
    await publish(
        settings,
        "schedule-events",
        events.make(
            "ScheduleSet",
            medication_id="m1",
            timezone=timezone,
            times_of_day=[slot.astimezone(ZoneInfo(timezone)).strftime("%H:%M:%S")],
        ),
    )


def values(records: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(record.value) for record in records]


class SteppedClock:
    """A clock that stands still until the test moves it: no deadline passes by itself, so a
    loaded machine that handles events slowly cannot make one pass too early."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def move_to(self, instant: datetime) -> None:
        assert instant >= self.now, "the clock only moves forward"
        self.now = instant


class ShiftedClock:
    """Real time plus an offset that the test moves forward: the timer still runs on real
    time, but a slot comes due when the test says, not after a guess at the setup's speed."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> datetime:
        return datetime.fromtimestamp(time.time() + self.offset, UTC)

    def reach_in(self, instant: datetime, seconds: float) -> float:
        """Jump so that ``instant`` comes ``seconds`` of real time from now; returns the real
        time (epoch seconds, comparable with record timestamps) at which it comes."""
        offset = instant.timestamp() - seconds - time.time()
        assert offset >= self.offset, "the clock only moves forward"
        self.offset = offset
        return instant.timestamp() - offset


def use_clock(medstream: Medstream, clock: Callable[[], datetime]) -> None:
    """The clock of the patient agents: what is due, and what "now" is for the events."""
    medstream.patients.processor.clock = clock
    medstream.patients.timer.clock = clock
    # The recorder refuses a ReminderDue dated ahead of its clock: it must share the timer's.
    medstream.patients.recorder.clock = clock


async def test_a_reminder_on_time_then_a_missed_dose(settings: Settings) -> None:
    await ensure_topics(settings)
    medstream = create_app(settings)
    clock = ShiftedClock()
    use_clock(medstream, clock)
    grace = timedelta(minutes=settings.reminder_grace_minutes)
    events = Events("p-reminder")
    store = medstream.patients.store
    async with running(medstream):
        # Far enough ahead that the schedule is in place long before the slot, however slowly
        # it is handled; then the slot is brought to two seconds from now.
        slot = (clock() + timedelta(hours=1)).replace(microsecond=0)
        await schedule_reminder(
            settings, events, slot, name="Metformin 500 mg tablet", rxnorm_code="6809"
        )
        await wait_for(lambda: "m1" in store.written_state("p-reminder").schedules)
        slot_comes = clock.reach_in(slot, 2.0)
        records = await consume(settings, settings.topic_name("medication-reminders"), 1, 30)
        await wait_for(lambda: store.written_state("p-reminder").open_slots)
        grace_ends = clock.reach_in(slot + grace, 2.0)
        records = await consume(settings, settings.topic_name("medication-reminders"), 2, 30)
        await wait_for(lambda: not store.written_state("p-reminder").open_slots)
        await asyncio.sleep(2)  # nothing more may follow
        records = await consume(settings, settings.topic_name("medication-reminders"), 3, 1)

    kinds = [value["event_type"] for value in values(records)]
    assert kinds == ["ReminderDue", "DoseMissed"]
    reminder, missed = values(records)
    assert datetime.fromisoformat(reminder["scheduled_for"]) == slot
    assert reminder["medication_name"] == "Metformin 500 mg tablet"
    # Never early; late by a few timer ticks at most (a generous bound for a loaded machine).
    lateness = records[0].timestamp / 1000 - slot_comes
    assert -0.01 <= lateness <= 3.0, f"reminder {lateness:.3f}s off its slot"
    assert missed["reminder_id"] == reminder["reminder_id"]
    assert datetime.fromisoformat(missed["occurred_at"]) == slot + grace
    missed_lateness = records[1].timestamp / 1000 - grace_ends
    assert -0.01 <= missed_lateness <= 3.0, f"missed dose {missed_lateness:.3f}s off"


async def test_a_dose_taken_in_time_is_not_missed(settings: Settings) -> None:
    """The clock moves past the grace window only once the DoseTaken is applied: how fast a
    loaded machine handles it cannot decide the verdict. A second slot, not answered, is the
    positive control: its DoseMissed follows (same patient, same partition) any DoseMissed
    the first slot could have caused."""
    await ensure_topics(settings)
    medstream = create_app(settings)
    start = datetime.now(UTC).replace(microsecond=0)
    clock = SteppedClock(start)
    use_clock(medstream, clock)
    grace = timedelta(minutes=settings.reminder_grace_minutes)
    taken_slot, unanswered_slot = start + timedelta(minutes=1), start + timedelta(hours=2)
    berlin = ZoneInfo("Europe/Berlin")
    events = Events("p-taken")
    store = medstream.patients.store
    reminders = settings.topic_name("medication-reminders")
    async with running(medstream):
        await publish(settings, "medication-events", events.prescribed("m1", "Lisinopril"))
        await publish(
            settings,
            "schedule-events",
            events.make(
                "ScheduleSet",
                medication_id="m1",
                timezone="Europe/Berlin",
                times_of_day=[
                    slot.astimezone(berlin).strftime("%H:%M:%S")
                    for slot in (taken_slot, unanswered_slot)
                ],
            ),
        )
        await wait_for(lambda: "m1" in store.written_state("p-taken").schedules)
        clock.move_to(taken_slot)
        await consume(settings, reminders, 1, 30)
        await wait_for(lambda: store.written_state("p-taken").open_slots)
        taken_at = taken_slot + timedelta(minutes=5)
        await publish(
            settings,
            "medication-events",
            events.make("DoseTaken", medication_id="m1", taken_at=taken_at.isoformat()),
        )
        await wait_for(lambda: not store.written_state("p-taken").open_slots)
        # Past the first slot's grace window, to the second slot.
        clock.move_to(unanswered_slot)
        await consume(settings, reminders, 2, 30)
        await wait_for(lambda: store.written_state("p-taken").open_slots)
        clock.move_to(unanswered_slot + grace + timedelta(minutes=1))
        records = await consume(settings, reminders, 3, 30)

    slots = [
        (value["event_type"], datetime.fromisoformat(value["scheduled_for"]))
        for value in values(records)
    ]
    assert slots == [
        ("ReminderDue", taken_slot),
        ("ReminderDue", unanswered_slot),
        ("DoseMissed", unanswered_slot),
    ]


async def test_a_dose_taken_before_its_reminder_is_neither_reminded_nor_missed(
    settings: Settings,
) -> None:
    """Taken 20 minutes early, naming its slot: the slot gets no ReminderDue and no DoseMissed.
    The clock moves only once the answer is written; a later slot, not answered, is the
    positive control: anything the first slot caused would come before its records."""
    await ensure_topics(settings)
    medstream = create_app(settings)
    start = datetime.now(UTC).replace(microsecond=0)
    clock = SteppedClock(start)
    use_clock(medstream, clock)
    grace = timedelta(minutes=settings.reminder_grace_minutes)
    early_slot, control_slot = start + timedelta(minutes=20), start + timedelta(hours=2)
    events = Events("p-early")
    store = medstream.patients.store
    reminders = settings.topic_name("medication-reminders")
    async with running(medstream):
        await publish(settings, "medication-events", events.prescribed("m1", "Metoprolol"))
        await publish(
            settings,
            "schedule-events",
            events.make(
                "ScheduleSet",
                medication_id="m1",
                timezone="UTC",
                times_of_day=[slot.strftime("%H:%M:%S") for slot in (early_slot, control_slot)],
            ),
        )
        await wait_for(lambda: "m1" in store.written_state("p-early").schedules)
        await publish(
            settings,
            "medication-events",
            events.make(
                "DoseTaken",
                medication_id="m1",
                taken_at=start.isoformat(),
                scheduled_for=early_slot.isoformat(),
            ),
        )
        await wait_for(lambda: store.written_state("p-early").answered_slots)
        clock.move_to(control_slot)
        await consume(settings, reminders, 1, 30)
        await wait_for(lambda: store.written_state("p-early").open_slots)
        clock.move_to(control_slot + grace + timedelta(minutes=1))
        records = await consume(settings, reminders, 2, 30)
        await asyncio.sleep(1)  # nothing more may follow
        records = await consume(settings, reminders, 3, 1)

    slots = [
        (value["event_type"], datetime.fromisoformat(value["scheduled_for"]))
        for value in values(records)
    ]
    assert slots == [("ReminderDue", control_slot), ("DoseMissed", control_slot)]


async def test_falling_supply_alerts_once_per_crossing(settings: Settings) -> None:
    await ensure_topics(settings)
    medstream = create_app(settings)
    events = Events("p-supply")
    prescription = events.prescribed(
        "m1", "Metformin", supply_quantity=12, refills_remaining=1, refill_threshold_days=5
    )
    # Twice a day: 12 tablets last 6 days; LOW below 5 days (fewer than 10 tablets).
    schedule = events.make(
        "ScheduleSet", medication_id="m1", timezone="UTC", times_of_day=["08:00", "20:00"]
    )
    async with running(medstream):
        await publish(settings, "schedule-events", schedule)
        await publish(settings, "medication-events", prescription)
        await wait_for(lambda: medstream.patients.store.state("p-supply").schedules)
        doses = [events.make("DoseTaken", medication_id="m1") for _ in range(12)]
        await publish(settings, "medication-events", *doses)
        await publish(
            settings,
            "medication-events",
            events.make("RefillDispensed", medication_id="m1", quantity=8, refills_remaining=0),
        )
        records = await consume(settings, settings.topic_name("refill-alerts"), 4, 30)
        await asyncio.sleep(1)
        records = await consume(settings, settings.topic_name("refill-alerts"), 5, 1)

    alerts = [(a["reason"], a["supply_quantity"]) for a in values(records)]
    assert alerts == [
        ("LOW_SUPPLY", 9.0),
        ("OUT_OF_SUPPLY", 0.0),
        ("LOW_SUPPLY", 8.0),
        ("NO_REFILLS_REMAINING", 8.0),
    ]
    assert values(records)[0]["days_of_supply_remaining"] == pytest.approx(4.5)


async def wait_for(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met in {timeout:.0f}s: {condition.__code__}")
        await asyncio.sleep(0.1)


async def test_interacting_drugs_warn_once(settings: Settings) -> None:
    await ensure_topics(settings)
    medstream = create_app(settings)
    by_code = Events("p-codes")
    by_brand = Events("p-brands")
    async with running(medstream):
        await publish(
            settings,
            "medication-events",
            by_code.prescribed("w", "Warfarin", rxnorm_code="11289"),
            by_code.prescribed("a", "ASA 81", rxnorm_code="1191"),
            by_code.prescribed("a", "ASA 81", rxnorm_code="1191"),  # prescribed again
            by_code.prescribed("w", "Warfarin", rxnorm_code="11289"),
            by_brand.prescribed("c", "Coumadin 5 mg tablet"),
            by_brand.prescribed("b", "Bayer Aspirin"),
            by_brand.prescribed("b", "Bayer Aspirin"),
        )
        records = await consume(settings, settings.topic_name("interaction-warnings"), 2, 30)
        await asyncio.sleep(1)
        records = await consume(settings, settings.topic_name("interaction-warnings"), 3, 1)

    warnings = {w["patient_id"]: w for w in values(records)}
    assert len(records) == 2
    assert set(warnings) == {"p-codes", "p-brands"}
    assert warnings["p-codes"]["severity"] == "major"
    assert warnings["p-codes"]["medication_ids"] == ["a", "w"]
    assert warnings["p-brands"]["severity"] == "major"
    assert sorted(warnings["p-brands"]["medication_names"]) == [
        "Bayer Aspirin",
        "Coumadin 5 mg tablet",
    ]


async def test_reminders_due_in_the_same_second_reach_each_patients_partition_once(
    settings: Settings,
) -> None:
    """Decided and encoded ahead, sent in one batch per partition at the slot: every patient's
    ReminderDue arrives once, with its slot's id, on the partition of the patient's input."""
    await ensure_topics(settings)
    medstream = create_app(settings)
    clock = ShiftedClock()
    use_clock(medstream, clock)
    patients = [f"p-crowd-{index}" for index in range(12)]
    store = medstream.patients.store
    reminders = settings.topic_name("medication-reminders")
    async with running(medstream):
        slot = (clock() + timedelta(hours=1)).replace(microsecond=0)
        for patient_id in patients:
            await schedule_reminder(settings, Events(patient_id), slot)
        await wait_for(
            lambda: all("m1" in store.written_state(each).schedules for each in patients)
        )
        clock.reach_in(slot, 2.0)
        records = await consume(settings, reminders, len(patients), 30)
        await asyncio.sleep(2)  # nothing more may follow
        records = await consume(settings, reminders, len(patients) + 1, 2)
        inputs = await consume(settings, settings.topic_name("medication-events"), len(patients))

    input_partition = {record.key.decode(): record.partition for record in inputs if record.key}
    assert len(set(input_partition.values())) > 1, "the patients share one partition"
    delivered = sorted(
        (value["patient_id"], value["reminder_id"], record.partition)
        for record, value in zip(records, values(records), strict=True)
    )
    assert delivered == sorted(
        (patient_id, reminder_id(patient_id, "m1", slot), input_partition[patient_id])
        for patient_id in patients
    )
    assert {value["event_type"] for value in values(records)} == {"ReminderDue"}
