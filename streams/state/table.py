"""A changelogged table of JSON values: staged writes, bulk flushes, and bulk restores."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

from streams.state.changelog import Changelog
from streams.state.stores import LocalStore

log = logging.getLogger(__name__)

# A local copy whose partition was last known in sync longer ago than this is thrown away and
# restored whole: the changelog may have dropped the tombstones of keys deleted meanwhile
# (Kafka keeps them delete.retention.ms, 24 hours by default), so a catch-up from its old
# offset would keep those keys for ever.
STALE_AFTER_SECONDS = 12 * 3600


def encode_key(key: str) -> bytes:
    """A key as the changelog and the local store hold it: a JSON string, as Faust wrote it."""
    return json.dumps(key).encode("utf-8")


def decode_key(raw: bytes) -> str:
    key = json.loads(raw)
    return key if isinstance(key, str) else str(key)


def encode_value(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


@dataclass(eq=False)
class _Write:
    """A staged write of one key (value None: a delete)."""

    partition: int
    value: bytes | None


@dataclass
class ChangelogTable:
    """One table: writes are staged, ``flush`` makes them durable in bulk, reads see staged
    writes first.

    ``flush`` writes every staged change to the changelog through the producer's batch path,
    waits for the broker's acknowledgements, then applies them to the local store in one
    write batch per partition together with the changelog offset they reached. A failed
    flush keeps what it had not made durable, for the next one.
    """

    name: str
    store: LocalStore
    changelog: Changelog
    partitions: int
    _staged: dict[bytes, _Write] = field(default_factory=dict)
    _flushing: asyncio.Lock = field(default_factory=asyncio.Lock)

    # --- reads ------------------------------------------------------------------------------

    def get_raw(self, key: str, partition: int | None = None) -> bytes | None:
        """The key's value as stored, staged writes first; ``partition`` when the caller
        knows it, else each partition's copy is asked."""
        raw_key = encode_key(key)
        staged = self._staged.get(raw_key)
        if staged is not None:
            return staged.value
        if partition is not None:
            return self.store.get(partition, raw_key)
        for each in range(self.partitions):
            value = self.store.get(each, raw_key)
            if value is not None:
                return value
        return None

    def get(self, key: str, partition: int | None = None) -> Any | None:
        raw = self.get_raw(key, partition)
        return None if raw is None else json.loads(raw)

    def __getitem__(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get_raw(key) is not None

    def values(self, partitions: Collection[int] | None = None) -> Iterator[Any]:
        return (value for _key, value in self.items(partitions))

    def items(self, partitions: Collection[int] | None = None) -> Iterator[tuple[str, Any]]:
        """Every key and value of these partitions (all of them by default), staged writes in
        place of stored ones, one at a time."""
        wanted = range(self.partitions) if partitions is None else partitions
        staged = {key: write for key, write in self._staged.items() if write.partition in wanted}
        for partition in wanted:
            for raw_key, raw in self.store.items(partition):
                if raw_key in staged:
                    continue
                yield decode_key(raw_key), json.loads(raw)
        for raw_key, write in list(staged.items()):
            if write.value is not None:
                yield decode_key(raw_key), json.loads(write.value)

    def __len__(self) -> int:
        return self.store.count()

    # --- writes -----------------------------------------------------------------------------

    def set(self, key: str, value: Any, partition: int) -> None:
        self._staged[encode_key(key)] = _Write(partition, encode_value(value))

    def delete(self, key: str, partition: int | None = None) -> None:
        raw_key = encode_key(key)
        if partition is None:
            partition = self._partition_holding(raw_key)
            if partition is None:
                return
        self._staged[raw_key] = _Write(partition, None)

    def _partition_holding(self, raw_key: bytes) -> int | None:
        staged = self._staged.get(raw_key)
        if staged is not None:
            return staged.partition
        for each in range(self.partitions):
            if self.store.get(each, raw_key) is not None:
                return each
        return None

    @property
    def has_staged(self) -> bool:
        return bool(self._staged)

    async def flush(self) -> None:
        """Return once every write staged before the call is in the changelog (acknowledged)
        and in the local store.

        One flush at a time: a caller whose writes an earlier flush took waits for it.
        """
        async with self._flushing:
            taken = dict(self._staged)
            if not taken:
                return
            by_partition: dict[int, dict[bytes, bytes | None]] = {}
            for raw_key, write in taken.items():
                by_partition.setdefault(write.partition, {})[raw_key] = write.value
            reached = await self.changelog.append(by_partition)
            for partition, changes in by_partition.items():
                self.store.apply(partition, changes, reached[partition])
            for raw_key, write in taken.items():
                if self._staged.get(raw_key) is write:  # else written again meanwhile
                    del self._staged[raw_key]

    # --- restore ----------------------------------------------------------------------------

    async def restore(self, partitions: Collection[int]) -> int:
        """Bring these partitions' local copies up to their changelog: from the offset each
        copy reached, in large fetches applied as one write batch each. Returns the number of
        changelog records read."""
        if not partitions:
            return 0
        # Not beside a flush: a flush applied while this reads up to the end it learnt first
        # would be overwritten by the older records read after it (and the position set back).
        async with self._flushing:
            return await self._restore(partitions)

    async def _restore(self, partitions: Collection[int]) -> int:
        ends = await self.changelog.end_offsets(partitions)
        start: dict[int, int] = {}
        for partition in partitions:
            position = self.store.position(partition)
            begin = 0 if position is None else position.offset + 1
            stale = position is not None and (
                time.time() - position.synced_at > STALE_AFTER_SECONDS
                # Beyond the end: the changelog is not the one this copy was made from.
                or begin > ends[partition]
            )
            if stale:
                log.info(
                    "table %s partition %d: local copy dropped, restored whole",
                    self.name,
                    partition,
                )
                self.store.wipe(partition)
                begin = 0
            start[partition] = begin
        read = 0
        async for chunk in self.changelog.read(start, ends):
            self.store.apply(chunk.partition, chunk.changes, chunk.last_offset)
            read += chunk.records
        for partition in partitions:
            self.store.mark_synced(partition)
        return read
