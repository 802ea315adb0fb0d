"""KafkaChangelog on a real broker: bulk appends, and restores that copy the writer exactly."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from faust.types import AppT

from streams.kafka_client import client_options
from streams.producer_batches import Handed, send_batches
from streams.settings import Settings
from streams.state import changelog as changelog_module
from streams.state.changelog import Chunk, KafkaChangelog, changelog_topic
from streams.state.stores import LocalStore, RocksDBStore
from streams.state.table import ChangelogTable, decode_key, encode_key

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PARTITIONS = 4
MIB = 1024 * 1024
# ~500 bytes a record: 5,000 records of one partition fill more than one 1 MB batch.
PADDING = "x" * 450


@dataclass
class Changelogs:
    """Changelogs of one topic, each with its own reader, on one started producer."""

    settings: Settings
    app: AppT
    topic: str
    made: list[KafkaChangelog]

    def __call__(self) -> KafkaChangelog:
        changelog = KafkaChangelog(self.app, self.settings, self.topic)
        self.made.append(changelog)
        return changelog


@pytest.fixture
def four_partitions(settings: Settings) -> Settings:
    return settings.model_copy(update={"topic_partitions": PARTITIONS})


@pytest.fixture
async def changelogs(four_partitions: Settings) -> AsyncIterator[Changelogs]:
    # A real producer, started, where KafkaChangelog looks for the app's: app.producer._producer.
    producer = AIOKafkaProducer(acks="all", **client_options(four_partitions))
    await producer.start()
    app = cast(AppT, SimpleNamespace(producer=SimpleNamespace(_producer=producer)))
    topic = changelog_topic(four_partitions, f"table-{uuid.uuid4().hex[:8]}")
    made = Changelogs(four_partitions, app, topic, [])
    try:
        yield made
    finally:
        for changelog in made.made:
            await changelog.close()
        await producer.stop()


def rocksdb(path: Path) -> RocksDBStore:
    return RocksDBStore(path, block_cache_bytes=8 * MIB, write_buffer_bytes=8 * MIB)


StoreMaker = Callable[[str], RocksDBStore]


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[StoreMaker]:
    """Fresh RocksDB stores in the test's directory, closed at its end."""
    made: list[LocalStore] = []

    def make(name: str) -> RocksDBStore:
        store = rocksdb(tmp_path / name)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def value(n: int, version: int = 0) -> dict[str, Any]:
    return {"n": n, "version": version, "padding": PADDING}


def raw_copy(store: LocalStore) -> dict[int, dict[bytes, bytes]]:
    return {partition: dict(store.items(partition)) for partition in range(PARTITIONS)}


def offsets(store: LocalStore) -> dict[int, int | None]:
    found: dict[int, int | None] = {}
    for partition in range(PARTITIONS):
        position = store.position(partition)
        found[partition] = None if position is None else position.offset
    return found


async def read_all(changelog: KafkaChangelog, start: Mapping[int, int]) -> list[Chunk]:
    ends = await changelog.end_offsets(list(start))
    return [chunk async for chunk in changelog.read(start, ends)]


async def write_table(table: ChangelogTable, keys: range, version: int = 0) -> None:
    for n in keys:
        table.set(f"key-{n}", value(n, version), n % PARTITIONS)
    await table.flush()


