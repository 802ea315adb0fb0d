"""Reminder punctuality: many schedules due in the same second; how late each ReminderDue is."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaConsumer

from bench.harness import (
    Context,
    EventFactory,
    counting_channel,
    percentile,
    prepare_topics,
    produce_all,
    record_of,
    wait_until,
)
from streams.app import create_app
from streams.kafka_client import client_options
from streams.worker import running

NAME = "punctuality"
TARGET_P99_S = 1.0


async def run(context: Context) -> None:
    count = context.sizes.schedules
    settings = context.settings(NAME)
    await prepare_topics(settings)
    factory = EventFactory(f"r{uuid.uuid4().hex[:6]}")
    setup = []
    for index in range(count):
        setup.append(record_of(factory.contact(f"p{index}")))
        setup.append(record_of(factory.prescribed(f"p{index}", supply=1000)))
    await produce_all(settings, setup)
    medstream = create_app(settings)
    counting_channel(medstream)
    stats = medstream.stats
    lateness: list[float] = []
    # The record's timestamp is when the producer took it (its batch append), so the time it
    # reached a consumer is measured too: a batch taken on time but sent late shows there.
    received: list[float] = []
    async with running(medstream):
        began = time.monotonic()
        await wait_until(lambda: stats.total_settled >= len(setup), 600, 0.05)
        setup_seconds = time.monotonic() - began
        # The schedules go in once the prescriptions are applied, for one slot (whole second)
        # far enough ahead for the worker to apply every ScheduleSet before it: half as many
        # events as the setup, but each plans a reminder (0.75 of the setup time was too
        # little for 50,000: 1% of the schedules were applied after their slot).
        lead = 10.0 + setup_seconds
        slot = (datetime.now(UTC) + timedelta(seconds=lead)).replace(microsecond=0)
        at = slot.strftime("%H:%M:%S")
        schedules = [record_of(factory.schedule(f"p{index}", at)) for index in range(count)]
        await produce_all(settings, schedules)
        total = len(setup) + len(schedules)
        await wait_until(lambda: stats.total_settled >= total, lead + 600, 0.05)
        if datetime.now(UTC) >= slot:
            context.note(NAME, "the schedules were applied only after their slot: lateness grows")
        reminders = AIOKafkaConsumer(
            settings.topic_name("medication-reminders"),
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            **client_options(settings),
        )
        await reminders.start()
        try:
            deadline = time.monotonic() + max(0.0, (slot - datetime.now(UTC)).total_seconds())
            deadline += 120
            while len(lateness) < count and time.monotonic() < deadline:
                batches = await reminders.getmany(timeout_ms=200)
                arrived = time.time()
                for records in batches.values():
                    for record in records:
                        event = json.loads(record.value)
                        if event["event_type"] != "ReminderDue":
                            continue
                        due = datetime.fromisoformat(event["scheduled_for"]).timestamp()
                        lateness.append(record.timestamp / 1000 - due)
                        received.append(arrived - due)
        finally:
            await reminders.stop()
    p99 = percentile(lateness, 99)
    context.add(NAME, "p50 lateness", percentile(lateness, 50), "s")
    context.add(
        NAME,
        "p99 lateness",
        p99,
        "s",
        target=f"<= {TARGET_P99_S:g} s",
        met=len(lateness) == count and p99 <= TARGET_P99_S,
    )
    context.add(NAME, "max lateness", max(lateness, default=float("nan")), "s")
    context.add(NAME, "p99 lateness as received", percentile(received, 99), "s")
    context.add(NAME, "reminders", len(lateness), "reminders")
    context.note(
        NAME,
        f"{count} schedules due in the same second ({slot.isoformat()}); lateness = the "
        "ReminderDue's broker timestamp minus its scheduled_for",
    )
