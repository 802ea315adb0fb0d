"""Test helpers that talk to the real broker: produce, consume, and run a Faust app in-process."""

from __future__ import annotations

import time
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from streams.kafka_client import client_options
from streams.settings import Settings
from streams.worker import running

__all__ = ["consume", "produce", "running"]


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
