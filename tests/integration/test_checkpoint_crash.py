"""Real worker processes against the checkpoint order of streams/state: a SIGKILL in the middle
of bulk checkpoints loses nothing and delivers nothing twice, and a worker restored from the
changelog alone holds exactly the state of the one it replaced."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.agents.patient_store import load_seen, load_state
from streams.consumer_groups import wait_until_stable
from streams.contracts.vocabulary import RefillReason
from streams.domain.patient import stable_id
from streams.kafka_client import client_options
from streams.notify.decide import INTERRUPTED
from streams.settings import Settings
from streams.state.changelog import changelog_topic
from streams.state.stores import RocksDBStore
from streams.state.table import decode_key
from streams.topics import ensure_topics
from streams.topology import AGENTS, DELIVERY_LEDGER_TABLE, PATIENT_STATE_TABLE
from tests.integration.conftest import Receiver
from tests.integration.test_hostile_inputs import free_port, wait_ready
from tests.integration.test_notifier import contact, everything, notifier_settings
from tests.integration.test_patient_state import Events, publish, values
from tests.integration.test_web import parse
from tests.kafka_helpers import wait_until_committed
from tests.worker_process import WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

log = logging.getLogger(__name__)

TABLES = (PATIENT_STATE_TABLE, DELIVERY_LEDGER_TABLE)
MIB = 1024 * 1024
# Every topic an agent reads: all of them committed to their end is "every input settled".
CONSUMED = sorted({spec.base_name for agent in AGENTS for spec in agent.reads})
# Generous: the CI machine has two loaded cores; every wait stops as soon as it succeeds.
SETTLE_TIMEOUT = 240.0


def crash_settings(settings: Settings) -> Settings:
    """Four partitions, a quick failover, and deliveries that give up (or are judged
    interrupted) within seconds rather than minutes."""
    return notifier_settings(settings).model_copy(
        update={
            "topic_partitions": 4,
            "consumer_session_timeout": 8.0,
            "notify_timeout_seconds": 2.0,
            "notify_max_attempts": 2,
            "notify_backoff_base_seconds": 0.1,
            "notify_backoff_cap_seconds": 0.5,
        }
    )


def webhook_contact(events: Events, receiver: Receiver) -> dict[str, Any]:
    return contact(events, {"kind": "webhook", "target": f"{receiver.url}/{events.patient_id}"})


def refill_alert_id(events: Events, medication_id: str, reason: RefillReason, trigger: str) -> str:
    """The event id of the RefillAlert ``trigger`` raises (streams.domain.patient)."""
    return stable_id("refill", events.patient_id, medication_id, reason, trigger)


async def committed_everywhere(settings: Settings) -> None:
    """Every record of every consumed topic handled and committed, and nothing new published
    meanwhile (a delivery's outcome or a resent alert is itself an input of another agent)."""
    names = [settings.topic_name(name) for name in CONSUMED]
    deadline = time.monotonic() + SETTLE_TIMEOUT
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_options(settings))
    await consumer.start()
    try:
        partitions = [
            TopicPartition(name, p) for name in names for p in range(settings.topic_partitions)
        ]
        before = await consumer.end_offsets(partitions)
        while True:
            await wait_until_committed(
                settings, settings.app_id, names, timeout=max(1.0, deadline - time.monotonic())
            )
            after = await consumer.end_offsets(partitions)
            if after == before:
                return
            before = after
    finally:
        await consumer.stop()


