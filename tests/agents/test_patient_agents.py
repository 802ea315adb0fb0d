"""Agent tests of the patient agents through Faust's ``agent.test_context()`` (no broker).

The app is the real one (``create_app``) with in-memory tables. Records go in through the test
wrapper's ``put``; what the agents publish is captured by replacing ``Emitter.emit``, the one
side effect, shared by the intake (dead letters), the event processor and the timer.

Faust's wrapper names the topic of its fake messages after the agent's channel, and a channel
over several topics (``apply-patient-events`` reads all three input topics) has no single name:
its messages would say ``<internal>``, which our intake knows no allowed event types for. So
``feed`` gives each message the topic a real consumer would report.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError, NotLeaderForPartitionError
from aiokafka.producer.message_accumulator import BatchBuilder

from streams.agents.emitter import Encoded, SentBatch
from streams.agents.notifier import NO_CHANNEL
from streams.agents.reminder_timer import ReminderTimer
from streams.app import Medstream
from streams.contracts.models import (
    DeadLetter,
    DoseMissed,
    Event,
    InteractionWarning,
    RefillAlert,
    ReminderDue,
)
from streams.domain.patient import PatientState, missed_dose_for, reminder_for
from streams.domain.reminder_queue import DueKind
from streams.domain.schedule import reminder_id
from tests.agents.harness import (
    NOW,
    SLOT,
    Emitted,
    Feed,
    encoded,
    event,
    feeding,
    of_type,
    prescribed,
    state,
)


async def set_up_metformin(feed: Feed) -> None:
    await feed.put(
        "medication-events",
        encoded(prescribed("e-rx", "m1", "Metformin 500 mg tablet", rxnorm_code="6809")),
        partition=2,
    )
    await feed.put(
        "schedule-events",
        encoded(
            event(
                "ScheduleSet",
                "e-sched",
                medication_id="m1",
                timezone="UTC",
                times_of_day=["08:00", "20:00"],
            )
        ),
        partition=2,
    )


# --- apply-patient-events -----------------------------------------------------------------------


async def test_a_prescription_and_a_schedule_update_the_patient_state(
    medstream: Medstream, emitted: Emitted
) -> None:
    async with feeding(medstream, "apply-patient-events") as feed:
        await set_up_metformin(feed)

    patient = state(medstream)
    assert patient.partition == 2
    medication = patient.active_medication("m1")
    assert medication is not None
    assert (medication.name, medication.rxnorm_code, medication.supply_quantity) == (
        "Metformin 500 mg tablet",
        "6809",
        100.0,
    )
    schedule = patient.schedules["m1"]
    assert schedule.times_of_day == ("08:00", "20:00")
    assert schedule.active_from == NOW
    assert state(medstream, "p2") == PatientState()

    stats = medstream.stats
    assert stats.consumed == {"medication-events": 1, "schedule-events": 1}
    assert stats.processed == {"MedicationPrescribed": 1, "ScheduleSet": 1}
    assert not stats.duplicates
    assert not stats.dead_lettered
    assert emitted == []
    # The next reminder is planned for the timer.
    queue = medstream.patients.processor.queue
    assert queue.next_due() == SLOT
    [entry] = queue.pop_due(SLOT)
    assert (entry.kind, entry.reminder_id) == (DueKind.REMINDER, reminder_id("p1", "m1", SLOT))


async def test_the_same_event_id_twice_is_a_duplicate(
    medstream: Medstream, emitted: Emitted
) -> None:
    dose = encoded(event("DoseTaken", "e-dose", medication_id="m1"))
    async with feeding(medstream, "apply-patient-events") as feed:
        await set_up_metformin(feed)
        await feed.put("medication-events", dose, partition=2)
        await feed.put("medication-events", dose, partition=2)
        # Same id, other content: still the same event.
        other = encoded(event("DoseTaken", "e-dose", medication_id="m1", quantity=5))
        await feed.put("medication-events", other, partition=2)

    assert medstream.stats.duplicates == {"DoseTaken": 2}
    assert medstream.stats.processed["DoseTaken"] == 1
    medication = state(medstream).medications["m1"]
    assert medication.supply_quantity == 99.0
    assert emitted == []


async def test_warfarin_then_aspirin_publishes_one_interaction_warning(
    medstream: Medstream, emitted: Emitted
) -> None:
    async with feeding(medstream, "apply-patient-events") as feed:
        warfarin = prescribed("e-1", "m-warfarin", "Warfarin 5 mg", rxnorm_code="11289")
        await feed.put("medication-events", encoded(warfarin))
        aspirin = prescribed("e-2", "m-aspirin", "Aspirin 81 mg", rxnorm_code="1191")
        await feed.put("medication-events", encoded(aspirin))
        # Prescribing either again warns no more; nor does a redelivery.
        await feed.put("medication-events", encoded({**warfarin, "event_id": "e-3"}))
        await feed.put("medication-events", encoded(aspirin))

    [(topic, warning)] = of_type(emitted, InteractionWarning)
    assert topic == "interaction-warnings"
    assert warning.patient_id == "p1"
    assert warning.medication_ids == ["m-aspirin", "m-warfarin"]
    assert warning.severity == "major"
    assert warning.warning_id == warning.event_id
    assert emitted == [(topic, warning)]
    assert medstream.stats.produced == {"interaction-warnings": 1}
    assert medstream.stats.duplicates == {"MedicationPrescribed": 1}


async def test_a_drug_name_that_resolves_to_nothing_is_counted_and_logged_by_id_only(
    medstream: Medstream, emitted: Emitted, caplog: pytest.LogCaptureFixture
) -> None:
    name = "Margaret's compounded cream 10 mg"
    with caplog.at_level(logging.INFO):
        async with feeding(medstream, "apply-patient-events") as feed:
            await feed.put("medication-events", encoded(prescribed("e-1", "m-known", "Zocor")))
            await feed.put("medication-events", encoded(prescribed("e-2", "m-odd", name)))

    rendered = medstream.metrics.render().decode()
    assert "medstream_unresolved_medication_names_total 1.0" in rendered
    [line] = [r.getMessage() for r in caplog.records if "resolves to no known" in r.getMessage()]
    assert "m-odd" in line
    assert "Margaret" not in caplog.text
    assert "compounded" not in caplog.text
    assert state(medstream).active_medication("m-odd") is not None


async def test_a_low_supply_publishes_a_refill_alert(
    medstream: Medstream, emitted: Emitted
) -> None:
    async with feeding(medstream, "apply-patient-events") as feed:
        rx = prescribed("e-1", "m1", "Metformin", dose_quantity=0.5, supply_quantity=3)
        await feed.put("medication-events", encoded(rx))
        schedule = event(
            "ScheduleSet", "e-2", medication_id="m1", timezone="UTC", times_of_day=["08:00"]
        )
        await feed.put("schedule-events", encoded(schedule))

    [(topic, alert)] = of_type(emitted, RefillAlert)
    assert topic == "refill-alerts"
    assert (alert.reason, alert.supply_quantity, alert.days_of_supply_remaining) == (
        "LOW_SUPPLY",
        3.0,
        6.0,
    )
    assert alert.refills_remaining == 3


async def test_bad_json_is_dead_lettered_and_the_stream_goes_on(
    medstream: Medstream, emitted: Emitted
) -> None:
    async with feeding(medstream, "apply-patient-events") as feed:
        await feed.put(
            "medication-events", b'{"event_id": ', partition=3, headers=[("trace", b"abc")]
        )
        await feed.put("medication-events", encoded(prescribed("e-1", "m1", "Metformin")))

    [(topic, dead)] = of_type(emitted, DeadLetter)
    assert topic == "dead-letters"
    assert dead.original_topic == "medication-events"
    assert (dead.partition, dead.offset) == (3, 0)
    assert dead.error_type == "DecodeError"
    assert dead.error_message.startswith("not valid JSON")
    assert base64.b64decode(dead.key or "") == b"p1"
    assert base64.b64decode(dead.value or "") == b'{"event_id": '
    assert [(h.key, base64.b64decode(h.value or "")) for h in dead.headers] == [("trace", b"abc")]
    assert medstream.stats.dead_lettered == {"DecodeError": 1}
    assert medstream.stats.produced == {"dead-letters": 1}
    # The next record was processed all the same.
    assert medstream.stats.processed == {"MedicationPrescribed": 1}
    assert state(medstream).active_medication("m1") is not None


@pytest.mark.parametrize("key", [b"p2", None, b"\xff"], ids=["other-patient", "none", "binary"])
async def test_a_record_keyed_by_another_id_is_dead_lettered(
    medstream: Medstream, emitted: Emitted, key: bytes | None
) -> None:
    async with feeding(medstream, "apply-patient-events") as feed:
        await feed.put("medication-events", encoded(prescribed("e-1", "m1", "Metformin")), key=key)

    [(topic, dead)] = of_type(emitted, DeadLetter)
    assert topic == "dead-letters"
    assert dead.error_type == "ValidationError"
    assert dead.error_message == "record key is not the event's patient_id"
    assert medstream.stats.dead_lettered == {"ValidationError": 1}
    assert not medstream.stats.processed
    assert state(medstream, "p1") == PatientState()
    assert state(medstream, "p2") == PatientState()


async def test_an_event_on_the_wrong_topic_is_dead_lettered(
    medstream: Medstream, emitted: Emitted
) -> None:
    schedule = event(
        "ScheduleSet", "e-1", medication_id="m1", timezone="UTC", times_of_day=["08:00"]
    )
    async with feeding(medstream, "apply-patient-events") as feed:
        await feed.put("medication-events", encoded(schedule))

    [(_, dead)] = of_type(emitted, DeadLetter)
    assert (
        dead.error_message == "event_type: ScheduleSet does not belong on topic 'medication-events'"
    )
    assert state(medstream) == PatientState()


async def test_an_event_older_than_the_dedup_window_is_dead_lettered(
    medstream: Medstream, emitted: Emitted
) -> None:
    old = (NOW - timedelta(days=31)).isoformat()
    async with feeding(medstream, "apply-patient-events") as feed:
        await feed.put("medication-events", encoded(prescribed("e-1", "m1", "Metformin")))
        late = event("DoseTaken", "e-2", medication_id="m1", occurred_at=old)
        await feed.put("medication-events", encoded(late))

    [(_, dead)] = of_type(emitted, DeadLetter)
    assert dead.error_type == "RejectedEventError"
    assert state(medstream).medications["m1"].supply_quantity == 100.0


# --- record-reminders ---------------------------------------------------------------------------


async def test_a_recorded_reminder_opens_a_slot_and_a_missed_dose_closes_it(
    medstream: Medstream, emitted: Emitted
) -> None:
    async with feeding(medstream, "apply-patient-events") as feed:
        await set_up_metformin(feed)
    rid = reminder_id("p1", "m1", SLOT)
    due = reminder_for(state(medstream), "p1", "m1", SLOT, rid)
    assert due is not None
    encode: Callable[[Event], bytes] = medstream.patients.store.emitter.encoder.encode
    queue = medstream.patients.recorder.queue
    queue.clear()

    agent = medstream.app.agents["record-reminders"]
    async with agent.test_context() as ctx:
        # A single-topic agent: the wrapper's own messages carry the real topic name.
        record = await ctx.put(key=b"p1", value=encode(due), partition=2)
        assert record.message.topic == "medication-reminders"
        async with asyncio.timeout(5):
            while medstream.stats.total_settled < 3:
                await asyncio.sleep(0)

        opened = state(medstream)
        assert list(opened.open_slots) == [rid]
        assert opened.open_slots[rid].scheduled_for == SLOT
        assert opened.schedules["m1"].last_emitted == SLOT
        assert opened.partition == 2
        # The missed-dose check is planned at the end of the grace window.
        [check] = queue.pop_due(datetime.max.replace(tzinfo=UTC))
        grace = medstream.patients.recorder.grace
        assert (check.kind, check.due_at, check.reminder_id) == (
            DueKind.MISSED_CHECK,
            SLOT + grace,
            rid,
        )

        # A redelivered reminder changes nothing.
        await ctx.put(key=b"p1", value=encode(due), partition=2)
        async with asyncio.timeout(5):
            while medstream.stats.total_settled < 4:
                await asyncio.sleep(0)
        assert medstream.stats.duplicates == {"ReminderDue": 1}
        assert state(medstream) == opened

        missed = missed_dose_for(opened, "p1", rid, grace)
        assert isinstance(missed, DoseMissed)
        for expected in (5, 6):  # recorded, then redelivered
            await ctx.put(key=b"p1", value=encode(missed), partition=2)
            async with asyncio.timeout(5):
                while medstream.stats.total_settled < expected:
                    await asyncio.sleep(0)

    closed = state(medstream)
    assert closed.open_slots == {}
    assert closed.schedules["m1"].last_emitted == SLOT
    assert medstream.stats.processed["ReminderDue"] == 1
    assert medstream.stats.processed["DoseMissed"] == 1
    assert medstream.stats.duplicates == {"ReminderDue": 1, "DoseMissed": 1}
    assert medstream.stats.consumed["medication-reminders"] == 4
    # The notifier saw each once: the patient has no contact preferences yet, so each waits
    # for them, and the redeliveries are recognised by the delivery ledger.
    assert emitted == []
    waiting = [
        (record["source_event_type"], record["status"])
        for record in medstream.notifier.ledger.values()
        if record["channel"] == NO_CHANNEL
    ]
    assert waiting == [("ReminderDue", "deferred"), ("DoseMissed", "deferred")]


async def test_an_input_event_on_the_reminders_topic_is_dead_lettered(
    medstream: Medstream, emitted: Emitted
) -> None:
    async with feeding(medstream, "record-reminders") as feed:
        await feed.put("medication-reminders", encoded(prescribed("e-1", "m1", "Metformin")))

    [(topic, dead)] = of_type(emitted, DeadLetter)
    assert (topic, dead.original_topic) == ("dead-letters", "medication-reminders")
    assert dead.error_message.startswith("event_type: MedicationPrescribed does not belong")
    assert state(medstream) == PatientState()


async def test_a_reminder_for_a_drug_discontinued_meanwhile_opens_no_slot(
    medstream: Medstream, emitted: Emitted
) -> None:
    async with feeding(medstream, "apply-patient-events") as feed:
        await set_up_metformin(feed)
    rid = reminder_id("p1", "m1", SLOT)
    due = reminder_for(state(medstream), "p1", "m1", SLOT, rid)
    assert due is not None
    # The timer sent the reminder; the discontinuation is applied before it is recorded.
    async with feeding(medstream, "apply-patient-events") as feed:
        stop = event("MedicationDiscontinued", "e-stop", medication_id="m1")
        await feed.put("medication-events", encoded(stop), partition=2)
    encode = medstream.patients.store.emitter.encoder.encode
    async with feeding(medstream, "record-reminders") as feed:
        await feed.put("medication-reminders", encode(due), partition=2)

    recorded = state(medstream)
    assert recorded.open_slots == {}
    assert recorded.schedules["m1"].last_emitted == SLOT
    assert missed_dose_for(recorded, "p1", rid, medstream.patients.recorder.grace) is None
    # The notifier does not remind of a discontinued drug either.
    assert [(event.status, event.error) for _topic, event in emitted] == [
        ("suppressed", "the medication was discontinued")
    ]


# --- the reminder timer ---------------------------------------------------------------------------


@pytest.fixture
def timer_at(medstream: Medstream, monkeypatch: pytest.MonkeyPatch) -> list[datetime]:
    """The timer as a worker owning partition 2 runs it; set element 0 to move its clock."""
    timer = medstream.patients.timer
    clock = [NOW]

    async def ready() -> bool:
        return True

    monkeypatch.setattr(timer, "ready", ready)
    monkeypatch.setattr(timer, "active_partitions", lambda: {2})
    monkeypatch.setattr(timer, "clock", lambda: clock[0])
    return clock


async def decided_a_minute_ahead(medstream: Medstream, timer_at: list[datetime]) -> ReminderTimer:
    """Metformin at 08:00 and 20:00, and the timer's tick a minute before 08:00."""
    async with feeding(medstream, "apply-patient-events") as feed:
        await set_up_metformin(feed)
    timer = medstream.patients.timer
    timer_at[0] = SLOT - timedelta(minutes=1)
    await timer.tick()
    return timer


