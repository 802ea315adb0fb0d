"""End-to-end latency at a fixed offered rate: publish DoseTaken -> NotificationOutcome."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

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

NAME = "latency"
TARGET_P99_MS = 50.0


LOW_RATE = 20


async def run(context: Context) -> None:
    sizes = context.sizes
    rate = sizes.latency_rate
    count = int(rate * sizes.latency_seconds)
    # First a light load, to show the pipeline's own latency, then the offered rate of the issue.
    low_count = int(LOW_RATE * max(3.0, sizes.latency_seconds))
    settings = context.settings(NAME)
    await prepare_topics(settings)
    factory = EventFactory(f"l{uuid.uuid4().hex[:6]}")
    # One patient per measured event, prescribed exactly one dose: its DoseTaken runs the supply
    # out, so every event gives one OUT_OF_SUPPLY alert and one delivered NotificationOutcome.
    total = low_count + count
    setup = []
    for index in range(total):
        setup.append(record_of(factory.contact(f"p{index}")))
        setup.append(record_of(factory.prescribed(f"p{index}", supply=1)))
    await produce_all(settings, setup)
    doses = [record_of(factory.dose(f"p{index}")) for index in range(total)]
    medstream = create_app(settings)
    counting_channel(medstream)
    stats = medstream.stats
    sent_at: dict[bytes, float] = {}
    latencies: list[float] = []
    async with running(medstream):
        if not await wait_until(lambda: stats.total_settled >= len(setup), 300, 0.05):
            context.note(NAME, f"setup not settled: {stats.total_settled}/{len(setup)}")
        outcomes = AIOKafkaConsumer(
            settings.topic_name("notifications"),
            auto_offset_reset="latest",
            enable_auto_commit=False,
            **client_options(settings),
        )
        await outcomes.start()
        await outcomes.seek_to_end()
        producer = AIOKafkaProducer(acks="all", **client_options(settings))
        await producer.start()

        async def read_outcomes() -> None:
            while True:
                batches = await outcomes.getmany(timeout_ms=100)
                for records in batches.values():
                    for record in records:
                        outcome = json.loads(record.value)
                        started = sent_at.pop(record.key, None)
                        if started is not None and outcome["source_event_type"] == "RefillAlert":
                            latencies.append(record.timestamp - started * 1000)

        async def offer(batch: list[tuple[str, bytes, bytes]], per_second: int) -> float:
            latencies.clear()
            begin = time.monotonic()
            for index, (topic, key, value) in enumerate(batch):
                delay = begin + index / per_second - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent_at[key] = time.time()
                await producer.send(settings.topic_name(topic), value, key=key)
            offered = len(batch) / (time.monotonic() - begin)
            if not await wait_until(lambda: len(latencies) >= len(batch), 60 + len(batch) / 50):
                context.note(NAME, f"only {len(latencies)}/{len(batch)} outcomes arrived in time")
            return offered

        reader = asyncio.create_task(read_outcomes())
        try:
            await offer(doses[:low_count], LOW_RATE)
            low = list(latencies)
            offered = await offer(doses[low_count:], rate)
        finally:
            reader.cancel()
            await producer.stop()
            await outcomes.stop()
    p99 = percentile(latencies, 99)
    context.add(NAME, f"p50 at {LOW_RATE} events/s", percentile(low, 50), "ms")
    context.add(NAME, f"p99 at {LOW_RATE} events/s", percentile(low, 99), "ms")
    context.add(NAME, "offered rate", offered, "events/s")
    context.add(NAME, "p50", percentile(latencies, 50), "ms")
    context.add(NAME, "p95", percentile(latencies, 95), "ms")
    context.add(
        NAME,
        "p99",
        p99,
        "ms",
        target=f"<= {TARGET_P99_MS:g} ms at {rate} events/s",
        met=len(latencies) == count and p99 <= TARGET_P99_MS,
    )
    context.add(NAME, "max", max(latencies, default=float("nan")), "ms")
    context.add(NAME, "outcomes", len(latencies), "outcomes")
    context.note(
        NAME,
        f"{low_count} DoseTaken at {LOW_RATE}/s, then {count} at {rate}/s, each running a "
        "supply out (one RefillAlert, one delivery, one NotificationOutcome); latency = the "
        "outcome's broker timestamp minus the moment the DoseTaken was sent",
    )