async def outcomes_of(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """Every NotificationOutcome published so far, by the id of the event it notified of."""
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for outcome in values(await everything(settings, settings.topic_name("notifications"))):
        found[outcome["source_event_id"]].append(outcome)
    return found


async def until_notified(
    settings: Settings, worker: WorkerProcess, sources: set[str]
) -> dict[str, list[dict[str, Any]]]:
    """Until each of ``sources`` has a final outcome (delivered, or judged interrupted)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        assert worker.running, worker.log_tail()
        found = await outcomes_of(settings)
        missing = sources - set(found)
        if not missing:
            return found
        assert time.monotonic() < deadline, (len(missing), worker.log_tail())
        await asyncio.sleep(1.0)


async def records_in(consumer: AIOKafkaConsumer, settings: Settings, topic: str) -> int:
    """How many records the topic (full name) holds, all partitions together."""
    partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
    return sum((await consumer.end_offsets(partitions)).values())


async def changelog_end(consumer: AIOKafkaConsumer, settings: Settings, table: str) -> int:
    """How many records the table's changelog holds."""
    return await records_in(consumer, settings, changelog_topic(settings, table))


async def restored_records(port: int) -> float:
    """The changelog records a worker read to restore its tables, from its /metrics."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        metrics = parse(await response.text())
    return metrics[("medstream_state_restored_records_total", ())]


def open_tables(data_dir: Path, settings: Settings) -> dict[str, RocksDBStore]:
    """A stopped worker's local stores, where streams.agents.tables.declare_table puts them."""
    return {
        table: RocksDBStore(
            data_dir / f"{settings.app_id}-tables" / table,
            block_cache_bytes=8 * MIB,
            write_buffer_bytes=8 * MIB,
        )
        for table in TABLES
    }


async def kill_while_the_changelog_grows(
    consumer: AIOKafkaConsumer,
    settings: Settings,
    worker: WorkerProcess,
    baseline: int,
    at_least: int,
) -> int:
    """SIGKILL ``worker`` as soon as its patient changelog is seen growing between two looks,
    once it holds ``at_least`` records more than ``baseline``: in the middle of a burst of
    bulk checkpoints. Returns how many records it held at the kill."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    last = baseline
    while True:
        assert worker.running, worker.log_tail()
        assert time.monotonic() < deadline, (
            f"the changelog never grew past {at_least} records: {last - baseline}\n"
            f"{worker.log_tail()}"
        )
        await asyncio.sleep(0.05)
        end = await changelog_end(consumer, settings, PATIENT_STATE_TABLE)
        if end > last and end - baseline >= at_least:
            worker.kill()
            return end
        last = end


# --- 1. SIGKILL in the middle of a burst of bulk checkpoints ------------------------------

BURST_PATIENTS = 400
# Doses recorded after the last tablet.
DOSES_AFTER = 3


def supply_of(n: int) -> int:
    """Patient n's tablets: staggered, so that the patients run out one group after another
    all through the burst."""
    return 4 + n % 30


async def test_a_sigkill_during_bulk_checkpoints_loses_no_event_and_delivers_nothing_twice(
    settings: Settings, receiver: Receiver, tmp_path: Path
) -> None:
    settings = crash_settings(settings)
    await ensure_topics(settings)
    first = WorkerProcess(settings, tmp_path / "worker-1", tmp_path / "worker-1.log")
    # An empty data directory: the replacement's state can only come from the changelog.
    web_port = free_port()
    second = WorkerProcess(
        settings,
        tmp_path / "worker-2",
        tmp_path / "worker-2.log",
        MEDSTREAM_WEB_ENABLED="true",
        MEDSTREAM_WEB_PORT=str(web_port),
    )
    patients = [Events(f"burst-{n}") for n in range(BURST_PATIENTS)]
    prescriptions = [
        events.prescribed("m1", "Metformin", supply_quantity=supply_of(n), refills_remaining=0)
        for n, events in enumerate(patients)
    ]
    # Round after round, one dose of each patient: each batch touches hundreds of patients, so
    # each checkpoint writes hundreds of changelog records. Each patient goes on recording
    # doses after the last tablet, so its record is written again after the alerts.
    doses: list[dict[str, Any]] = []
    last_tablet: dict[int, str] = {}
    for round_ in range(max(supply_of(n) for n in range(BURST_PATIENTS)) + DOSES_AFTER):
        for n, events in enumerate(patients):
            if round_ < supply_of(n) + DOSES_AFTER:
                dose = events.make("DoseTaken", medication_id="m1")
                doses.append(dose)
                if round_ == supply_of(n) - 1:
                    last_tablet[n] = dose["event_id"]
    # The last tablet raises OUT_OF_SUPPLY and, without refills, NO_REFILLS_REMAINING; the
    # doses after it raise nothing.
    expected = {
        refill_alert_id(events, "m1", reason, last_tablet[n])
        for n, events in enumerate(patients)
        for reason in (RefillReason.OUT_OF_SUPPLY, RefillReason.NO_REFILLS_REMAINING)
    }
    try:
        first.start()
        await wait_until_stable(settings, settings.app_id, timeout=120)
        await publish(
            settings,
            "patient-events",
            *(webhook_contact(events, receiver) for events in patients),
            pipelined=True,
        )
        # The contacts first: an alert then always finds its patient's channel.
        await committed_everywhere(settings)
        burst = [*prescriptions, *doses]
        consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_options(settings))
        await consumer.start()
        try:
            baseline = await changelog_end(consumer, settings, PATIENT_STATE_TABLE)
            publishing = asyncio.create_task(
                publish(settings, "medication-events", *burst, pipelined=True)
            )
            try:
                # A third of the burst's records: by then a quarter of the patients ran out,
                # so their alerts are in outboxes, on their way, or being delivered.
                at_kill = await kill_while_the_changelog_grows(
                    consumer, settings, first, baseline, len(burst) // 3
                )
                delivered = len(receiver.requests)
            finally:
                await publishing
            # Read after the kill: nothing adds to it until the replacement runs.
            alerts_at_kill = await records_in(
                consumer, settings, settings.topic_name("refill-alerts")
            )
        finally:
            await consumer.stop()
        second.start()
        await wait_until_stable(settings, settings.app_id, timeout=120)
        await until_notified(settings, second, expected)
        await committed_everywhere(settings)
        found = await outcomes_of(settings)
        dead_letters = await everything(settings, settings.topic_name("dead-letters"))
        restored = await restored_records(web_port)
        assert second.running, second.log_tail()
    finally:
        first.stop()
        second.stop()

    log.info(
        "killed after %d changelog records of a burst of %d events, with %d refill alerts "
        "raised and %d of %d delivered",
        at_kill - baseline,
        len(burst),
        alerts_at_kill,
        delivered,
        len(expected),
    )
    assert len(burst) > 8000, "not a burst of thousands"
    # Killed mid-burst: alerts raised already, not all of them delivered.
    assert alerts_at_kill > 0
    assert delivered < len(expected)
    # The replacement read the changelog in bulk, all the killed worker had written and more.
    assert restored >= at_kill, (restored, at_kill)
    assert dead_letters == [], values(dead_letters)
    by_key = Counter(request["idempotency_key"] for request in receiver.requests)
    twice = {key: count for key, count in by_key.items() if count > 1}
    assert not twice, f"delivered more than once: {twice}"
    by_event = Counter(request["body"]["event_id"] for request in receiver.requests)
    assert set(by_event) <= expected, set(by_event) - expected
    assert all(count == 1 for count in by_event.values()), by_event.most_common(3)
    # Each alert notified once: delivered (its outcome published by the first worker or the
    # second), or cut off by the kill mid-delivery and reported as interrupted, never resent.
    interrupted = set()
    for source in expected:
        statuses = {(o["status"], o.get("error")) for o in found[source]}
        if ("failed", INTERRUPTED) in statuses:
            interrupted.add(source)
            assert statuses <= {("failed", INTERRUPTED), ("delivered", None)}, statuses
        else:
            assert statuses == {("delivered", None)}, (source, statuses)
            assert by_event[source] == 1, source
    assert set(found) == expected, set(found) ^ expected
    # Only deliveries in flight at the kill can be interrupted: notify_concurrency at most.
    assert len(interrupted) <= settings.notify_concurrency, len(interrupted)
    missing = expected - set(by_event)
    log.info(
        "%d deliveries reported interrupted, %d of them never arrived",
        len(interrupted),
        len(missing),
    )
    assert missing <= interrupted, missing - interrupted
    # And the replacement's own copy of the state: every dose applied, each of them once.
    stores = open_tables(second.data_dir, settings)
    try:
        records = {
            decode_key(key): json.loads(value)
            for partition in range(settings.topic_partitions)
            for key, value in stores[PATIENT_STATE_TABLE].items(partition)
        }
    finally:
        for store in stores.values():
            store.close()
    for n, events in enumerate(patients):
        record = records[events.patient_id]
        assert load_state(record).medications["m1"].supply_quantity == 0, events.patient_id
        # The contact, the prescription and every dose, remembered once each.
        assert len(load_seen(record).entries) == supply_of(n) + DOSES_AFTER + 2, events.patient_id


# --- 2. A worker restored from the changelog alone ------------------------------------------

RESTORE_PATIENTS = 300


def contents(stores: dict[str, RocksDBStore], partitions: int) -> dict[str, dict[int, Any]]:
    return {
        table: {p: dict(store.items(p)) for p in range(partitions)}
        for table, store in stores.items()
    }


def positions(stores: dict[str, RocksDBStore], partitions: int) -> dict[str, dict[int, Any]]:
    found: dict[str, dict[int, Any]] = {}
    for table, store in stores.items():
        found[table] = {}
        for p in range(partitions):
            position = store.position(p)
            found[table][p] = None if position is None else position.offset
    return found


async def test_a_worker_restored_from_the_changelog_has_exactly_the_state_of_the_one_it_replaced(
    settings: Settings, receiver: Receiver, tmp_path: Path
) -> None:
    settings = crash_settings(settings)
    await ensure_topics(settings)
    first = WorkerProcess(settings, tmp_path / "worker-1", tmp_path / "worker-1.log")
    web_port = free_port()
    second = WorkerProcess(
        settings,
        tmp_path / "worker-2",
        tmp_path / "worker-2.log",
        MEDSTREAM_WEB_ENABLED="true",
        MEDSTREAM_WEB_PORT=str(web_port),
    )
    patients = [Events(f"restore-{n}") for n in range(RESTORE_PATIENTS)]
    # Slots hours away: no reminder comes due while either worker runs, so nothing but the
    # events below writes the tables.
    later = datetime.now(UTC) + timedelta(hours=6)
    slots = [later.strftime("%H:%M:%S"), (later + timedelta(hours=4)).strftime("%H:%M:%S")]
    medications: list[dict[str, Any]] = []
    schedules: list[dict[str, Any]] = []
    for n, events in enumerate(patients):
        # A third run out of metformin (refill alerts); a fifth take warfarin with aspirin
        # (interaction warnings): both delivered to the webhook, so the ledger fills too.
        supply = 3 if n % 3 == 0 else 60
        medications.append(events.prescribed("m1", "Metformin", supply_quantity=supply))
        if n % 5 == 0:
            medications.append(events.prescribed("warfarin", "Coumadin"))
            medications.append(events.prescribed("aspirin", "Aspirin 81 mg", rxnorm_code="1191"))
        medications.extend(events.make("DoseTaken", medication_id="m1") for _ in range(3))
        schedules.append(
            events.make("ScheduleSet", medication_id="m1", timezone="UTC", times_of_day=slots)
        )
    try:
        first.start()
        await wait_until_stable(settings, settings.app_id, timeout=120)
        await publish(
            settings,
            "patient-events",
            *(webhook_contact(events, receiver) for events in patients),
            pipelined=True,
        )
        await committed_everywhere(settings)
        await publish(settings, "schedule-events", *schedules, pipelined=True)
        await publish(settings, "medication-events", *medications, pipelined=True)
        await committed_everywhere(settings)
        alerts = {
            alert["event_id"]
            for topic in ("refill-alerts", "interaction-warnings")
            for alert in values(await everything(settings, settings.topic_name(topic)))
        }
        assert len(alerts) >= RESTORE_PATIENTS // 3, first.log_tail()
        # Every delivery's outcome recorded in the ledger before the worker stops.
        await until_notified(settings, first, alerts)
        await committed_everywhere(settings)
        first.stop()
        assert first.process is not None
        assert first.process.returncode == 0, first.log_tail()

        consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_options(settings))
        await consumer.start()
        try:
            changelogs = sum([await changelog_end(consumer, settings, t) for t in TABLES])
        finally:
            await consumer.stop()
        second.start()
        await wait_ready(web_port, second)
        restored = await restored_records(web_port)
        second.stop()
        assert second.process is not None
        assert second.process.returncode == 0, second.log_tail()
    finally:
        first.stop()
        second.stop()

    # Its whole state came from the changelog: every record of both, read once.
    assert restored == changelogs, (restored, changelogs)
    kept, restored_stores = (open_tables(w.data_dir, settings) for w in (first, second))
    try:
        before = contents(kept, settings.topic_partitions)
        after = contents(restored_stores, settings.topic_partitions)
        for table in TABLES:
            for partition in range(settings.topic_partitions):
                assert before[table][partition], (table, partition)
                assert after[table][partition] == before[table][partition], (table, partition)
        # And each partition's copy knows it reached the same changelog offset.
        assert positions(restored_stores, settings.topic_partitions) == positions(
            kept, settings.topic_partitions
        )
    finally:
        for store in (*kept.values(), *restored_stores.values()):
            store.close()
    assert sum(len(keys) for keys in before[PATIENT_STATE_TABLE].values()) == RESTORE_PATIENTS
    log.info(
        "%d alerts delivered; %d changelog records restored; keys per partition: %s",
        len(alerts),
        restored,
        {table: [len(before[table][p]) for p in sorted(before[table])] for table in TABLES},
    )
