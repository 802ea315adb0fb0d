"""The local copy of a changelogged table: raw bytes per partition, in RocksDB or in memory."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

# A change to apply: a key's new value, or None to delete it.
Changes = Mapping[bytes, bytes | None]


@dataclass(frozen=True)
class Position:
    """How far a partition's local copy has applied its changelog, and when it last knew it
    was up to date (a copy left alone longer than the changelog keeps tombstones is stale)."""

    offset: int
    synced_at: float


class LocalStore(Protocol):
    """One table's local copy: every partition's keys and values as raw bytes, and the
    changelog offset each partition has reached, written together in one atomic batch."""

    def get(self, partition: int, key: bytes) -> bytes | None: ...

    def items(self, partition: int) -> Iterator[tuple[bytes, bytes]]: ...

    def count(self) -> int: ...

    def position(self, partition: int) -> Position | None: ...

    def apply(self, partition: int, changes: Changes, offset: int) -> None:
        """Apply ``changes`` and record ``offset`` as reached, all or nothing."""

    def mark_synced(self, partition: int) -> None:
        """The partition's copy is known to match its changelog now."""

    def wipe(self, partition: int) -> None:
        """Forget the partition: its keys and its position."""

    def close(self) -> None: ...


class MemoryStore:
    """A LocalStore in dictionaries: lost with the process, restored from the changelog."""

    def __init__(self) -> None:
        self._data: dict[int, dict[bytes, bytes]] = {}
        self._positions: dict[int, Position] = {}

    def get(self, partition: int, key: bytes) -> bytes | None:
        data = self._data.get(partition)
        return None if data is None else data.get(key)

    def items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        yield from list(self._data.get(partition, {}).items())

    def count(self) -> int:
        return sum(len(data) for data in self._data.values())

    def position(self, partition: int) -> Position | None:
        return self._positions.get(partition)

    def apply(self, partition: int, changes: Changes, offset: int) -> None:
        # Read every change before touching the data: all or nothing, as RocksDB's batch.
        pending = list(changes.items())
        data = self._data.setdefault(partition, {})
        for key, value in pending:
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        self._positions[partition] = Position(offset, time.time())

    def mark_synced(self, partition: int) -> None:
        position = self._positions.get(partition)
        if position is not None:
            self._positions[partition] = Position(position.offset, time.time())

    def wipe(self, partition: int) -> None:
        self._data.pop(partition, None)
        self._positions.pop(partition, None)

    def close(self) -> None:
        return None


# Keys are stored as a two-byte partition prefix and the table's key; the prefix 0xFFFF holds
# each partition's Position. Partitions are capped below it (Kafka's topics rarely have more
# than a few hundred).
_POSITIONS = b"\xff\xff"
MAX_PARTITIONS = 0xFFFF


def _prefix(partition: int) -> bytes:
    if not 0 <= partition < MAX_PARTITIONS:
        raise ValueError(f"partition {partition} out of range")
    return partition.to_bytes(2, "big")