async def test_a_reminder_decided_ahead_is_sent_at_its_slot_and_the_next_one_planned(
    medstream: Medstream, emitted: Emitted, timer_at: list[datetime]
) -> None:
    timer = await decided_a_minute_ahead(medstream, timer_at)
    # Decided a minute ahead, sent only when due.
    assert emitted == []
    assert len(timer.queue) == 0
    timer_at[0] = SLOT - timedelta(seconds=1)
    await timer.tick()
    assert emitted == []
    timer_at[0] = SLOT
    await timer.tick()

    [(topic, reminder)] = of_type(emitted, ReminderDue)
    assert topic == "medication-reminders"
    assert (reminder.reminder_id, reminder.scheduled_for) == (reminder_id("p1", "m1", SLOT), SLOT)
    assert reminder.medication_name == "Metformin 500 mg tablet"
    assert timer.queue.next_due() == SLOT.replace(hour=20)


async def test_a_reminder_decided_ahead_is_decided_again_when_the_record_changes(
    medstream: Medstream, emitted: Emitted, timer_at: list[datetime]
) -> None:
    timer = await decided_a_minute_ahead(medstream, timer_at)
    # Stopped after the reminder was decided, before it was due.
    async with feeding(medstream, "apply-patient-events") as feed:
        stop = event("MedicationDiscontinued", "e-stop", medication_id="m1")
        await feed.put("medication-events", encoded(stop), partition=2)
    timer_at[0] = SLOT
    await timer.tick()

    assert of_type(emitted, ReminderDue) == []
    assert timer.queue.next_due() is None


