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
    running,
    wait_until,
)
from streams.app import create_app
from streams.kafka_client import client_options

NAME = "latency"
TARGET_P99_MS = 50.0


async def run(context: Context) -> None:
    sizes = context.sizes
    rate = sizes.latency_rate
    count = int(rate * sizes.latency_seconds)
    settings = context.settings(NAME)
    await prepare_topics(settings)
    factory = EventFactory(f"l{uuid.uuid4().hex[:6]}")
    # One patient per measured event, prescribed exactly one dose: its DoseTaken runs the supply
    # out, so every event gives one OUT_OF_SUPPLY alert and one delivered NotificationOutcome.
    setup = []
    for index in range(count):
        setup.append(record_of(factory.contact(f"p{index}")))
        setup.append(record_of(factory.prescribed(f"p{index}", supply=1)))
    await produce_all(settings, setup)
    doses = [record_of(factory.dose(f"p{index}")) for index in range(count)]
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
            while len(latencies) < count:
                batches = await outcomes.getmany(timeout_ms=100)
                for records in batches.values():
                    for record in records:
                        outcome = json.loads(record.value)
                        started = sent_at.pop(record.key, None)
                        if (
                            started is not None
                            and outcome.get("source_event_type") == "RefillAlert"
                        ):
                            latencies.append(record.timestamp - started * 1000)

        reader = asyncio.create_task(read_outcomes())
        try:
            begin = time.monotonic()
            for index, (topic, key, value) in enumerate(doses):
                delay = begin + index / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent_at[key] = time.time()
                await producer.send(settings.topic_name(topic), value, key=key)
            offered = count / (time.monotonic() - begin)
            await asyncio.wait_for(reader, timeout=60 + sizes.latency_seconds)
        except TimeoutError:
            context.note(NAME, f"only {len(latencies)}/{count} outcomes arrived in time")
        finally:
            reader.cancel()
            await producer.stop()
            await outcomes.stop()
    p99 = percentile(latencies, 99)
    context.add(NAME, "offered rate", offered, "events/s")
    context.add(NAME, "p50", percentile(latencies, 50), "ms")
    context.add(NAME, "p95", percentile(latencies, 95), "ms")
    context.add(
        NAME,
        "p99",
        p99,
        "ms",
        target=f"<= {TARGET_P99_MS:g} ms at {rate} events/s",
        met=bool(latencies) and p99 <= TARGET_P99_MS,
    )
    context.add(NAME, "max", max(latencies, default=float("nan")), "ms")
    context.add(NAME, "outcomes", len(latencies), "outcomes")
    context.note(
        NAME,
        f"{count} DoseTaken at {rate}/s, each running a supply out; latency = the "
        "NotificationOutcome's broker timestamp minus the moment the DoseTaken was sent",
    )
