"""Test helpers that talk to the real broker: produce, consume, and run a Faust app in-process."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from streams.app import Medstream
from streams.kafka_client import client_options
from streams.settings import Settings


async def produce(
    settings: Settings, topic: str, records: Iterable[tuple[bytes | None, bytes]]
) -> None:
    """Send (key, value) records to a topic and wait until the broker acknowledged each."""
    producer = AIOKafkaProducer(acks="all", **client_options(settings))
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def consume(
    settings: Settings, topic: str, count: int, timeout: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read a topic from the beginning until ``count`` records arrived or ``timeout`` passed."""
    consumer = AIOKafkaConsumer(
        topic, auto_offset_reset="earliest", enable_auto_commit=False, **client_options(settings)
    )
    await consumer.start()
    received: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + timeout
        while len(received) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                received.extend(records)
    finally:
        await consumer.stop()
    return received


@contextlib.asynccontextmanager
async def running(medstream: Medstream, timeout: float = 60.0) -> AsyncIterator[Medstream]:
    """Run the app's worker machinery in this event loop until its partitions are assigned."""
    app = medstream.app
    await app.start()
    try:
        deadline = time.monotonic() + timeout
        while not app.consumer.assignment() or app.rebalancing:
            if time.monotonic() > deadline:
                raise TimeoutError("the Faust app got no partitions assigned")
            await asyncio.sleep(0.1)
        yield medstream
    finally:
        # A stop that hangs must fail the test, not freeze the whole suite.
        await asyncio.wait_for(app.stop(), timeout=60)