async def test_a_bulk_append_returns_each_partitions_last_offset(
    changelogs: Changelogs, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: Counter[int] = Counter()

    async def counted(*args: Any, **kwargs: Any) -> list[Handed[None]]:
        handed: list[Handed[None]] = await send_batches(*args, **kwargs)
        batches.update(each.partition for each in handed)
        return handed

    monkeypatch.setattr(changelog_module, "send_batches", counted)
    changelog = changelogs()
    changes = {
        partition: {
            encode_key(f"p{partition}-{n}"): json.dumps(value(n)).encode() for n in range(5_000)
        }
        for partition in range(PARTITIONS)
    }
    reached = await changelog.append(changes)
    assert reached == dict.fromkeys(range(PARTITIONS), 4_999)
    # Whole batches, several a partition: the offsets add up across them.
    assert set(batches) == set(range(PARTITIONS))
    assert all(2 <= count <= 10 for count in batches.values())
    assert await changelog.end_offsets(range(PARTITIONS)) == dict.fromkeys(range(PARTITIONS), 5_000)
    # A second append continues where the first ended, in the partitions it names only.
    more: dict[int, dict[bytes, bytes | None]] = {
        1: {encode_key(f"more-{n}"): b"1" for n in range(10)},
        3: {b'"x"': None},
    }
    assert await changelog.append(more) == {1: 5_009, 3: 5_000}

    # Every record is there, in order, each in its partition.
    chunks = await read_all(changelog, dict.fromkeys(range(PARTITIONS), 0))
    for partition in range(PARTITIONS):
        mine = [chunk for chunk in chunks if chunk.partition == partition]
        assert [chunk.last_offset for chunk in mine] == sorted(c.last_offset for c in mine)
        read: dict[bytes, bytes | None] = {}
        for chunk in mine:
            read.update(chunk.changes)
        expected: dict[bytes, bytes | None] = dict(changes[partition])
        expected.update(more.get(partition, {}))
        assert read == expected
        assert sum(chunk.records for chunk in mine) == 5_000 + len(more.get(partition, {}))
        assert mine[-1].last_offset == {1: 5_009, 3: 5_000}.get(partition, 4_999)


async def test_a_restored_store_is_the_writers_store_exactly(
    changelogs: Changelogs, stores: StoreMaker
) -> None:
    writer = ChangelogTable("patients", stores("writer"), changelogs(), PARTITIONS)
    await write_table(writer, range(20_000))
    await write_table(writer, range(0, 20_000, 7), version=1)
    for n in range(0, 20_000, 11):
        writer.delete(f"key-{n}")
    await writer.flush()

    reader = ChangelogTable("patients", stores("reader"), changelogs(), PARTITIONS)
    read = await reader.restore(range(PARTITIONS))
    # Every record, overwritten and deleted ones too, though each chunk keeps a key's last.
    assert read == 20_000 + len(range(0, 20_000, 7)) + len(range(0, 20_000, 11))
    # Byte for byte, key for key, and the same offsets reached.
    assert raw_copy(reader.store) == raw_copy(writer.store)
    assert offsets(reader.store) == offsets(writer.store)
    expected_keys = 20_000 - len(range(0, 20_000, 11))
    assert reader.store.count() == expected_keys
    assert len(reader) == len(writer) == expected_keys
    assert reader.get("key-7") == value(7, 1)
    assert reader.get("key-11") is None


async def test_a_restore_from_a_position_reads_only_the_tail(
    changelogs: Changelogs, stores: StoreMaker
) -> None:
    writer = ChangelogTable("patients", stores("writer"), changelogs(), PARTITIONS)
    await write_table(writer, range(8_000))
    reader_log = changelogs()
    reader = ChangelogTable("patients", stores("reader"), reader_log, PARTITIONS)
    assert await reader.restore(range(PARTITIONS)) == 8_000
    middle = offsets(reader.store)
    assert middle == dict.fromkeys(range(PARTITIONS), 1_999)

    await write_table(writer, range(8_000, 8_100))
    writer.delete("key-0")
    await writer.flush()
    # 100 new keys and one tombstone: nothing before the position is read again.
    assert await reader.restore(range(PARTITIONS)) == 101
    assert raw_copy(reader.store) == raw_copy(writer.store)
    assert offsets(reader.store) == {0: 2_025, 1: 2_024, 2: 2_024, 3: 2_024}
    assert await reader.restore(range(PARTITIONS)) == 0

    # Straight from the changelog: from the middle, only the tail comes back.
    tail = await read_all(reader_log, {p: 1_999 + 1 for p in range(PARTITIONS)})
    keys = {decode_key(key) for chunk in tail for key in chunk.changes}
    assert keys == {f"key-{n}" for n in range(8_000, 8_100)} | {"key-0"}


async def test_tombstones_delete_on_restore(changelogs: Changelogs, stores: StoreMaker) -> None:
    writer_log = changelogs()
    writer = ChangelogTable("patients", stores("writer"), writer_log, PARTITIONS)
    await write_table(writer, range(1_000))
    reader = ChangelogTable("patients", stores("reader"), changelogs(), PARTITIONS)
    await reader.restore(range(PARTITIONS))
    assert reader.get("key-10") == value(10)

    for n in range(0, 1_000, 2):
        writer.delete(f"key-{n}")
    await writer.flush()
    chunks = await read_all(writer_log, dict.fromkeys(range(PARTITIONS), 0))
    tombstones = {
        decode_key(key) for chunk in chunks for key, raw in chunk.changes.items() if raw is None
    }
    assert tombstones == {f"key-{n}" for n in range(0, 1_000, 2)}

    # A catch-up deletes them from a copy that had them, and a fresh copy never has them.
    await reader.restore(range(PARTITIONS))
    fresh = ChangelogTable("patients", stores("fresh"), changelogs(), PARTITIONS)
    await fresh.restore(range(PARTITIONS))
    for table in (reader, fresh):
        assert table.get("key-10") is None
        assert table.get("key-11") == value(11)
        assert {key for key, _ in table.items()} == {f"key-{n}" for n in range(1, 1_000, 2)}
        assert raw_copy(table.store) == raw_copy(writer.store)


async def test_a_second_table_has_the_same_items_as_the_writer(
    changelogs: Changelogs, stores: StoreMaker
) -> None:
    writer = ChangelogTable("patients", stores("writer"), changelogs(), PARTITIONS)
    await write_table(writer, range(3_000))
    writer.set("key-5", {"rewritten": True}, 5 % PARTITIONS)
    writer.delete("key-6")
    writer.set("staged-then-flushed", [1, 2, 3], 2)
    await writer.flush()
    reader = ChangelogTable("patients", stores("reader"), changelogs(), PARTITIONS)
    await reader.restore(range(PARTITIONS))
    written = dict(writer.items())
    assert len(written) == 3_000
    assert dict(reader.items()) == written
    for partition in range(PARTITIONS):
        assert dict(reader.items([partition])) == dict(writer.items([partition]))
    assert reader.get("key-5") == {"rewritten": True}
    assert reader.get("staged-then-flushed") == [1, 2, 3]


async def test_a_copy_beyond_the_changelog_end_is_restored_whole(
    changelogs: Changelogs, stores: StoreMaker
) -> None:
    writer = ChangelogTable("patients", stores("writer"), changelogs(), PARTITIONS)
    await write_table(writer, range(400))
    # A copy made from another changelog that had gone further (the topic was made again).
    reader = ChangelogTable("patients", stores("reader"), changelogs(), PARTITIONS)
    for partition in range(PARTITIONS):
        reader.store.apply(partition, {encode_key("from-before"): b"1"}, 1_000_000)
    assert await reader.restore(range(PARTITIONS)) == 400
    assert raw_copy(reader.store) == raw_copy(writer.store)
    assert offsets(reader.store) == offsets(writer.store)


async def test_a_restore_of_a_changelog_nobody_wrote_yet(
    changelogs: Changelogs, stores: StoreMaker
) -> None:
    # The topic does not exist yet: the restore declares it, and finds nothing to read.
    changelog = changelogs()
    table = ChangelogTable("patients", stores("fresh"), changelog, PARTITIONS)
    assert await table.restore(range(PARTITIONS)) == 0
    assert offsets(table.store) == dict.fromkeys(range(PARTITIONS))
    assert await changelog.end_offsets(range(PARTITIONS)) == dict.fromkeys(range(PARTITIONS), 0)


async def test_a_batch_the_broker_refuses_fails_the_flush_and_keeps_the_writes(
    changelogs: Changelogs, stores: StoreMaker
) -> None:
    changelog = changelogs()
    table = ChangelogTable("patients", stores("writer"), changelog, PARTITIONS)
    # Larger than the broker takes in one batch (message.max.bytes, 1 MiB by default).
    table.set("too-large", "x" * 2_000_000, 0)
    table.set("small", 1, 1)
    with pytest.raises(MessageSizeTooLargeError):
        await table.flush()
    assert table.has_staged
    assert table.get("small") == 1
    assert offsets(table.store) == dict.fromkeys(range(PARTITIONS))
    # The next flush writes all of it again: the small one twice, which is harmless.
    table.set("too-large", "small enough now", 0)
    await table.flush()
    assert not table.has_staged
    assert await changelog.end_offsets(range(PARTITIONS)) == {0: 1, 1: 2, 2: 0, 3: 0}
    reader = ChangelogTable("patients", stores("reader"), changelogs(), PARTITIONS)
    await reader.restore(range(PARTITIONS))
    assert dict(reader.items()) == {"too-large": "small enough now", "small": 1}
    assert raw_copy(reader.store) == raw_copy(table.store)
