"""Agent tests of the intake's error boundary and the caps: no record stops an agent."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError

from streams.agents import emitter
from streams.agents.intake import BatchFullError
from streams.app import Medstream
from streams.contracts.codecs import EventDecoder
from streams.contracts.models import DeadLetter, RefillAlert
from streams.domain.dedup import SeenEvents
from streams.domain.limits import LimitExceededError
from streams.domain.patient import PatientState
from streams.domain.schedule import reminder_id
from streams.state.stores import Changes
from tests.agents.conftest import agent_test_app, capture_emitted
from tests.agents.harness import (
    NOW,
    Emitted,
    Feed,
    encoded,
    event,
    feeding,
    of_type,
    prescribed,
    state,
)
from tests.agents.test_patient_store import ALERT


def dead_letters(emitted: Emitted) -> list[DeadLetter]:
    return [sent for _, sent in of_type(emitted, DeadLetter)]


async def normal_event_is_processed(medstream: Medstream, feed: Feed, patient_id: str) -> None:
    """After whatever came before, another patient's event is still applied."""
    await feed.put(
        "medication-events",
        encoded(prescribed(f"ok-{uuid.uuid4().hex}", "m-ok", "Metformin", patient_id=patient_id)),
        key=patient_id.encode(),
    )
    assert medstream.patients.store.state(patient_id).active_medication("m-ok") is not None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("occurred_at", "0001-01-01T00:00:00+01:00"),
        ("occurred_at", "9999-12-31T23:59:59-01:00"),
        ("taken_at", "0001-01-01T00:00:00+01:00"),
        ("scheduled_for", "9999-12-31T23:59:59-01:00"),
        ("occurred_at", "1969-07-20T20:17:00Z"),
    ],
)
async def test_a_timestamp_out_of_range_is_dead_lettered_and_the_stream_goes_on(
    medstream: Medstream, emitted: Emitted, field: str, value: str
) -> None:
    async with feeding(medstream, "apply-patient-events") as feed:
        await feed.put(
            "medication-events",
            encoded(event("DoseTaken", "e-poison", medication_id="m1", **{field: value})),
        )
        await normal_event_is_processed(medstream, feed, "p2")
    [letter] = dead_letters(emitted)
    assert letter.error_type == "ValidationError"
    assert f"{field}: must lie between 1970-01-01 and 2200-01-01 (UTC)" in letter.error_message


async def test_an_event_from_the_future_is_dead_lettered_and_does_not_lock_the_patient_out(
    medstream: Medstream, emitted: Emitted
) -> None:
    async with feeding(medstream, "apply-patient-events") as feed:
        for number, ahead in enumerate((timedelta(days=365 * 170), timedelta(days=31))):
            future = prescribed(f"e-future-{number}", "m1", "Metformin")
            future["occurred_at"] = (NOW + ahead).isoformat()
            await feed.put("medication-events", encoded(future))
        # Within the skew (five minutes by default): an upstream clock a little fast is fine.
        slightly = prescribed("e-slightly-ahead", "m2", "Lisinopril")
        slightly["occurred_at"] = (NOW + timedelta(minutes=4)).isoformat()
        await feed.put("medication-events", encoded(slightly))
        await feed.put("medication-events", encoded(prescribed("e-now", "m3", "Atorvastatin")))
    reasons = [(letter.error_type, letter.error_message) for letter in dead_letters(emitted)]
    skew = (
        "ClockSkewError",
        "MedicationPrescribed: occurred_at is more than 300 s "
        "(MEDSTREAM_MAX_CLOCK_SKEW_SECONDS) ahead of the worker's clock",
    )
    assert reasons == [skew, skew]
    patient = medstream.patients.store.state("p1")
    assert patient.active_medication("m1") is None
    assert patient.active_medication("m2") is not None
    assert patient.active_medication("m3") is not None


async def test_a_dose_taken_in_the_future_is_dead_lettered(
    medstream: Medstream, emitted: Emitted
) -> None:
    async with feeding(medstream, "apply-patient-events") as feed:
        taken = event(
            "DoseTaken",
            "e-dose",
            medication_id="m1",
            taken_at=(NOW + timedelta(days=2)).isoformat(),
        )
        await feed.put("medication-events", encoded(taken))
    [letter] = dead_letters(emitted)
    assert letter.error_type == "ClockSkewError"
    assert "taken_at is more than" in letter.error_message


