"""A table's changelog topic: written in whole producer batches, read back in large fetches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import AppT

from streams.kafka_client import client_options
from streams.producer_batches import Record, aiokafka_producer, send_batches
from streams.settings import Settings
from streams.state.stores import Changes
from streams.topics import ensure_named_topics, topic_configs

# One fetch of a restore: large, so that a million records take tens of round trips, not
# thousands (aiokafka's default is 1 MiB per partition).
RESTORE_PARTITION_FETCH_BYTES = 16 * 1024 * 1024
RESTORE_FETCH_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Chunk:
    """Consecutive changelog records of one partition, as the changes they make (the last
    value of each key), the offset of the last of them, and how many records they were."""

    partition: int
    changes: dict[bytes, bytes | None]
    last_offset: int
    records: int


class Changelog(Protocol):
    """Where a table's changes become durable, and where a worker restores them from."""

    name: str

    async def append(self, changes: Mapping[int, Changes]) -> dict[int, int]:
        """Write the changes of each partition; return, once the broker acknowledged all of
        them, the offset of each partition's last record. Raises if any was not stored (the
        caller writes them all again: the same values twice are harmless)."""

    async def end_offsets(self, partitions: Collection[int]) -> dict[int, int]: ...

    def read(self, start: Mapping[int, int], end: Mapping[int, int]) -> AsyncIterator[Chunk]: ...

    async def close(self) -> None: ...


def changelog_topic(settings: Settings, table: str) -> str:
    """A table's changelog topic: Faust's name for it, so an existing deployment's changelog
    (and its records, JSON keys and values as Faust wrote them) is read as it is."""
    return f"{settings.app_id}-{table}-changelog"


@dataclass
class KafkaChangelog:
    """A changelog on a compacted Kafka topic, written through the app's producer."""

    app: AppT
    settings: Settings
    name: str
    _consumer: AIOKafkaConsumer | None = None
    _declared: bool = False

    async def _declare(self) -> None:
        if not self._declared:
            await ensure_named_topics(
                self.settings,
                {
                    self.name: (
                        self.settings.topic_partitions,
                        topic_configs(self.settings, compacted=True),
                    )
                },
            )
            self._declared = True

    async def append(self, changes: Mapping[int, Changes]) -> dict[int, int]:
        await self._declare()
        producer = aiokafka_producer(self.app)
        handed = []
        for partition, partition_changes in changes.items():
            records = [(None, Record(key, value)) for key, value in partition_changes.items()]
            handed.extend(await send_batches(producer, self.name, partition, records))
        reached: dict[int, int] = {}
        failure: BaseException | None = None
        for each in handed:
            try:
                metadata = await each.acknowledged
            except Exception as error:
                failure = failure or error
                continue
            last = metadata.offset + len(each.items) - 1
            reached[each.partition] = max(last, reached.get(each.partition, -1))
        if failure is not None:
            raise failure
        return reached

    async def _reader(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                **client_options(self.settings),
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_partition_fetch_bytes=RESTORE_PARTITION_FETCH_BYTES,
                fetch_max_bytes=RESTORE_FETCH_BYTES,
            )
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def end_offsets(self, partitions: Collection[int]) -> dict[int, int]:
        await self._declare()
        consumer = await self._reader()
        tps = [TopicPartition(self.name, partition) for partition in partitions]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: int(offset) for tp, offset in ends.items()}

    async def read(self, start: Mapping[int, int], end: Mapping[int, int]) -> AsyncIterator[Chunk]:
        consumer = await self._reader()
        remaining = {
            TopicPartition(self.name, partition)
            for partition, offset in start.items()
            if offset < end[partition]
        }
        consumer.assign(list(remaining))
        for tp in remaining:
            consumer.seek(tp, start[tp.partition])
        while remaining:
            fetched = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, messages in fetched.items():
                if messages:
                    yield Chunk(
                        tp.partition,
                        {message.key: message.value for message in messages},
                        messages[-1].offset,
                        len(messages),
                    )
            for tp in list(remaining):
                # Compaction leaves gaps: the position, not the last offset seen, says done.
                if await consumer.position(tp) >= end[tp.partition]:
                    remaining.discard(tp)
        consumer.assign([])

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None


@dataclass
class MemoryChangelog:
    """A changelog in a list per partition, for tests of the agents without a broker."""

    name: str = "memory-changelog"
    records: dict[int, list[tuple[bytes, bytes | None]]] = field(default_factory=dict)

    async def append(self, changes: Mapping[int, Changes]) -> dict[int, int]:
        reached = {}
        for partition, partition_changes in changes.items():
            log = self.records.setdefault(partition, [])
            log.extend(partition_changes.items())
            reached[partition] = len(log) - 1
        await asyncio.sleep(0)
        return reached

    async def end_offsets(self, partitions: Collection[int]) -> dict[int, int]:
        return {partition: len(self.records.get(partition, ())) for partition in partitions}

    async def read(self, start: Mapping[int, int], end: Mapping[int, int]) -> AsyncIterator[Chunk]:
        for partition, offset in start.items():
            log = self.records.get(partition, [])[offset : end[partition]]
            if log:
                yield Chunk(partition, dict(log), offset + len(log) - 1, len(log))

    async def close(self) -> None:
        return None