class RocksDBStore:
    """A LocalStore in one RocksDB database (rocksdict, raw mode) per table.

    One database, not one per partition as Faust keeps: a key's partition is not always known
    to its reader (the notifier reads a patient's contact by patient id), and one database
    answers that with a prefix per partition and its bloom filters. Each ``apply`` is one
    RocksDB write batch: a partition's values and its position change together or not at all.
    """

    def __init__(self, path: Path, *, block_cache_bytes: int, write_buffer_bytes: int) -> None:
        self.path = path
        self._block_cache_bytes = block_cache_bytes
        self._write_buffer_bytes = write_buffer_bytes
        self._opened: Any = None
        # The number of keys, once counted; kept up to date by apply and wipe.
        self._count: int | None = None

    @property
    def _db(self) -> Any:
        # Opened at first use, not when the app is built: a process that builds a second app
        # on the same directory (a restart in the tests) has stopped the first one by then.
        if self._opened is None:
            import rocksdict

            earlier = _OPEN.pop(self.path, None)
            if earlier is not None:
                earlier.close()
            make_private(self.path.parent)
            make_private(self.path)
            options = rocksdict.Options(raw_mode=True)
            options.create_if_missing(True)
            options.set_write_buffer_size(self._write_buffer_bytes)
            options.set_max_write_buffer_number(2)
            table = rocksdict.BlockBasedOptions()
            table.set_bloom_filter(10, False)
            table.set_block_cache(rocksdict.Cache(self._block_cache_bytes))
            options.set_block_based_table_factory(table)
            self.path.mkdir(parents=True, exist_ok=True)
            self._opened = rocksdict.Rdict(str(self.path), options)
            _OPEN[self.path] = self
        return self._opened

    def get(self, partition: int, key: bytes) -> bytes | None:
        value = self._db.get(_prefix(partition) + key)
        return None if value is None else bytes(value)

    def items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        prefix = _prefix(partition)
        cursor = self._db.iter()
        cursor.seek(prefix)
        while cursor.valid():
            stored = cursor.key()
            if not stored.startswith(prefix):
                return
            yield stored[2:], cursor.value()
            cursor.next()

    def count(self) -> int:
        # Counted once, then kept by apply and wipe. Not RocksDB's estimate-num-keys: it counts
        # every overwrite still in the memtable, and each apply writes the position again.
        if self._count is None:
            cursor = self._db.iter()
            cursor.seek_to_first()
            counted = 0
            while cursor.valid() and not cursor.key().startswith(_POSITIONS):
                counted += 1
                cursor.next()
            self._count = counted
        return self._count

    def position(self, partition: int) -> Position | None:
        value = self._db.get(_POSITIONS + _prefix(partition))
        return None if value is None else _load_position(value)

    def apply(self, partition: int, changes: Changes, offset: int) -> None:
        prefix = _prefix(partition)
        pending = list(changes.items())
        batch = _write_batch()
        for key, value in pending:
            if value is None:
                batch.delete(prefix + key)
            else:
                batch.put(prefix + key, value)
        batch.put(_POSITIONS + prefix, _dump_position(Position(offset, time.time())))
        added = 0
        if self._count is not None:
            before = self._db.get([prefix + key for key, _ in pending])
            added = sum(
                (value is not None) - (old is not None)
                for (_, value), old in zip(pending, before, strict=True)
            )
        self._db.write(batch)
        if self._count is not None:
            self._count += added

    def mark_synced(self, partition: int) -> None:
        position = self.position(partition)
        if position is not None:
            self._db.put(
                _POSITIONS + _prefix(partition),
                _dump_position(Position(position.offset, time.time())),
            )

    def wipe(self, partition: int) -> None:
        prefix = _prefix(partition)
        batch = _write_batch()
        batch.delete_range(prefix, (partition + 1).to_bytes(2, "big"))
        batch.delete(_POSITIONS + prefix)
        removed = 0 if self._count is None else sum(1 for _ in self.items(partition))
        self._db.write(batch)
        if self._count is not None:
            self._count -= removed

    def close(self) -> None:
        if self._opened is not None:
            self._opened.close()
            self._opened = None
            self._count = None
            if _OPEN.get(self.path) is self:
                del _OPEN[self.path]


# The RocksDB stores this process has open, by directory: RocksDB allows one at a time.
_OPEN: dict[Path, RocksDBStore] = {}


def _write_batch() -> Any:
    import rocksdict

    return rocksdict.WriteBatch(raw_mode=True)


def _dump_position(position: Position) -> bytes:
    return json.dumps({"offset": position.offset, "synced_at": position.synced_at}).encode()


def _load_position(value: bytes) -> Position:
    loaded = json.loads(value)
    return Position(int(loaded["offset"]), float(loaded["synced_at"]))


# The tables hold patient data: their directories are the worker user's alone, whatever the
# umask (RocksDB's files themselves get the umask's modes; the directory is what guards them).
PRIVATE_DIR_MODE = 0o700


def make_private(path: Path) -> None:
    """Create ``path`` (and missing parents) readable by its owner only, or tighten it."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    if path.stat().st_mode & 0o777 != PRIVATE_DIR_MODE:
        path.chmod(PRIVATE_DIR_MODE)


def open_store(
    url: str, path: Path, *, block_cache_bytes: int, write_buffer_bytes: int
) -> LocalStore:
    """The store ``MEDSTREAM_STORE_URL`` names: 'rocksdb://' (in ``path``) or 'memory://'."""
    if url.startswith("memory:"):
        return MemoryStore()
    if url.startswith("rocksdb:"):
        return RocksDBStore(
            path, block_cache_bytes=block_cache_bytes, write_buffer_bytes=write_buffer_bytes
        )
    raise ValueError("MEDSTREAM_STORE_URL must be 'rocksdb://' or 'memory://'")
