"""Both local stores, in memory and in RocksDB, keep each partition's bytes and position alike."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from streams.state.stores import (
    MAX_PARTITIONS,
    LocalStore,
    MemoryStore,
    RocksDBStore,
    open_store,
)

MIB = 1024 * 1024


def rocksdb(path: Path) -> RocksDBStore:
    return RocksDBStore(path, block_cache_bytes=8 * MIB, write_buffer_bytes=4 * MIB)


@pytest.fixture(params=["memory", "rocksdb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalStore]:
    made: LocalStore = MemoryStore() if request.param == "memory" else rocksdb(tmp_path / "db")
    try:
        yield made
    finally:
        made.close()


def content(store: LocalStore, partition: int) -> dict[bytes, bytes]:
    return dict(store.items(partition))


class FailingChanges(Mapping[bytes, bytes | None]):
    """Changes whose iteration breaks after the first ones: a batch that cannot be built."""

    def __init__(self, before: dict[bytes, bytes | None]) -> None:
        self._before = before

    def __getitem__(self, key: bytes) -> bytes | None:
        return self._before[key]

    def __len__(self) -> int:
        return len(self._before) + 1

    def __iter__(self) -> Iterator[bytes]:
        yield from self._before
        raise RuntimeError("the batch broke half way")


def test_a_new_store_is_empty(store: LocalStore) -> None:
    assert store.get(0, b"k") is None
    assert list(store.items(0)) == []
    assert store.position(0) is None
    assert store.count() == 0


def test_apply_writes_values_and_the_offset(store: LocalStore) -> None:
    before = time.time()
    store.apply(0, {b"a": b"1", b"b": b"2"}, 7)
    assert store.get(0, b"a") == b"1"
    assert store.get(0, b"b") == b"2"
    assert isinstance(store.get(0, b"a"), bytes)
    position = store.position(0)
    assert position is not None
    assert position.offset == 7
    assert before <= position.synced_at <= time.time()
    assert content(store, 0) == {b"a": b"1", b"b": b"2"}


def test_a_later_apply_overwrites_and_none_deletes(store: LocalStore) -> None:
    store.apply(0, {b"a": b"1", b"b": b"2", b"c": b"3"}, 2)
    store.apply(0, {b"a": b"10", b"b": None, b"missing": None}, 5)
    assert store.get(0, b"a") == b"10"
    assert store.get(0, b"b") is None
    assert store.get(0, b"missing") is None
    assert content(store, 0) == {b"a": b"10", b"c": b"3"}
    position = store.position(0)
    assert position is not None
    assert position.offset == 5


def test_an_empty_apply_still_records_the_offset(store: LocalStore) -> None:
    store.apply(3, {}, 41)
    position = store.position(3)
    assert position is not None
    assert position.offset == 41
    assert content(store, 3) == {}


def test_partitions_are_isolated(store: LocalStore) -> None:
    store.apply(0, {b"k": b"zero", b"only-0": b"x"}, 1)
    store.apply(1, {b"k": b"one"}, 9)
    store.apply(2, {b"k": b"two"}, 4)
    assert store.get(0, b"k") == b"zero"
    assert store.get(1, b"k") == b"one"
    assert store.get(2, b"k") == b"two"
    assert store.get(1, b"only-0") is None
    assert content(store, 0) == {b"k": b"zero", b"only-0": b"x"}
    assert content(store, 1) == {b"k": b"one"}
    assert content(store, 2) == {b"k": b"two"}
    assert content(store, 5) == {}
    positions = {p: store.position(p) for p in range(4)}
    assert {p: pos.offset for p, pos in positions.items() if pos is not None} == {0: 1, 1: 9, 2: 4}
    # A delete in one partition leaves the same key of another alone.
    store.apply(1, {b"k": None}, 10)
    assert store.get(0, b"k") == b"zero"
    assert store.get(1, b"k") is None


def test_items_of_a_partition_are_its_keys_in_order_and_nothing_else(store: LocalStore) -> None:
    # Keys that sort next to the partition prefix boundaries, and the empty key.
    keys = [b"", b"\x00", b"\xff", b"\xff\xff", b"\xff\xff\xff", b"a", b"\x00\x01"]
    store.apply(1, {key: b"v" + key for key in keys}, 0)
    store.apply(0, {b"\xff\xff": b"zero"}, 0)
    store.apply(2, {b"": b"two"}, 0)
    items = list(store.items(1))
    assert dict(items) == {key: b"v" + key for key in keys}
    assert len(items) == len(keys)
    assert content(store, 0) == {b"\xff\xff": b"zero"}
    assert content(store, 2) == {b"": b"two"}


def test_the_highest_partitions_do_not_collide_with_positions(store: LocalStore) -> None:
    last = MAX_PARTITIONS - 1
    store.apply(last, {b"k": b"v"}, 3)
    store.apply(0, {b"k": b"v0"}, 1)
    assert content(store, last) == {b"k": b"v"}
    position = store.position(last)
    assert position is not None
    assert position.offset == 3
    store.wipe(last)
    assert content(store, last) == {}
    assert store.position(last) is None
    assert content(store, 0) == {b"k": b"v0"}


@pytest.mark.parametrize("partition", [-1, MAX_PARTITIONS, MAX_PARTITIONS + 1])
def test_rocksdb_refuses_partitions_out_of_range(tmp_path: Path, partition: int) -> None:
    store = rocksdb(tmp_path / "db")
    try:
        with pytest.raises(ValueError, match="out of range"):
            store.apply(partition, {b"k": b"v"}, 0)
        with pytest.raises(ValueError, match="out of range"):
            store.get(partition, b"k")
    finally:
        store.close()


def test_mark_synced_moves_only_the_time(store: LocalStore) -> None:
    store.apply(0, {b"a": b"1"}, 12)
    first = store.position(0)
    assert first is not None
    time.sleep(0.01)
    store.mark_synced(0)
    second = store.position(0)
    assert second is not None
    assert second.offset == 12
    assert second.synced_at > first.synced_at
    assert content(store, 0) == {b"a": b"1"}


def test_mark_synced_without_a_position_does_nothing(store: LocalStore) -> None:
    store.mark_synced(4)
    assert store.position(4) is None


def test_wipe_forgets_one_partition_only(store: LocalStore) -> None:
    for partition in range(3):
        store.apply(partition, {b"a": b"%d" % partition, b"b": b"x"}, partition + 10)
    store.wipe(1)
    assert content(store, 1) == {}
    assert store.get(1, b"a") is None
    assert store.position(1) is None
    for partition in (0, 2):
        assert content(store, partition) == {b"a": b"%d" % partition, b"b": b"x"}
        position = store.position(partition)
        assert position is not None
        assert position.offset == partition + 10
    assert store.count() == 4
    # A wiped partition is written again from scratch.
    store.apply(1, {b"c": b"new"}, 0)
    assert content(store, 1) == {b"c": b"new"}


def test_wipe_of_an_unknown_partition_is_harmless(store: LocalStore) -> None:
    store.apply(0, {b"a": b"1"}, 0)
    store.wipe(7)
    assert content(store, 0) == {b"a": b"1"}


@pytest.mark.parametrize("counted_early", [True, False], ids=["counted-empty", "counted-late"])
def test_count_is_the_number_of_keys(store: LocalStore, counted_early: bool) -> None:
    if counted_early:
        assert store.count() == 0
    store.apply(0, {b"a": b"1", b"b": b"2"}, 0)
    store.apply(1, {b"a": b"1"}, 0)
    assert store.count() == 3
    # Overwrites, and the position written again with every apply, add no keys.
    for offset in range(1, 50):
        store.apply(0, {b"a": b"%d" % offset}, offset)
    assert store.count() == 3
    store.apply(0, {b"b": None, b"never": None}, 50)
    assert store.count() == 2
    store.apply(1, {b"c": b"3", b"d": b"4"}, 1)
    assert store.count() == 4
    store.wipe(1)
    assert store.count() == 1
    store.apply(2, {b"x": b"1"}, 0)
    assert store.count() == 2


def test_apply_is_all_or_nothing(store: LocalStore) -> None:
    store.apply(0, {b"a": b"old", b"b": b"old"}, 3)
    with pytest.raises(RuntimeError, match="half way"):
        store.apply(0, FailingChanges({b"a": b"new", b"c": b"new"}), 4)
    # Neither the values nor the position moved.
    assert content(store, 0) == {b"a": b"old", b"b": b"old"}
    position = store.position(0)
    assert position is not None
    assert position.offset == 3
    assert store.count() == 2


def test_items_is_a_snapshot_that_survives_writes(store: LocalStore) -> None:
    store.apply(0, {b"a": b"1", b"b": b"2", b"c": b"3"}, 0)
    seen = []
    for key, value in store.items(0):
        seen.append((key, value))
        store.apply(0, {b"zz": b"late", key: None}, 1)
    assert sorted(seen) == [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]
    assert content(store, 0) == {b"zz": b"late"}


def test_a_reopened_rocksdb_store_keeps_values_and_positions(tmp_path: Path) -> None:
    path = tmp_path / "db"
    store = rocksdb(path)
    store.apply(0, {b"a": b"1", b"b": b"2"}, 5)
    store.apply(1, {b"a": b"one"}, 8)
    store.apply(0, {b"b": None}, 6)
    store.apply(2, {b"gone": b"x"}, 1)
    store.wipe(2)
    written = {p: store.position(p) for p in range(3)}
    store.close()

    again = rocksdb(path)
    try:
        assert content(again, 0) == {b"a": b"1"}
        assert content(again, 1) == {b"a": b"one"}
        assert content(again, 2) == {}
        assert {p: again.position(p) for p in range(3)} == written
        assert again.count() == 2
        again.apply(0, {b"c": b"3"}, 7)
        assert again.count() == 3
    finally:
        again.close()


def test_a_reopened_rocksdb_store_keeps_many_keys(tmp_path: Path) -> None:
    # Enough to leave the memtable: the values come back from SST files.
    path = tmp_path / "db"
    store = rocksdb(path)
    value = b"v" * 200
    for chunk in range(10):
        store.apply(
            chunk % 2, {b"key-%06d" % (chunk * 5_000 + n): value for n in range(5_000)}, chunk
        )
    store.close()
    again = rocksdb(path)
    try:
        assert again.count() == 50_000
        assert len(content(again, 0)) == 25_000
        assert len(content(again, 1)) == 25_000
        assert again.get(1, b"key-%06d" % 49_999) == value
    finally:
        again.close()


@pytest.mark.parametrize(
    ("url", "kind"),
    [("memory://", MemoryStore), ("rocksdb://", RocksDBStore)],
)
def test_open_store_picks_the_backend(
    tmp_path: Path, url: str, kind: Callable[..., LocalStore]
) -> None:
    store = open_store(url, tmp_path / "db", block_cache_bytes=MIB, write_buffer_bytes=MIB)
    try:
        assert isinstance(store, kind)  # type: ignore[arg-type]
    finally:
        store.close()


def test_open_store_refuses_other_urls(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="MEDSTREAM_STORE_URL"):
        open_store("redis://", tmp_path / "db", block_cache_bytes=MIB, write_buffer_bytes=MIB)


def test_a_second_rocksdb_store_on_the_same_directory_takes_it_over(tmp_path: Path) -> None:
    # RocksDB lets one handle open a directory: a restarted app's store closes the old one's.
    path = tmp_path / "db"
    first = rocksdb(path)
    first.apply(0, {b"a": b"1"}, 3)
    second = rocksdb(path)
    try:
        assert content(second, 0) == {b"a": b"1"}
        position = second.position(0)
        assert position is not None
        assert position.offset == 3
        second.apply(0, {b"b": b"2"}, 4)
        assert second.count() == 2
    finally:
        second.close()
        first.close()


def test_a_rocksdb_table_directory_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    tables = tmp_path / "medstream-tables"
    tables.mkdir(mode=0o755)  # as an earlier version, or a permissive umask, left it
    store = RocksDBStore(
        tables / "state-by-patient", block_cache_bytes=1 << 20, write_buffer_bytes=1 << 20
    )
    store.apply(0, {b"k": b"v"}, 0)
    assert store.get(0, b"k") == b"v"
    for directory in (tables, tables / "state-by-patient"):
        assert directory.stat().st_mode & 0o777 == 0o700, directory
    store.close()
