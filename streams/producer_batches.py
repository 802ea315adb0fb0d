"""Records sent as whole aiokafka batches, one partition each: the producer's bulk path."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError
from aiokafka.producer.message_accumulator import BatchBuilder
from faust.types import AppT

# The most one batch holds. aiokafka keeps one batch per partition waiting for the sender, so
# the batch size bounds what one round trip to the broker carries per partition: Faust's
# producer batch (16 KiB) is ~50 reminders, this ~2,900. Below the broker's default
# message.max.bytes (1 MiB), which a batch must not exceed.
BATCH_MAX_BYTES = 1_000_000


@dataclass(frozen=True, slots=True)
class Record:
    """One record to send: key, value (None: a tombstone) and headers."""

    key: bytes
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


Item = TypeVar("Item")


@dataclass(frozen=True)
class Handed(Generic[Item]):
    """Items handed to the producer as one batch of one partition, and the broker's answer to
    come: its RecordMetadata (the batch's first offset), or the send's failure."""

    partition: int
    items: Sequence[Item]
    acknowledged: asyncio.Future[Any]


def aiokafka_producer(app: AppT) -> AIOKafkaProducer:
    """The aiokafka producer under the app's Faust producer (its aiokafka driver's).

    Raises KafkaTimeoutError while the app's producer is not started: the caller retries.
    """
    producer = getattr(app.producer, "_producer", None)
    if not isinstance(producer, AIOKafkaProducer):
        raise KafkaTimeoutError("the app's producer is not started")
    return producer


def partition_of(app: AppT, topic: str, key: bytes) -> int | None:
    """The partition the producer's own partitioner gives ``key`` (murmur2 by default), as its
    ``send`` would; None while the producer or the topic's metadata is not there yet."""
    producer = getattr(app.producer, "_producer", None)
    if not isinstance(producer, AIOKafkaProducer):
        return None
    if not producer.client.cluster.partitions_for_topic(topic):
        return None
    return int(producer._partition(topic, None, key, None, key, None))


def _new_batch(producer: AIOKafkaProducer) -> BatchBuilder:
    # ``producer.create_batch()`` with a larger size: the builder takes its size when built.
    accumulator = producer._message_accumulator
    transactional = producer._txn_manager is not None and (
        producer._txn_manager.transactional_id is not None
    )
    return BatchBuilder(
        min(BATCH_MAX_BYTES, producer._max_request_size),
        accumulator._compression_type,
        is_transactional=transactional,
    )


def _filled(
    producer: AIOKafkaProducer, items: Sequence[tuple[Item, Record]]
) -> Iterator[tuple[list[Item], BatchBuilder]]:
    """The records in batches, in order, each as full as ``BATCH_MAX_BYTES`` allows."""
    batch, chunk = _new_batch(producer), list[Item]()
    for item, record in items:
        headers = list(record.headers)
        appended = batch.append(timestamp=None, key=record.key, value=record.value, headers=headers)
        if appended is None:
            yield chunk, batch
            # An empty batch takes any record, however large.
            batch, chunk = _new_batch(producer), list[Item]()
            batch.append(timestamp=None, key=record.key, value=record.value, headers=headers)
        chunk.append(item)
    if chunk:
        yield chunk, batch


async def send_batches(
    producer: AIOKafkaProducer, topic: str, partition: int, items: Sequence[tuple[Item, Record]]
) -> list[Handed[Item]]:
    """Send one partition's records in order, in as few batches as fit.

    A batch the producer refuses comes back with the failure as its acknowledgement, and the
    batches after it are still sent: the caller sends what failed again.
    """
    loop = asyncio.get_running_loop()
    handed: list[Handed[Item]] = []
    for chunk, batch in _filled(producer, items):
        acknowledged: asyncio.Future[Any]
        try:
            acknowledged = await producer.send_batch(batch, topic, partition=partition)
        except KafkaError as error:
            acknowledged = loop.create_future()
            acknowledged.set_exception(error)
        handed.append(Handed(partition, chunk, acknowledged))
        # The sender task takes this batch while the next one fills.
        await asyncio.sleep(0)
    return handed