@pytest.fixture
def capped(monkeypatch: pytest.MonkeyPatch) -> Medstream:
    """The app with small caps, so that tests reach them with a few events."""
    return agent_test_app(
        monkeypatch,
        max_active_medications=3,
        max_times_per_schedule=4,
        max_name_length=40,
        max_unit_length=10,
        max_patient_record_bytes=16 * 1024,
    )


@pytest.fixture
def capped_emitted(capped: Medstream, monkeypatch: pytest.MonkeyPatch) -> Emitted:
    return capture_emitted(capped, monkeypatch)


async def test_a_prescription_beyond_the_medication_cap_is_dead_lettered(
    capped: Medstream, capped_emitted: Emitted
) -> None:
    async with feeding(capped, "apply-patient-events") as feed:
        for number in range(4):
            await feed.put(
                "medication-events",
                encoded(prescribed(f"e{number}", f"m{number}", f"Drug {number}")),
            )
        # Prescribing one already active again is no new medication.
        await feed.put("medication-events", encoded(prescribed("e-again", "m0", "Drug 0")))
        await feed.put(
            "medication-events",
            encoded(event("MedicationDiscontinued", "e-stop", medication_id="m1")),
        )
        await feed.put("medication-events", encoded(prescribed("e-after", "m3", "Drug 3")))
    [letter] = dead_letters(capped_emitted)
    assert letter.error_type == "LimitExceeded"
    assert letter.error_message == (
        "MedicationPrescribed: active medications would exceed the cap of 3 "
        "(MEDSTREAM_MAX_ACTIVE_MEDICATIONS)"
    )
    patient = capped.patients.store.state("p1")
    assert sorted(patient.medications) == ["m0", "m2", "m3"]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (
            prescribed("e1", "m1", "x" * 41),
            "MedicationPrescribed: name would exceed the cap of 40 (MEDSTREAM_MAX_NAME_LENGTH)",
        ),
        (
            prescribed("e1", "m1", "Metformin", dose_unit="u" * 11),
            "MedicationPrescribed: dose_unit would exceed the cap of 10 "
            "(MEDSTREAM_MAX_UNIT_LENGTH)",
        ),
        (
            event(
                "ScheduleSet",
                "e1",
                medication_id="m1",
                timezone="UTC",
                times_of_day=["06:00", "10:00", "14:00", "18:00", "22:00"],
            ),
            "ScheduleSet: times_of_day would exceed the cap of 4 "
            "(MEDSTREAM_MAX_TIMES_PER_SCHEDULE)",
        ),
    ],
)
async def test_an_event_beyond_a_size_cap_is_dead_lettered_naming_the_cap(
    capped: Medstream, capped_emitted: Emitted, payload: dict[str, Any], reason: str
) -> None:
    topic = "schedule-events" if payload["event_type"] == "ScheduleSet" else "medication-events"
    async with feeding(capped, "apply-patient-events") as feed:
        await feed.put(topic, encoded(payload))
        await normal_event_is_processed(capped, feed, "p2")
    [letter] = dead_letters(capped_emitted)
    assert (letter.error_type, letter.error_message) == ("LimitExceeded", reason)
    assert capped.patients.store.state("p1") == PatientState()


async def test_schedules_without_prescriptions_are_capped_too(
    capped: Medstream, capped_emitted: Emitted
) -> None:
    async with feeding(capped, "apply-patient-events") as feed:
        for number in range(4):
            schedule = event(
                "ScheduleSet", f"e{number}", medication_id=f"m{number}", timezone="UTC",
                times_of_day=["08:00"],
            )  # fmt: skip
            await feed.put("schedule-events", encoded(schedule))
    [letter] = dead_letters(capped_emitted)
    assert "schedules would exceed the cap of 3" in letter.error_message
    assert len(capped.patients.store.state("p1").schedules) == 3


