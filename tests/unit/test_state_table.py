"""ChangelogTable, checkpoint and Restorer over a changelog in memory: staged, flushed, restored."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from streams.state import table as table_module
from streams.state.changelog import Chunk, MemoryChangelog
from streams.state.checkpoint import Restorer, checkpoint
from streams.state.stores import Changes, LocalStore, MemoryStore, RocksDBStore
from streams.state.table import ChangelogTable, decode_key, encode_key, encode_value

PARTITIONS = 4
MIB = 1024 * 1024


@pytest.fixture(params=["memory", "rocksdb"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    factory = StoreFactory(request.param, tmp_path)
    try:
        yield factory
    finally:
        factory.close()


@dataclass
class StoreFactory:
    """Fresh stores of one backend; closed at the end of the test."""

    kind: str
    root: Path
    made: list[LocalStore] = field(default_factory=list)

    def __call__(self) -> LocalStore:
        store: LocalStore
        if self.kind == "memory":
            store = MemoryStore()
        else:
            path = self.root / f"db-{len(self.made)}"
            store = RocksDBStore(path, block_cache_bytes=4 * MIB, write_buffer_bytes=4 * MIB)
        self.made.append(store)
        return store

    def close(self) -> None:
        for store in self.made:
            store.close()


@dataclass
class SpyChangelog(MemoryChangelog):
    """A MemoryChangelog that remembers each call, can fail appends, and can hold them."""

    appends: list[dict[int, dict[bytes, bytes | None]]] = field(default_factory=list)
    reads: list[dict[int, int]] = field(default_factory=list)
    end_offset_calls: list[list[int]] = field(default_factory=list)
    failures: int = 0
    # Appends wait for ``release`` when it is set up; ``entered`` tells one is waiting.
    release: asyncio.Event | None = None
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    ends_release: asyncio.Event | None = None
    ends_entered: asyncio.Event = field(default_factory=asyncio.Event)

    async def append(self, changes: Mapping[int, Changes]) -> dict[int, int]:
        self.appends.append({p: dict(c) for p, c in changes.items()})
        self.entered.set()
        if self.release is not None:
            await self.release.wait()
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("broker unavailable")
        return await super().append(changes)

    async def end_offsets(self, partitions: Collection[int]) -> dict[int, int]:
        self.end_offset_calls.append(sorted(partitions))
        ends = await super().end_offsets(partitions)
        self.ends_entered.set()
        if self.ends_release is not None:
            await self.ends_release.wait()
        return ends

    async def read(self, start: Mapping[int, int], end: Mapping[int, int]) -> AsyncIterator[Chunk]:
        self.reads.append(dict(start))
        async for chunk in super().read(start, end):
            yield chunk


def make_table(store: LocalStore, changelog: SpyChangelog | None = None) -> ChangelogTable:
    return ChangelogTable("patients", store, changelog or SpyChangelog(), PARTITIONS)


def stored(store: LocalStore, partition: int) -> dict[str, Any]:
    return {decode_key(key): json.loads(value) for key, value in store.items(partition)}


def all_stored(store: LocalStore) -> dict[int, dict[str, Any]]:
    return {p: stored(store, p) for p in range(PARTITIONS) if stored(store, p)}


def logged(changelog: MemoryChangelog, partition: int) -> list[tuple[str, Any]]:
    return [
        (decode_key(key), None if value is None else json.loads(value))
        for key, value in changelog.records.get(partition, [])
    ]


async def settle() -> None:
    """Let every ready task run until it waits on something that has not happened."""
    for _ in range(20):
        await asyncio.sleep(0)


# --- keys and values ----------------------------------------------------------------------------


def test_keys_and_values_are_json_as_faust_wrote_them() -> None:
    assert encode_key("p-1") == b'"p-1"'
    assert decode_key(b'"p-1"') == "p-1"
    assert decode_key(b"17") == "17"
    assert encode_value({"a": [1, 2], "b": None}) == b'{"a":[1,2],"b":null}'
    assert decode_key(encode_key("ünïcode ✓")) == "ünïcode ✓"


# --- staged reads and flush ---------------------------------------------------------------------


async def test_reads_see_staged_writes_before_any_flush(store_factory: StoreFactory) -> None:
    store = store_factory()
    table = make_table(store)
    table.set("p-1", {"n": 1}, 2)
    assert table.get("p-1") == {"n": 1}
    assert table.get("p-1", 2) == {"n": 1}
    assert table.get_raw("p-1") == b'{"n":1}'
    assert table["p-1"] == {"n": 1}
    assert "p-1" in table
    assert table.has_staged
    # Nothing is written anywhere yet.
    assert store.get(2, encode_key("p-1")) is None
    assert isinstance(table.changelog, MemoryChangelog)
    assert table.changelog.records == {}
    assert table.get("nobody") is None
    assert "nobody" not in table
    with pytest.raises(KeyError):
        table["nobody"]


async def test_flush_writes_the_changelog_then_the_store_with_its_offsets(
    store_factory: StoreFactory,
) -> None:
    store = store_factory()
    changelog = SpyChangelog()
    table = make_table(store, changelog)
    table.set("a", 1, 0)
    table.set("b", 2, 0)
    table.set("c", 3, 3)
    await table.flush()
    assert not table.has_staged
    assert logged(changelog, 0) == [("a", 1), ("b", 2)]
    assert logged(changelog, 3) == [("c", 3)]
    assert all_stored(store) == {0: {"a": 1, "b": 2}, 3: {"c": 3}}
    positions = {p: store.position(p) for p in range(PARTITIONS)}
    assert {p: pos.offset for p, pos in positions.items() if pos is not None} == {0: 1, 3: 0}
    # The last value of a key staged twice is written once.
    table.set("a", 10, 0)
    table.set("a", 11, 0)
    await table.flush()
    assert logged(changelog, 0) == [("a", 1), ("b", 2), ("a", 11)]
    position = store.position(0)
    assert position is not None
    assert position.offset == 2
    assert table.get("a") == 11
    assert len(table) == 3


async def test_a_flush_with_nothing_staged_writes_nothing(store_factory: StoreFactory) -> None:
    changelog = SpyChangelog()
    table = make_table(store_factory(), changelog)
    await table.flush()
    assert changelog.appends == []


async def test_a_staged_delete_hides_the_stored_value(store_factory: StoreFactory) -> None:
    store = store_factory()
    changelog = SpyChangelog()
    table = make_table(store, changelog)
    table.set("a", 1, 1)
    await table.flush()
    table.delete("a", 1)
    assert table.get("a") is None
    assert table.get("a", 1) is None
    assert "a" not in table
    # Still in the store until the flush.
    assert stored(store, 1) == {"a": 1}
    await table.flush()
    assert stored(store, 1) == {}
    assert logged(changelog, 1) == [("a", 1), ("a", None)]


async def test_delete_without_a_partition_finds_the_key(store_factory: StoreFactory) -> None:
    store = store_factory()
    changelog = SpyChangelog()
    table = make_table(store, changelog)
    table.set("in-2", "x", 2)
    table.set("in-3", "y", 3)
    await table.flush()
    table.delete("in-2")
    assert table.get("in-2") is None
    await table.flush()
    assert logged(changelog, 2) == [("in-2", "x"), ("in-2", None)]
    assert all_stored(store) == {3: {"in-3": "y"}}
    # A key only staged is deleted in the partition it was staged for.
    table.set("staged-only", 1, 1)
    table.delete("staged-only")
    assert table.get("staged-only") is None
    await table.flush()
    assert logged(changelog, 1) == [("staged-only", None)]
    # A key nobody has: nothing to delete, nothing staged.
    table.delete("nobody")
    assert not table.has_staged


async def test_items_merges_staged_writes(store_factory: StoreFactory) -> None:
    store = store_factory()
    table = make_table(store)
    table.set("kept", 1, 0)
    table.set("overwritten", 1, 0)
    table.set("deleted", 1, 1)
    table.set("other", 1, 3)
    await table.flush()
    table.set("overwritten", 2, 0)
    table.delete("deleted")
    table.set("new", 3, 1)
    table.set("new-elsewhere", 4, 2)
    everything = list(table.items())
    assert len(everything) == len({key for key, _ in everything})
    assert dict(everything) == {
        "kept": 1,
        "overwritten": 2,
        "new": 3,
        "new-elsewhere": 4,
        "other": 1,
    }
    assert dict(table.items([0, 1])) == {"kept": 1, "overwritten": 2, "new": 3}
    assert dict(table.items([2])) == {"new-elsewhere": 4}
    assert sorted(table.values([0])) == [1, 2]
    await table.flush()
    assert dict(table.items()) == dict(everything)


# --- failures and concurrency -------------------------------------------------------------------


async def test_a_failed_append_keeps_the_staged_writes_for_the_next_flush(
    store_factory: StoreFactory,
) -> None:
    store = store_factory()
    changelog = SpyChangelog(failures=1)
    table = make_table(store, changelog)
    table.set("a", 1, 0)
    table.set("b", 2, 1)
    with pytest.raises(RuntimeError, match="broker unavailable"):
        await table.flush()
    assert table.has_staged
    assert table.get("a") == 1
    assert table.get("b") == 2
    assert all_stored(store) == {}
    assert store.position(0) is None
    table.set("c", 3, 1)
    await table.flush()
    assert not table.has_staged
    assert logged(changelog, 0) == [("a", 1)]
    assert logged(changelog, 1) == [("b", 2), ("c", 3)]
    assert all_stored(store) == {0: {"a": 1}, 1: {"b": 2, "c": 3}}


async def test_a_write_during_an_in_flight_flush_is_not_lost(store_factory: StoreFactory) -> None:
    store = store_factory()
    changelog = SpyChangelog(release=asyncio.Event())
    table = make_table(store, changelog)
    table.set("same", "old", 0)
    table.set("taken", 1, 0)
    flushing = asyncio.create_task(table.flush())
    await changelog.entered.wait()
    # While the flush waits for the broker: the same key again, a new key, and a delete.
    table.set("same", "new", 0)
    table.set("later", 2, 1)
    table.delete("taken")
    assert table.get("same") == "new"
    assert changelog.release is not None
    changelog.release.set()
    await flushing
    # The first flush stored what it took, and kept what came after it.
    assert all_stored(store) == {0: {"same": "old", "taken": 1}}
    assert table.has_staged
    assert table.get("same") == "new"
    assert table.get("later") == 2
    assert table.get("taken") is None
    await table.flush()
    assert not table.has_staged
    assert all_stored(store) == {0: {"same": "new"}, 1: {"later": 2}}
    assert logged(changelog, 0) == [("same", "old"), ("taken", 1), ("same", "new"), ("taken", None)]


async def test_concurrent_flush_callers_return_once_their_writes_are_durable(
    store_factory: StoreFactory,
) -> None:
    store = store_factory()
    changelog = SpyChangelog(release=asyncio.Event())
    table = make_table(store, changelog)
    seen_at_return: dict[str, dict[int, dict[str, Any]]] = {}

    async def flush_as(caller: str) -> None:
        await table.flush()
        seen_at_return[caller] = all_stored(store)

    table.set("first", 1, 0)
    first = asyncio.create_task(flush_as("first"))
    await changelog.entered.wait()
    # One caller has a write of its own, one only waits for the write the first flush took.
    table.set("second", 2, 1)
    second = asyncio.create_task(flush_as("second"))
    third = asyncio.create_task(flush_as("third"))
    await settle()
    assert not first.done()
    assert not second.done()
    assert not third.done()
    assert changelog.release is not None
    changelog.release.set()
    await asyncio.gather(first, second, third)
    assert "first" in seen_at_return["first"][0]
    assert seen_at_return["second"] == {0: {"first": 1}, 1: {"second": 2}}
    assert seen_at_return["third"][0] == {"first": 1}
    assert logged(changelog, 0) == [("first", 1)]
    assert logged(changelog, 1) == [("second", 2)]
    assert not table.has_staged


async def test_a_caller_waiting_on_a_failed_flush_writes_everything_again(
    store_factory: StoreFactory,
) -> None:
    store = store_factory()
    changelog = SpyChangelog(release=asyncio.Event(), failures=1)
    table = make_table(store, changelog)
    table.set("first", 1, 0)
    first = asyncio.create_task(table.flush())
    await changelog.entered.wait()
    table.set("second", 2, 0)
    second = asyncio.create_task(table.flush())
    await settle()
    assert changelog.release is not None
    changelog.release.set()
    with pytest.raises(RuntimeError, match="broker unavailable"):
        await first
    await second
    assert stored(store, 0) == {"first": 1, "second": 2}
    assert logged(changelog, 0) == [("first", 1), ("second", 2)]
    assert not table.has_staged


async def test_a_restore_during_an_in_flight_flush_keeps_the_newer_value(
    store_factory: StoreFactory,
) -> None:
    # The restore learns the changelog's end, then the flush writes and applies a newer value:
    # the restore must not put the older one back in the store.
    store = store_factory()
    changelog = SpyChangelog()
    table = make_table(store, changelog)
    table.set("k", "old", 0)
    await table.flush()
    store.wipe(0)  # as after a stale copy: the restore reads the partition from the start
    changelog.ends_release = asyncio.Event()
    restoring = asyncio.create_task(table.restore([0]))
    await changelog.ends_entered.wait()
    table.set("k", "new", 0)
    flushing = asyncio.create_task(table.flush())
    await settle()
    changelog.ends_release.set()
    await asyncio.gather(restoring, flushing)
    assert table.get("k") == "new"
    assert stored(store, 0) == {"k": "new"}
    position = store.position(0)
    assert position is not None
    assert position.offset == 1


# --- restore ------------------------------------------------------------------------------------


async def write_some(table: ChangelogTable, prefix: str, count: int, partitions: int) -> None:
    for n in range(count):
        table.set(f"{prefix}-{n}", {"n": n, "prefix": prefix}, n % partitions)
    await table.flush()


async def test_restore_of_an_empty_store_reads_the_whole_changelog(
    store_factory: StoreFactory,
) -> None:
    changelog = SpyChangelog()
    writer = make_table(store_factory(), changelog)
    await write_some(writer, "a", 20, PARTITIONS)
    writer.delete("a-4")
    writer.set("a-5", "changed", 1)
    await writer.flush()

    reader = make_table(store_factory(), changelog)
    assert await reader.restore([]) == 0
    read = await reader.restore(range(PARTITIONS))
    assert changelog.reads == [dict.fromkeys(range(PARTITIONS), 0)]
    # The records read (for the restored-records metric), not the keys they leave: 22 of 20.
    assert read == 22
    assert all_stored(reader.store) == all_stored(writer.store)
    assert dict(reader.items()) == dict(writer.items())
    for partition in range(PARTITIONS):
        assert _offset(reader.store, partition) == _offset(writer.store, partition)


def _offset(store: LocalStore, partition: int) -> int | None:
    position = store.position(partition)
    return None if position is None else position.offset


async def test_restore_reads_only_what_follows_the_local_position(
    store_factory: StoreFactory,
) -> None:
    changelog = SpyChangelog()
    writer = make_table(store_factory(), changelog)
    await write_some(writer, "a", 12, 2)
    reader = make_table(store_factory(), changelog)
    await reader.restore([0, 1])
    assert [_offset(reader.store, p) for p in (0, 1)] == [5, 5]

    await write_some(writer, "b", 6, 2)
    writer.delete("a-0")
    await writer.flush()
    read = await reader.restore([0, 1])
    assert changelog.reads[-1] == {0: 6, 1: 6}
    assert read == 7  # b-0..b-5 and a-0's tombstone
    assert all_stored(reader.store) == all_stored(writer.store)
    assert [_offset(reader.store, p) for p in (0, 1)] == [9, 8]

    # Up to date: it starts at the end, and reads nothing.
    assert await reader.restore([0, 1]) == 0
    assert changelog.reads[-1] == {0: 10, 1: 9}
    assert all_stored(reader.store) == all_stored(writer.store)


async def test_restore_marks_the_partitions_synced(store_factory: StoreFactory) -> None:
    changelog = SpyChangelog()
    table = make_table(store_factory(), changelog)
    await write_some(table, "a", 4, 2)
    before = table.store.position(0)
    assert before is not None
    await asyncio.sleep(0.01)
    await table.restore([0, 1])
    after = table.store.position(0)
    assert after is not None
    assert after.offset == before.offset
    assert after.synced_at > before.synced_at


async def test_a_stale_copy_is_wiped_and_restored_whole(
    store_factory: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    changelog = SpyChangelog()
    writer = make_table(store_factory(), changelog)
    await write_some(writer, "a", 8, 2)
    reader = make_table(store_factory(), changelog)
    await reader.restore([0, 1])
    # A key whose tombstone the changelog no longer has: only the local copy still holds it.
    ghost = {encode_key("ghost"): encode_value("boo")}
    for partition in (0, 1):
        offset = _offset(reader.store, partition)
        assert offset is not None
        reader.store.apply(partition, ghost, offset)

    # Not stale yet: a catch-up keeps what the copy has.
    await reader.restore([0, 1])
    assert reader.get("ghost", 0) == "boo"

    # Longer than the changelog keeps tombstones since partition 0 was last in sync.
    later = time.time() + table_module.STALE_AFTER_SECONDS + 60
    monkeypatch.setattr(table_module, "time", SimpleNamespace(time=lambda: later))
    read = await reader.restore([0])
    assert changelog.reads[-1] == {0: 0}
    assert read == 4
    assert stored(reader.store, 0) == stored(writer.store, 0)
    assert reader.get("ghost", 0) is None
    assert reader.get("ghost", 1) == "boo"
    assert _offset(reader.store, 0) == _offset(writer.store, 0)


async def test_staleness_follows_stale_after_seconds(
    store_factory: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    changelog = SpyChangelog()
    writer = make_table(store_factory(), changelog)
    await write_some(writer, "a", 3, 1)
    reader = make_table(store_factory(), changelog)
    await reader.restore([0])
    reader.store.apply(0, {encode_key("ghost"): encode_value(1)}, 2)
    await asyncio.sleep(0.01)
    monkeypatch.setattr(table_module, "STALE_AFTER_SECONDS", 0.001)
    await reader.restore([0])
    assert changelog.reads[-1] == {0: 0}
    assert stored(reader.store, 0) == stored(writer.store, 0)


async def test_a_position_beyond_the_changelog_end_wipes_the_copy(
    store_factory: StoreFactory,
) -> None:
    changelog = SpyChangelog()
    writer = make_table(store_factory(), changelog)
    await write_some(writer, "a", 3, 1)
    # A copy made from another changelog (the topic was deleted and made again): it is
    # further than this one's end.
    reader = make_table(store_factory(), changelog)
    reader.store.apply(0, {encode_key("from-elsewhere"): encode_value(1)}, 100)
    reader.store.apply(1, {encode_key("empty-log"): encode_value(1)}, 0)
    read = await reader.restore([0, 1])
    assert changelog.reads[-1] == {0: 0, 1: 0}
    assert read == 3
    assert all_stored(reader.store) == {0: stored(writer.store, 0)}
    assert _offset(reader.store, 0) == 2
    assert reader.store.position(1) is None


async def test_a_copy_exactly_at_the_end_is_kept(store_factory: StoreFactory) -> None:
    changelog = SpyChangelog()
    writer = make_table(store_factory(), changelog)
    await write_some(writer, "a", 3, 1)
    reader = make_table(store_factory(), changelog)
    reader.store.apply(0, {encode_key("mine"): encode_value(1)}, 2)
    assert await reader.restore([0]) == 0
    assert stored(reader.store, 0) == {"mine": 1}


# --- checkpoint ---------------------------------------------------------------------------------


async def test_checkpoint_runs_then_after_every_table_is_durable(
    store_factory: StoreFactory,
) -> None:
    release = asyncio.Event()
    first = make_table(store_factory(), SpyChangelog(release=release))
    second = ChangelogTable("ledger", store_factory(), SpyChangelog(release=release), 2)
    untouched_changelog = SpyChangelog()
    untouched = ChangelogTable("untouched", store_factory(), untouched_changelog, 2)
    first.set("a", 1, 0)
    second.set("b", 2, 1)
    observed: list[dict[str, Any]] = []

    async def then() -> None:
        observed.append(
            {
                "staged": (first.has_staged, second.has_staged),
                "first": stored(first.store, 0),
                "second": stored(second.store, 1),
            }
        )

    running = asyncio.create_task(checkpoint([first, second, untouched], then))
    # Both tables' appends are in flight together.
    for table in (first, second):
        assert isinstance(table.changelog, SpyChangelog)
        await table.changelog.entered.wait()
    await settle()
    assert observed == []
    release.set()
    await running
    assert observed == [{"staged": (False, False), "first": {"a": 1}, "second": {"b": 2}}]
    assert untouched_changelog.appends == []


async def test_checkpoint_with_one_table_or_none(store_factory: StoreFactory) -> None:
    table = make_table(store_factory())
    calls: list[bool] = []

    async def then() -> None:
        calls.append(table.has_staged)

    await checkpoint([table], then)
    table.set("a", 1, 0)
    await checkpoint([table], then)
    await checkpoint([])
    assert calls == [False, False]
    assert stored(table.store, 0) == {"a": 1}


async def test_a_failed_flush_stops_the_checkpoint_before_then(
    store_factory: StoreFactory,
) -> None:
    failing = make_table(store_factory(), SpyChangelog(failures=1))
    fine = make_table(store_factory())
    failing.set("a", 1, 0)
    fine.set("b", 1, 0)
    ran: list[str] = []

    async def then() -> None:
        ran.append("then")

    with pytest.raises(RuntimeError, match="broker unavailable"):
        await checkpoint([failing, fine], then)
    assert ran == []
    assert failing.has_staged
    await checkpoint([failing, fine], then)
    assert ran == ["then"]
    assert stored(failing.store, 0) == {"a": 1}
    assert stored(fine.store, 0) == {"b": 1}


# --- Restorer -----------------------------------------------------------------------------------


@dataclass
class Assignment:
    generation: int | None = 1
    partitions: set[int] = field(default_factory=lambda: {0, 1})


async def test_the_restorer_restores_once_per_generation_and_partitions(
    store_factory: StoreFactory,
) -> None:
    changelog = SpyChangelog()
    writer = make_table(store_factory(), changelog)
    await write_some(writer, "a", 8, PARTITIONS)
    reader = make_table(store_factory(), changelog)
    assignment = Assignment()
    restored: list[int] = []
    restorer = Restorer(
        [reader],
        lambda: assignment.generation,
        lambda: assignment.partitions,
        on_restored=[restored.append],
    )
    assert not restorer.is_ready()
    await restorer.ready()
    assert restorer.is_ready()
    assert changelog.end_offset_calls == [[0, 1]]
    assert restored == [4]
    assert all_stored(reader.store) == {p: stored(writer.store, p) for p in (0, 1)}

    await restorer.ready()
    await restorer.ready()
    assert changelog.end_offset_calls == [[0, 1]]

    assignment.generation = 2
    assert not restorer.is_ready()
    await restorer.ready()
    assert changelog.end_offset_calls == [[0, 1], [0, 1]]
    assert restored == [4, 0]

    assignment.partitions = {1, 2, 3}
    assert not restorer.is_ready()
    await restorer.ready()
    await restorer.ready()
    assert changelog.end_offset_calls == [[0, 1], [0, 1], [1, 2, 3]]
    assert restored == [4, 0, 4]
    assert dict(reader.items()) == dict(writer.items())


async def test_the_restorer_restores_every_table(store_factory: StoreFactory) -> None:
    changelogs = [SpyChangelog(), SpyChangelog()]
    writers = [make_table(store_factory(), changelog) for changelog in changelogs]
    await write_some(writers[0], "a", 4, 2)
    await write_some(writers[1], "b", 6, 2)
    readers = [make_table(store_factory(), changelog) for changelog in changelogs]
    restored: list[int] = []
    restorer = Restorer(readers, lambda: 5, lambda: [0, 1], on_restored=[restored.append])
    await restorer.ready()
    assert restored == [10]
    for reader, writer in zip(readers, writers, strict=True):
        assert dict(reader.items()) == dict(writer.items())


async def test_concurrent_ready_callers_restore_once(store_factory: StoreFactory) -> None:
    changelog = SpyChangelog(ends_release=asyncio.Event())
    writer = make_table(store_factory(), changelog)
    await write_some(writer, "a", 8, 2)
    reader = make_table(store_factory(), changelog)
    restorer = Restorer([reader], lambda: 1, lambda: {0, 1})
    callers = [asyncio.create_task(restorer.ready()) for _ in range(5)]
    await changelog.ends_entered.wait()
    await settle()
    assert not any(caller.done() for caller in callers)
    assert changelog.ends_release is not None
    changelog.ends_release.set()
    await asyncio.gather(*callers)
    assert changelog.end_offset_calls == [[0, 1]]
    assert dict(reader.items()) == dict(writer.items())


async def test_a_failed_restore_is_tried_again(store_factory: StoreFactory) -> None:
    changelog = SpyChangelog()
    writer = make_table(store_factory(), changelog)
    await write_some(writer, "a", 4, 2)
    reader = make_table(store_factory(), changelog)
    restorer = Restorer([reader], lambda: 1, lambda: {0, 1})
    failures = [RuntimeError("broker gone")]
    original = changelog.end_offsets

    async def flaky(partitions: Collection[int]) -> dict[int, int]:
        if failures:
            raise failures.pop()
        return await original(partitions)

    changelog.end_offsets = flaky  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="broker gone"):
        await restorer.ready()
    assert not restorer.is_ready()
    await restorer.ready()
    assert restorer.is_ready()
    assert dict(reader.items()) == dict(writer.items())
