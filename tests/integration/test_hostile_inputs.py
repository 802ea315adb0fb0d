"""Hostile and careless input against a real worker process: nothing halts it, nothing leaks.

Each input below is what an attacker or a broken upstream could publish. Every one must end
dead-lettered with a reason, or be handled safely; after each class of them a normal event of
another patient is still processed within 5 s; and neither the worker's log nor any
dead-letter reason nor any notification outcome carries the patient strings that were sent.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.kafka_client import client_options
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.worker_process import WorkerProcess

pytestmark = pytest.mark.integration

# What a patient or an upstream sent that must never reach a log line or a reason.
NAME = "Margaret Hamilton"
EMAIL = "margaret.hamilton@example.org"
PHONE = "+1-617-555-0199"
SECRET = "s3cr3t-Pa55word"
PATH = "margaret-hamilton-chart"
PATIENT_STRINGS = (NAME, "Hamilton", EMAIL, PHONE, "617-555-0199", SECRET, PATH, "MargaretH")
MAX_ACTIVE = 5
NOW = datetime.now(UTC).replace(microsecond=0)


def iso(at: datetime) -> str:
    return at.isoformat()


def envelope(event_type: str, patient_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": fields.pop("event_id", f"hostile-{uuid.uuid4().hex}"),
        "event_type": event_type,
        "patient_id": patient_id,
        "occurred_at": fields.pop("occurred_at", iso(NOW)),
        **fields,
    }


def prescription(patient_id: str, medication_id: str = "m1", **fields: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "medication_id": medication_id,
        "name": "Metformin 500 mg tablet",
        "dose_quantity": 1,
        "dose_unit": "tablet",
        "supply_quantity": 100,
        "refills_remaining": 2,
    }
    return envelope("MedicationPrescribed", patient_id, **{**defaults, **fields})


def as_bytes(payload: Any) -> bytes:
    return json.dumps(payload).encode()


@dataclass(frozen=True)
class Hostile:
    """One hostile record and the dead letter it must become (None: handled, not refused)."""

    label: str
    topic: str
    value: bytes | None
    key: bytes | None = b"hostile-p"
    headers: tuple[tuple[str, bytes], ...] = ()
    error_type: str | None = "ValidationError"
    reason: str = ""


def timestamps() -> list[Hostile]:
    p = "ts-patient"
    out = []
    for field_name, value in (
        ("occurred_at", "0001-01-01T00:00:00+01:00"),
        ("occurred_at", "9999-12-31T23:59:59-01:00"),
        ("taken_at", "0001-01-01T00:00:00+01:00"),
        ("taken_at", "9999-12-31T23:59:59-01:00"),
        ("scheduled_for", "9999-12-31T23:59:59-01:00"),
        ("occurred_at", "1969-12-31T23:59:59Z"),
    ):
        out.append(
            Hostile(
                f"{field_name}={value}",
                "medication-events",
                as_bytes(envelope("DoseTaken", p, medication_id="m1", **{field_name: value})),
                key=p.encode(),
                reason=f"{field_name}: must lie between",
            )
        )
    schedule = envelope(
        "ScheduleSet", p, medication_id="m1", timezone="UTC", times_of_day=["08:00"],
        start_date="0001-01-01", end_date="9999-12-31",
    )  # fmt: skip
    out.append(
        Hostile(
            "dates out of range",
            "schedule-events",
            as_bytes(schedule),
            key=p.encode(),
            reason="start_date: must lie between",
        )
    )
    return out


def clock_skew() -> list[Hostile]:
    p = "skew-patient"
    far = prescription(p, occurred_at="2199-06-01T00:00:00Z")
    month = prescription(p, "m2", occurred_at=iso(NOW + timedelta(days=31)))
    taken = envelope("DoseTaken", p, medication_id="m1", taken_at=iso(NOW + timedelta(days=3)))
    return [
        Hostile("dated 2199", "medication-events", as_bytes(far), key=p.encode(),
                error_type="ClockSkewError", reason="occurred_at is more than"),
        Hostile("clock a month fast", "medication-events", as_bytes(month), key=p.encode(),
                error_type="ClockSkewError", reason="occurred_at is more than"),
        Hostile("taken in three days", "medication-events", as_bytes(taken), key=p.encode(),
                error_type="ClockSkewError", reason="taken_at is more than"),
    ]  # fmt: skip


def sizes() -> list[Hostile]:
    p = "size-patient"
    huge_invalid = b'{"event_type": "MedicationPrescribed", "name": "' + b"x" * 900_000 + b'"'
    huge_name = as_bytes(prescription(p, name=NAME + " " + "y" * 900_000))
    long_name = as_bytes(prescription(p, name=f"{NAME} " + "z" * 300))
    long_unit = as_bytes(prescription(p, dose_unit=f"{EMAIL} " + "u" * 60))
    many_times = envelope(
        "ScheduleSet", p, medication_id="m1", timezone="UTC",
        times_of_day=[f"{hour:02d}:{minute:02d}" for hour in range(24) for minute in (0, 20, 40)],
    )  # fmt: skip
    too_many_times = envelope(
        "ScheduleSet", p, medication_id="m1", timezone="UTC",
        times_of_day=[f"{hour:02d}:15" for hour in range(24)] + ["00:45"],
    )  # fmt: skip
    big_headers = tuple((f"h{n}", b"v" * 60_000) for n in range(12))
    return [
        Hostile("900 KB of broken JSON", "medication-events", huge_invalid, key=p.encode(),
                error_type="DecodeError", reason="not valid JSON"),
        Hostile("900 KB medication name", "medication-events", huge_name, key=p.encode(),
                reason="name: String should have at most 1000 characters"),
        Hostile("name over the cap", "medication-events", long_name, key=p.encode(),
                error_type="LimitExceeded", reason="MEDSTREAM_MAX_NAME_LENGTH"),
        Hostile("unit over the cap", "medication-events", long_unit, key=p.encode(),
                error_type="LimitExceeded", reason="MEDSTREAM_MAX_UNIT_LENGTH"),
        Hostile("72 times a day", "schedule-events", as_bytes(many_times), key=p.encode(),
                reason="times_of_day"),
        Hostile("25 times a day", "schedule-events", as_bytes(too_many_times), key=p.encode(),
                error_type="LimitExceeded", reason="MEDSTREAM_MAX_TIMES_PER_SCHEDULE"),
        Hostile("720 KB of headers", "medication-events", b"\x13 not an event", key=p.encode(),
                headers=big_headers, error_type="DecodeError", reason="unrecognised encoding"),
        Hostile("a 100 KB key", "medication-events", as_bytes(prescription(p)), key=b"k" * 100_000,
                reason="record key is not the event's patient_id"),
    ]  # fmt: skip


def caps() -> list[Hostile]:
    p = "cap-patient"
    beyond = [
        Hostile(f"medication {n + 1}", "medication-events",
                as_bytes(prescription(p, f"cap-m{n}", name=f"Drug {n}")), key=p.encode(),
                error_type=None if n < MAX_ACTIVE else "LimitExceeded",
                reason="MEDSTREAM_MAX_ACTIVE_MEDICATIONS")
        for n in range(MAX_ACTIVE + 2)
    ]  # fmt: skip
    schedules = [
        Hostile(f"schedule {n + 1}", "schedule-events",
                as_bytes(envelope("ScheduleSet", "sched-patient", medication_id=f"s{n}",
                                  timezone="UTC", times_of_day=["08:00"])),
                key=b"sched-patient", error_type=None if n < MAX_ACTIVE else "LimitExceeded",
                reason="MEDSTREAM_MAX_ACTIVE_MEDICATIONS")
        for n in range(MAX_ACTIVE + 1)
    ]  # fmt: skip
    # 20 channels of ~1000 characters: valid one by one, too large a record together (16 KiB
    # in this worker).
    wide = envelope(
        "ContactPreferencesSet", "wide-patient", timezone="UTC",
        channels=[{"kind": "email", "target": f"{n}.{EMAIL}{'x' * 900}"} for n in range(20)],
    )  # fmt: skip
    return [
        *beyond,
        *schedules,
        Hostile("record over 16 KiB", "patient-events", as_bytes(wide), key=b"wide-patient",
                error_type="LimitExceeded", reason="MEDSTREAM_MAX_PATIENT_RECORD_BYTES"),
    ]  # fmt: skip


def encodings() -> list[Hostile]:
    p = b"enc-patient"
    ok = prescription("enc-patient")
    nested = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    return [
        Hostile("empty value", "medication-events", b"", key=p, error_type="DecodeError",
                reason="empty record value"),
        Hostile("tombstone", "medication-events", None, key=p, error_type="DecodeError",
                reason="empty record value"),
        Hostile("not UTF-8", "medication-events", b'{"name": "\xff\xfe"}', key=p,
                error_type="DecodeError", reason="not valid UTF-8"),
        Hostile("deep nesting", "medication-events", nested, key=p, error_type="DecodeError",
                reason="not valid JSON"),
        Hostile("a 5000-digit number", "medication-events",
                b'{"dose_quantity": ' + b"9" * 5000 + b"}", key=p, error_type="DecodeError",
                reason="too many digits"),
        Hostile("NaN dose", "medication-events",
                as_bytes(ok).replace(b'"dose_quantity": 1', b'"dose_quantity": NaN'), key=p,
                reason="dose_quantity"),
        Hostile("a string for a number", "medication-events",
                as_bytes({**ok, "supply_quantity": "100"}), key=p, reason="supply_quantity"),
        Hostile("a JSON array", "medication-events", b"[1, 2, 3]", key=p,
                error_type="DecodeError", reason="unrecognised encoding"),
        Hostile("an identifier-shaped unknown type", "medication-events",
                as_bytes({**ok, "event_type": "MargaretHamilton1942"}), key=p,
                reason="event_type: not an event type of the contract"),
        Hostile("a name as the event type", "medication-events",
                as_bytes({**ok, "event_type": NAME}), key=p,
                reason="event_type: not an event type of the contract"),
        Hostile("an event on the wrong topic", "patient-events", as_bytes(ok), key=p,
                reason="does not belong"),
        Hostile("a foreign key", "medication-events", as_bytes(ok), key=b"someone-else",
                reason="record key is not the event's patient_id"),
        Hostile("no key", "medication-events", as_bytes(ok), key=None,
                reason="record key is not the event's patient_id"),
        Hostile("truncated Avro", "medication-events", b"\xc3\x01" + b"\x00" * 5, key=p,
                error_type="DecodeError", reason="truncated Avro single-object header"),
        Hostile("Confluent framing, no registry", "medication-events", b"\x00\x00\x00\x00\x07{}",
                key=p, error_type="DecodeError", reason="no schema registry is configured"),
        Hostile("an unknown time zone", "schedule-events",
                as_bytes(envelope("ScheduleSet", "enc-patient", medication_id="m1",
                                  timezone=f"Europe/{PATH}", times_of_day=["08:00"])),
                key=p, reason="unknown IANA time zone"),
        Hostile("patient data in every field", "medication-events",
                as_bytes(prescription("enc-patient", name=NAME, dose_unit=EMAIL,
                                      rxnorm_code=PHONE, dose_quantity=0)),
                key=p, reason="MedicationPrescribed"),
    ]  # fmt: skip


def contacts(receiver_port: int) -> list[Hostile]:
    """Contact preferences are valid input but aim deliveries inside the network: accepted,
    and then every delivery to them is refused (checked through the notifications)."""
    inside = [
        f"http://127.0.0.1:{receiver_port}/{PATH}",
        f"https://127.0.0.1:{receiver_port}/{PATH}",
        f"https://localhost:{receiver_port}/{PATH}",
        f"https://[::1]:{receiver_port}/{PATH}",
        f"https://admin:{SECRET}@example.org/{PATH}",
        f"https://169.254.169.254/latest/meta-data/{PATH}",
        f"https://10.0.0.7/{PATH}",
        f"https://127.0.0.1:6066/admin/pause?{PATH}",
    ]
    channels = [{"kind": "webhook", "target": target} for target in inside]
    channels += [
        {"kind": "console", "target": NAME},
        {"kind": "apprise", "target": f"json://127.0.0.1:{receiver_port}/{PATH}"},
    ]
    preferences = envelope(
        "ContactPreferencesSet", "contact-patient", timezone="UTC", channels=channels
    )
    return [
        Hostile("webhooks and channels aimed inside", "patient-events", as_bytes(preferences),
                key=b"contact-patient", error_type=None),
        Hostile("an alert for that patient", "medication-events",
                as_bytes(prescription("contact-patient", supply_quantity=0, name="Warfarin")),
                key=b"contact-patient", error_type=None),
    ]  # fmt: skip


@dataclass
class Observed:
    """Everything the worker published, as it arrives."""

    records: dict[str, list[Any]] = field(default_factory=dict)

    def values(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(record.value) for record in self.records.get(topic, [])]


async def watch(settings: Settings, observed: Observed, stop: asyncio.Event) -> None:
    names = ("dead-letters", "refill-alerts", "notifications", "interaction-warnings")
    topics = [settings.topic_name(name) for name in names]
    consumer = AIOKafkaConsumer(
        *topics, auto_offset_reset="earliest", enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024, **client_options(settings),
    )  # fmt: skip
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200)
            for tp, records in batches.items():
                name = tp.topic.removeprefix(settings.topic_prefix)
                observed.records.setdefault(name, []).extend(records)
    finally:
        await consumer.stop()


async def until(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.05)
    return check()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def loopback_receiver() -> AsyncIterator[tuple[int, list[str]]]:
    """A server on loopback that records any request at all: none may ever arrive."""
    requests: list[str] = []

    async def anything(request: web.Request) -> web.Response:
        requests.append(f"{request.method} {request.path}")
        return web.Response(status=200)

    application = web.Application()
    application.router.add_route("*", "/{tail:.*}", anything)
    runner = web.AppRunner(application)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield port, requests
    finally:
        await runner.cleanup()


async def test_hostile_inputs_neither_halt_the_worker_nor_leak_patient_data(
    settings: Settings, tmp_path: Path, loopback_receiver: tuple[int, list[str]]
) -> None:
    receiver_port, received = loopback_receiver
    settings = settings.model_copy(update={"topic_partitions": 2})
    await ensure_topics(settings)
    web_port = free_port()
    worker = WorkerProcess(
        settings,
        tmp_path / "worker",
        tmp_path / "worker.log",
        MEDSTREAM_WEB_ENABLED="true",
        MEDSTREAM_WEB_PORT=str(web_port),
        MEDSTREAM_MAX_ACTIVE_MEDICATIONS=str(MAX_ACTIVE),
        MEDSTREAM_MAX_PATIENT_RECORD_BYTES=str(16 * 1024),
        MEDSTREAM_NOTIFY_WEBHOOK_SECRET="hostile-suite-secret",
        MEDSTREAM_NOTIFY_CONTACT_WAIT_SECONDS="0",
        MEDSTREAM_NOTIFY_MAX_ATTEMPTS="2",
        MEDSTREAM_NOTIFY_BACKOFF_BASE_SECONDS="0.1",
        MEDSTREAM_NOTIFY_TIMEOUT_SECONDS="3",
        MEDSTREAM_NOTIFY_APPRISE_SCHEMES="json",
    )
    classes = {
        "timestamps": timestamps(),
        "clock skew": clock_skew(),
        "sizes": sizes(),
        "caps": caps(),
        "encodings": encodings(),
        "contacts": contacts(receiver_port),
    }
    every = [hostile for batch in classes.values() for hostile in batch]
    assert len(every) >= 40
    observed = Observed()
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch(settings, observed, stop))
    producer = AIOKafkaProducer(
        acks="all", max_request_size=2 * 1024 * 1024, **client_options(settings)
    )
    await producer.start()
    worker.start()
    try:
        await wait_ready(web_port, worker)
        for number, (name, batch) in enumerate(classes.items()):
            sent = {}
            for hostile in batch:
                metadata = await producer.send_and_wait(
                    settings.topic_name(hostile.topic),
                    hostile.value,
                    key=hostile.key,
                    headers=list(hostile.headers),
                )
                sent[(metadata.topic, metadata.partition, metadata.offset)] = hostile
            expected = sum(1 for hostile in batch if hostile.error_type is not None)

            def lettered(sent: dict[Any, Hostile] = sent) -> list[dict[str, Any]]:
                return [
                    letter
                    for letter in observed.values("dead-letters")
                    if (letter["original_topic"], letter["partition"], letter["offset"]) in sent
                ]

            assert await until(lambda expected=expected: len(lettered()) >= expected, 60), (
                name,
                worker.log_tail(),
            )
            for letter in lettered():
                hostile = sent[(letter["original_topic"], letter["partition"], letter["offset"])]
                assert letter["error_type"] == hostile.error_type, (hostile.label, letter)
                assert hostile.reason in letter["error_message"], (hostile.label, letter)
            assert len(lettered()) == expected, name

            # The stream goes on: another patient's normal event is processed within 5 s.
            probe = f"probe-{number}"
            started = time.monotonic()
            await producer.send_and_wait(
                settings.topic_name("medication-events"),
                as_bytes(prescription(probe, supply_quantity=0)),
                key=probe.encode(),
            )
            assert await until(
                lambda probe=probe: any(
                    alert["patient_id"] == probe for alert in observed.values("refill-alerts")
                ),
                30,
            ), (name, worker.log_tail())
            assert time.monotonic() - started <= 5.0, name
            assert worker.running, worker.log_tail()

        # A patient whose event came from the future is not locked out.
        await producer.send_and_wait(
            settings.topic_name("medication-events"),
            as_bytes(prescription("skew-patient", "m-now", supply_quantity=0)),
            key=b"skew-patient",
        )
        assert await until(
            lambda: any(
                a["patient_id"] == "skew-patient" for a in observed.values("refill-alerts")
            ),
            30,
        )
        # Every delivery for the contact aimed inside the network ended, none reached it.
        outcomes = await settled_outcomes(observed, "contact-patient", 10)
        assert len(outcomes) == 10, outcomes
        assert {outcome["status"] for outcome in outcomes} == {"failed"}, outcomes
        # Fixed texts: what a refusal says tells nothing of the network behind the target.
        assert {outcome["error"] for outcome in outcomes} == {
            "target refused by the webhook policy",
            "target refused by the apprise policy",
            "console is not configured",
        }, outcomes
        assert received == [], received
        # The worker is ready: no agent crashed, no partition stopped.
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{web_port}/ready") as ready,
        ):
            assert ready.status == 200, await ready.text()
    finally:
        await producer.stop()
        worker.stop()
        stop.set()
        await watcher

    log = worker.log_file.read_text(errors="replace")
    reasons = [letter["error_message"] for letter in observed.values("dead-letters")]
    errors = [outcome.get("error") or "" for outcome in observed.values("notifications")]
    for text in PATIENT_STRINGS:
        assert text not in log, f"{text!r} in the worker's log"
        for reason in reasons + errors:
            assert text not in reason, f"{text!r} in {reason!r}"


async def settled_outcomes(observed: Observed, patient_id: str, count: int) -> list[Any]:
    def mine() -> list[dict[str, Any]]:
        return [o for o in observed.values("notifications") if o["patient_id"] == patient_id]

    await until(lambda: len(mine()) >= count, 60)
    return mine()


async def wait_ready(port: int, worker: WorkerProcess, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            assert worker.running, worker.log_tail()
            try:
                async with session.get(f"http://127.0.0.1:{port}/ready") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
    raise AssertionError(f"the worker never became ready: {worker.log_tail()}")