async def test_a_record_that_would_outgrow_its_cap_is_refused_and_the_patient_kept(
    capped: Medstream, capped_emitted: Emitted
) -> None:
    # Contact channels are not capped one by one, but the record is: 16 KiB here.
    channels = [
        {"kind": "webhook", "target": f"https://example.org/{'x' * 900}/{n}"} for n in range(20)
    ]
    async with feeding(capped, "apply-patient-events") as feed:
        contact = event("ContactPreferencesSet", "e-contact", channels=channels, timezone="UTC")
        await feed.put("patient-events", encoded(contact))
        await normal_event_is_processed(capped, feed, "p1")
    [letter] = dead_letters(capped_emitted)
    assert (letter.error_type, letter.error_message) == (
        "LimitExceeded",
        "the patient's record would exceed the cap of 16384 bytes "
        "(MEDSTREAM_MAX_PATIENT_RECORD_BYTES)",
    )
    assert capped.patients.store.state("p1").contact is None


async def test_outputs_staged_earlier_in_the_batch_ask_for_the_batch_to_be_finished_first(
    capped: Medstream,
) -> None:
    store = capped.patients.store
    big = ALERT.model_copy(update={"medication_name": "y" * 1000})
    refused_at = None
    for count in range(1, 40):
        try:
            store.stage("p1", PatientState(partition=0), outputs=[big])
        except BatchFullError:
            refused_at = count
            break
    # The record itself is small: only the batch's outbox (about 1.3 KiB an alert) is in
    # the way, and what was staged before stays.
    assert refused_at is not None
    assert refused_at > 10
    assert len(store._staged["p1"].outputs) == refused_at - 1
    # A single event whose own outputs are too large can never fit.
    with pytest.raises(LimitExceededError):
        store.stage("p2", PatientState(partition=0), outputs=[big] * 40)
    # Nothing of the refused event was staged: the seen ids are those of before.
    store.stage("p3", PatientState(partition=0), seen=SeenEvents({"a": 1}))
    with pytest.raises(LimitExceededError):
        store.stage("p3", PatientState(partition=0), seen=SeenEvents({"b": 2}), outputs=[big] * 40)
    assert store.seen("p3").entries == {"a": 1}


async def test_the_intake_finishes_the_batch_when_the_outbox_is_full_and_handles_the_event_again(
    capped: Medstream, capped_emitted: Emitted, monkeypatch: pytest.MonkeyPatch
) -> None:
    processor = capped.patients.processor
    calls: list[str] = []
    handle = processor.handle

    async def full_once(event: Any, partition: int) -> Any:
        calls.append(event.event_id)
        if len(calls) == 1:
            raise BatchFullError
        return await handle(event, partition)

    store = capped.patients.store
    write_back = store.write_back
    finished: list[int] = []

    async def counting_write_back() -> None:
        finished.append(len(calls))
        await write_back()

    # The agent takes its handler and batch end when it starts, inside ``feeding``.
    monkeypatch.setattr(processor, "handle", full_once)
    monkeypatch.setattr(store, "write_back", counting_write_back)
    async with feeding(capped, "apply-patient-events") as feed:
        await feed.put("medication-events", encoded(prescribed("e1", "m1", "Metformin")))
    assert calls == ["e1", "e1"]
    assert finished[:2] == [1, 2]  # once before the second try, once at the batch's end
    assert dead_letters(capped_emitted) == []
    assert store.state("p1").active_medication("m1") is not None


async def test_an_unexpected_exception_while_processing_is_dead_lettered_by_type_only(
    medstream: Medstream, emitted: Emitted, monkeypatch: pytest.MonkeyPatch
) -> None:
    import streams.agents.patient_handlers as patient_handlers

    apply_input = patient_handlers.apply_input

    def failing(state: Any, event: Any, rules: Any, now: Any) -> Any:
        if event.patient_id == "p1":
            raise OverflowError("date value out of range for Jane Doe")
        return apply_input(state, event, rules, now)

    monkeypatch.setattr(patient_handlers, "apply_input", failing)
    async with feeding(medstream, "apply-patient-events") as feed:
        await feed.put("medication-events", encoded(prescribed("e1", "m1", "Metformin")))
        await normal_event_is_processed(medstream, feed, "p2")
    [letter] = dead_letters(emitted)
    assert (letter.error_type, letter.error_message) == (
        "ProcessingError",
        "OverflowError while processing MedicationPrescribed",
    )