# --- dose answers -------------------------------------------------------------------------------


def dose_taken(event_id: str, at: datetime, **fields: object) -> bytes:
    return encoded(
        event("DoseTaken", event_id, occurred_at=at.isoformat(), medication_id="m1", **fields)
    )


def answers_counted(medstream: Medstream) -> dict[str, float]:
    counted = {}
    for family in medstream.metrics.registry.collect():
        if family.name == "medstream_dose_answers":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counted[sample.labels["result"]] = sample.value
    return counted


async def test_an_answer_after_the_reminder_was_decided_stops_it(
    medstream: Medstream,
    emitted: Emitted,
    timer_at: list[datetime],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(medstream.patients.processor, "clock", lambda: timer_at[0])
    timer = await decided_a_minute_ahead(medstream, timer_at)
    # Taken at 07:59, named for 08:00, after the reminder was decided from the older record.
    async with feeding(medstream, "apply-patient-events") as feed:
        await feed.put(
            "medication-events",
            dose_taken("e-dose", timer_at[0], scheduled_for=SLOT.isoformat()),
            partition=2,
        )
    timer_at[0] = SLOT
    await timer.tick()

    assert of_type(emitted, ReminderDue) == []
    # The schedule goes on: the 20:00 slot is planned.
    assert timer.queue.next_due() == SLOT.replace(hour=20)
    assert answers_counted(medstream) == {"answered": 1.0}


async def test_a_reminder_sent_before_the_answer_is_suppressed_by_the_notifier(
    medstream: Medstream, emitted: Emitted, monkeypatch: pytest.MonkeyPatch
) -> None:
    early = SLOT - timedelta(minutes=10)
    monkeypatch.setattr(medstream.patients.processor, "clock", lambda: early)
    async with feeding(medstream, "apply-patient-events") as feed:
        await set_up_metformin(feed)
    rid = reminder_id("p1", "m1", SLOT)
    due = reminder_for(state(medstream), "p1", "m1", SLOT, rid)
    assert due is not None
    # The timer sent it; the dose, ten minutes early and without scheduled_for, is applied
    # before the reminder is recorded and reaches the notifier.
    async with feeding(medstream, "apply-patient-events") as feed:
        await feed.put("medication-events", dose_taken("e-dose", early), partition=2)
    encode = medstream.patients.store.emitter.encoder.encode
    async with feeding(medstream, "record-reminders") as feed:
        await feed.put("medication-reminders", encode(due), partition=2)

    recorded = state(medstream)
    assert recorded.open_slots == {}
    assert recorded.schedules["m1"].last_emitted == SLOT
    assert missed_dose_for(recorded, "p1", rid, medstream.patients.recorder.grace) is None
    assert [(event.status, event.error) for _topic, event in emitted] == [
        ("suppressed", "the dose was already answered")
    ]


async def test_a_repeated_or_stray_answer_is_counted_and_changes_no_slot(
    medstream: Medstream, emitted: Emitted, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(medstream.patients.processor, "clock", lambda: SLOT)
    async with feeding(medstream, "apply-patient-events") as feed:
        await set_up_metformin(feed)
        await feed.put("medication-events", dose_taken("e-1", SLOT), partition=2)
        answered = state(medstream).answered_slots
        await feed.put(
            "medication-events",
            dose_taken("e-2", SLOT, scheduled_for=SLOT.isoformat()),
            partition=2,
        )
        # Hours from any slot.
        stray = SLOT - timedelta(hours=4)
        await feed.put("medication-events", dose_taken("e-3", stray), partition=2)

    assert state(medstream).answered_slots == answered
    assert answers_counted(medstream) == {"answered": 1.0, "already_answered": 1.0, "no_slot": 1.0}
    rendered = medstream.metrics.render().decode()
    assert 'medstream_dose_answers_total{result="already_answered"} 1.0' in rendered


async def test_a_finished_course_gets_no_low_supply_alert(
    medstream: Medstream, emitted: Emitted
) -> None:
    async with feeding(medstream, "apply-patient-events") as feed:
        rx = prescribed("e-1", "m1", "Amoxicillin", supply_quantity=3, refills_remaining=0)
        await feed.put("medication-events", encoded(rx))
        # A course that ended yesterday: three tablets left use nothing up.
        schedule = event(
            "ScheduleSet",
            "e-2",
            medication_id="m1",
            timezone="UTC",
            times_of_day=["08:00", "20:00"],
            end_date=(NOW - timedelta(days=1)).date().isoformat(),
        )
        await feed.put("schedule-events", encoded(schedule))
        await feed.put("medication-events", dose_taken("e-3", NOW))

    assert of_type(emitted, RefillAlert) == []
    assert state(medstream).medications["m1"].supply_quantity == 2.0


class FlakyProducer:
    """Stands in for the aiokafka producer under the app's: the first batch fails, either
    refused by the producer (``send``) or not acknowledged by the broker (``ack``)."""

    def __init__(self, producer: AIOKafkaProducer, fails: str) -> None:
        self.fails = fails
        self.sent: list[tuple[str, int, int]] = []
        producer.partitions_for = self.partitions_for  # type: ignore[method-assign]
        producer._partition = lambda topic, *_: 2  # type: ignore[method-assign]
        producer.send_batch = self.send_batch  # type: ignore[method-assign]

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2, 3}

    async def send_batch(
        self, batch: BatchBuilder, topic: str, *, partition: int
    ) -> asyncio.Future[None]:
        acknowledged: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        first = not self.sent
        self.sent.append((topic, partition, batch.record_count()))
        if first and self.fails == "send":
            raise KafkaTimeoutError
        if first:
            acknowledged.set_exception(NotLeaderForPartitionError())
        else:
            acknowledged.set_result(None)
        return acknowledged


@pytest.mark.parametrize("fails", ["send", "ack"])
async def test_a_reminder_whose_batch_failed_is_sent_again_on_the_next_tick(
    medstream: Medstream,
    timer_at: list[datetime],
    monkeypatch: pytest.MonkeyPatch,
    fails: str,
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")  # never started
    flaky = FlakyProducer(producer, fails)
    monkeypatch.setattr(medstream.app.producer, "_producer", producer)
    try:
        await failing_once_then_sent(medstream, timer_at, monkeypatch, flaky)
    finally:
        await producer.stop()


async def failing_once_then_sent(
    medstream: Medstream,
    timer_at: list[datetime],
    monkeypatch: pytest.MonkeyPatch,
    flaky: FlakyProducer,
) -> None:
    stored: list[Event] = []
    emitter = medstream.patients.timer.emitter
    real_batch = emitter.emit_encoded_batch

    async def emit_encoded_batch(topic: Any, records: Sequence[Encoded]) -> list[SentBatch]:
        batches = await real_batch(topic, records)
        for batch in batches:
            with contextlib.suppress(KafkaError):
                await batch.acknowledged
                stored.extend(record.event for record in batch.records)
        return batches

    monkeypatch.setattr(emitter, "emit_encoded_batch", emit_encoded_batch)
    timer = await decided_a_minute_ahead(medstream, timer_at)
    timer_at[0] = SLOT
    await timer.tick()
    assert stored == []
    # Back in the queue (and decided again at once, being due): the next tick sends it.
    timer_at[0] = SLOT + timedelta(seconds=0.2)
    await timer.tick()

    [reminder] = stored
    assert isinstance(reminder, ReminderDue)
    assert reminder.reminder_id == reminder_id("p1", "m1", SLOT)
    assert flaky.sent == [("medication-reminders", 2, 1)] * 2
    # The next slot is planned once, after the send that was acknowledged.
    assert timer.queue.next_due() == SLOT.replace(hour=20)
    assert len(timer.queue) == 1
