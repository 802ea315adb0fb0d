"""Test helpers that talk to the real broker: produce, consume, and run a Faust app in-process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.kafka_client import client_options
from streams.settings import Settings
from streams.worker import running

__all__ = ["consume", "produce", "running", "wait_until_committed"]


async def produce(
    settings: Settings,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes]],
    *,
    pipelined: bool = False,
) -> None:
    """Send (key, value) records to a topic and wait until the broker acknowledged each.

    ``pipelined`` hands them all to the producer before waiting (a burst of thousands in a
    second, not one round trip each); the idempotent producer keeps each partition's order.
    """
    producer = AIOKafkaProducer(
        acks="all", enable_idempotence=pipelined, **client_options(settings)
    )
    await producer.start()
    try:
        if pipelined:
            sent = [await producer.send(topic, value, key=key) for key, value in records]
            await asyncio.gather(*sent)
        else:
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


async def wait_until_committed(
    settings: Settings, group_id: str, topics: Iterable[str], timeout: float = 60.0
) -> None:
    """Wait until the group committed every partition of ``topics`` up to its end: a barrier
    for "everything published so far is processed", instead of a sleep that guesses."""
    names = list(topics)
    admin = AIOKafkaAdminClient(**client_options(settings))
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_options(settings))
    await admin.start()
    await consumer.start()
    try:
        # Every test topic has settings.topic_partitions partitions (ensure_topics).
        partitions = [
            TopicPartition(name, partition)
            for name in names
            for partition in range(settings.topic_partitions)
        ]
        ends = await consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout
        while True:
            committed = await admin.list_consumer_group_offsets(group_id, partitions=partitions)
            behind = {
                tp: end
                for tp, end in ends.items()
                if end > 0 and (tp not in committed or committed[tp].offset < end)
            }
            if not behind:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{group_id} did not commit up to the end of {behind}")
            await asyncio.sleep(0.2)
    finally:
        await consumer.stop()
        await admin.close()
