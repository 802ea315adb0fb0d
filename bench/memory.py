"""Memory: worker RSS at start, with N patients' state in RocksDB, and over a steady soak."""

from __future__ import annotations

import asyncio
import random
import time
import uuid

from aiokafka import AIOKafkaProducer

from bench.harness import Context, EventFactory, record_of
from bench.workers import fill_state_table, started_worker
from streams.kafka_client import client_options

NAME = "memory"
TARGET_GROWTH = 0.05
MB = 1024 * 1024


async def run(context: Context) -> None:
    sizes = context.sizes
    patients = sizes.memory_patients
    timeout = 120 + patients / 500

    empty = context.settings(NAME)
    settings = context.settings(NAME)
    await fill_state_table(settings, patients)
    # Both workers start together (they share no topics or state): one start's wait saved.
    started = await asyncio.gather(
        started_worker(empty, f"{NAME}-empty", timeout),
        started_worker(settings, NAME, timeout),
        return_exceptions=True,
    )
    failures = [outcome for outcome in started if isinstance(outcome, BaseException)]
    if failures:
        for outcome in started:
            if not isinstance(outcome, BaseException):
                outcome[0].stop()
        raise failures[0]
    (worker_empty, _), (worker, _) = started  # type: ignore[misc]
    try:
        await asyncio.sleep(2)
        rss_empty = worker_empty.rss()
    finally:
        worker_empty.stop()
    samples: list[tuple[float, int]] = []
    try:
        # After ready the reminder timer plans every schedule: let it finish before sampling.
        await asyncio.sleep(1 + patients / 20_000)
        rss_full = worker.rss()
        factory = EventFactory(f"s{uuid.uuid4().hex[:6]}")
        producer = AIOKafkaProducer(acks="all", **client_options(settings))
        await producer.start()
        try:
            rng = random.Random(7)
            rate = sizes.soak_rate
            began = time.monotonic()
            sent = 0
            next_sample = began
            while time.monotonic() - began < sizes.soak_seconds:
                now = time.monotonic()
                if now >= next_sample:
                    samples.append((now - began, worker.rss()))
                    next_sample += 1.0
                due = int((now - began) * rate)
                while sent < due:
                    topic, key, value = record_of(factory.dose(f"p{rng.randrange(patients)}"))
                    await producer.send(settings.topic_name(topic), value, key=key)
                    sent += 1
                await asyncio.sleep(0.01)
            samples.append((time.monotonic() - began, worker.rss()))
        finally:
            await producer.stop()
        await asyncio.sleep(2)
        processed = await worker.metric_total("medstream_events_consumed_total")
        dead = await worker.metric_total("medstream_dead_letters_total")
    finally:
        worker.stop()
    # Growth is judged after a warm-up tenth of the soak (buffers and caches filling).
    warm = [rss for at, rss in samples if at >= sizes.soak_seconds * 0.1] or [samples[0][1]]
    growth = (warm[-1] - warm[0]) / warm[0]
    context.add(NAME, "RSS at start (empty tables)", rss_empty / MB, "MiB")
    context.add(NAME, f"RSS with {patients:,} patients", rss_full / MB, "MiB")
    context.add(NAME, "RSS at soak start", warm[0] / MB, "MiB")
    context.add(NAME, "RSS at soak end", warm[-1] / MB, "MiB")
    context.add(NAME, "RSS max during soak", max(rss for _at, rss in samples) / MB, "MiB")
    context.add(
        NAME,
        "RSS growth over the soak",
        growth * 100,
        "%",
        target=f"< {TARGET_GROWTH * 100:g}%",
        met=growth < TARGET_GROWTH,
    )
    context.add(NAME, "soak events sent", sent, "events")
    context.add(NAME, "events consumed by the worker", processed, "events")
    context.add(NAME, "dead-lettered during the soak", dead, "events")
    context.note(
        NAME,
        f"a real `medstream worker` process (RSS from /proc via psutil); {patients:,} patients "
        f"written straight into the state table's changelog; soak: {sizes.soak_rate} DoseTaken/s "
        f"for {sizes.soak_seconds:g} s to random patients, growth measured after the first tenth",
    )