async def test_an_event_dead_lettered_after_its_changes_were_computed_is_applied_on_replay(
    medstream: Medstream, emitted: Emitted, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Planning its reminders fails (a bug, say): the event is dead-lettered, and nothing of
    # it may stay staged, its id least of all, or its replay after the fix is a "duplicate".
    queue = medstream.patients.processor.queue
    plan = queue.plan_reminder

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise OverflowError("planning failed")

    schedule = event(
        "ScheduleSet",
        "e2",
        medication_id="m1",
        timezone="UTC",
        times_of_day=["08:00"],
    )
    async with feeding(medstream, "apply-patient-events") as feed:
        await feed.put("medication-events", encoded(prescribed("e1", "m1", "Metformin")))
        monkeypatch.setattr(queue, "plan_reminder", failing)
        await feed.put("schedule-events", encoded(schedule))
        [letter] = dead_letters(emitted)
        assert letter.error_type == "ProcessingError"
        assert "m1" not in state(medstream).schedules
        monkeypatch.setattr(queue, "plan_reminder", plan)
        # The replay: the same record again.
        await feed.put("schedule-events", encoded(schedule))
    assert "m1" in state(medstream).schedules
    assert medstream.stats.processed["ScheduleSet"] == 1


async def test_an_unexpected_exception_while_decoding_is_dead_lettered(
    medstream: Medstream, emitted: Emitted, monkeypatch: pytest.MonkeyPatch
) -> None:
    decode = EventDecoder.decode

    def failing(self: EventDecoder, data: bytes | None, *args: Any) -> Any:
        if data is not None and b"poison" in data:
            raise RecursionError("maximum recursion depth exceeded")
        return decode(self, data, *args)

    monkeypatch.setattr(EventDecoder, "decode", failing)
    async with feeding(medstream, "apply-patient-events") as feed:
        await feed.put("medication-events", encoded(prescribed("poison", "m1", "Metformin")))
        await normal_event_is_processed(medstream, feed, "p2")
    [letter] = dead_letters(emitted)
    assert (letter.error_type, letter.error_message) == (
        "DecodeError",
        "RecursionError while decoding",
    )


async def test_a_forged_reminder_cannot_silence_the_slots_before_it(
    medstream: Medstream, emitted: Emitted
) -> None:
    # The recorder keeps the real clock here (the reminders of the other tests are for 2025).
    far = datetime.now(UTC).replace(microsecond=0) + timedelta(days=400)
    forged = {
        "medication_id": "m1",
        "medication_name": "Metformin",
        "dose_quantity": 1,
        "dose_unit": "tablet",
        "scheduled_for": far.isoformat(),
    }
    async with feeding(medstream, "record-reminders") as feed:
        await feed.put(
            "medication-reminders",
            encoded(event("ReminderDue", "r-1", reminder_id="rem-not-its-slot", **forged)),
        )
        rightful = reminder_id("p1", "m1", far)
        await feed.put(
            "medication-reminders",
            encoded(event("ReminderDue", rightful, reminder_id=rightful, **forged)),
        )
    assert [(letter.error_type, letter.error_message) for letter in dead_letters(emitted)] == [
        ("RejectedEventError", "ReminderDue: reminder_id is not its slot's id"),
        ("ClockSkewError", "ReminderDue: scheduled_for is ahead of the worker's clock"),
    ]


async def test_a_batch_end_that_fails_is_tried_again_and_its_outputs_are_not_lost(
    medstream: Medstream, emitted: Emitted, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The changelog refusing a batch (a broker going away) must neither stop the agent (Faust
    # would then acknowledge the batch's events) nor lose the alerts staged behind it.
    monkeypatch.setattr(emitter, "SEND_RETRY_FIRST", 0.01)
    store = medstream.patients.store
    failures = 2

    changelog = store.table.changelog
    append = changelog.append

    async def refusing(changes: Mapping[int, Changes]) -> dict[int, int]:
        nonlocal failures
        if failures:
            failures -= 1
            raise KafkaConnectionError("the broker went away")
        return await append(changes)

    monkeypatch.setattr(changelog, "append", refusing)
    async with feeding(medstream, "apply-patient-events") as feed:
        await feed.put(
            "medication-events", encoded(prescribed("e1", "m1", "Metformin", supply_quantity=0))
        )
        await normal_event_is_processed(medstream, feed, "p2")
    assert failures == 0
    alerts = [alert.medication_id for _, alert in of_type(emitted, RefillAlert)]
    assert alerts.count("m1") >= 1
    assert dead_letters(emitted) == []
    assert store.state("p1").active_medication("m1") is not None
