"""The ceiling: a plain aiokafka consume -> produce pass-through of the pipeline's messages."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaConsumer

from bench.harness import Context, fast_producer, prepare_topics, produce_all
from bench.pipeline import pipeline_records
from streams.kafka_client import client_options
from streams.topics import INPUT_TOPICS, topic_names

NAME = "baseline"


async def pass_through(context: Context, records: list[tuple[str, bytes, bytes]]) -> float:
    """Events per second of consume -> produce (acks=all) over the same input topics."""
    settings = context.settings(NAME)
    await prepare_topics(settings)
    await produce_all(settings, records)
    output = settings.topic_name("refill-alerts")
    consumer = AIOKafkaConsumer(
        *topic_names(settings, INPUT_TOPICS),
        group_id=settings.app_id,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **client_options(settings),
    )
    producer = fast_producer(settings)
    await producer.start()
    await consumer.start()
    total = len(records)
    seen = 0
    started: float | None = None
    pending: list[asyncio.Future[Any]] = []
    try:
        deadline = time.monotonic() + 300
        while seen < total and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=100)
            for partition_records in batches.values():
                if started is None:
                    started = time.perf_counter()
                for record in partition_records:
                    pending.append(await producer.send(output, record.value, key=record.key))
                    seen += 1
            if len(pending) > 5_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        await consumer.commit()
        elapsed = time.perf_counter() - (started or time.perf_counter())
    finally:
        await consumer.stop()
        await producer.stop()
    return seen / elapsed if elapsed > 0 else 0.0


async def run(context: Context) -> None:
    sizes = context.sizes
    records = pipeline_records(sizes.pipeline_events, sizes.doses_per_patient)
    eps = await pass_through(context, records)
    context.baseline_eps = eps
    context.add(NAME, "pass-through", eps, "events/s", ratio=1.0)
    context.note(
        NAME,
        f"{len(records)} records (the pipeline's input), consume -> produce (acks=all) with "
        "aiokafka, timed from the first record received to the last acknowledged",
    )
