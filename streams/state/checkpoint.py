"""The one order in which a batch's state, outputs and input offsets become durable.

Every agent ends its batch here:

1. its handlers staged the batch's state changes in its tables (``ChangelogTable.set``);
2. the tables write them to their changelogs in bulk and wait for the acknowledgements;
3. the tables apply them to the local store, one write batch per partition, with the
   changelog offset they reached;
4. the outputs are sent (and acknowledged), or the deliveries started;
5. the caller returns, and only then does the intake let Faust acknowledge the inputs.

So nobody sees an alert whose state is not durable, and no offset passes an event whose
effects are not. An output that must survive a crash between steps 2 and 4 is staged with the
state (a patient's outbox, the notifier's in-flight marks) and cleared by a later checkpoint.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field

from streams.state.table import ChangelogTable


async def _nothing() -> None:
    return None


async def checkpoint(
    tables: Sequence[ChangelogTable],
    then: Callable[[], Awaitable[None]] = _nothing,
) -> None:
    """Steps 2 to 4: flush ``tables`` (together), then run ``then`` (send the outputs)."""
    staged = [table for table in tables if table.has_staged]
    if len(staged) == 1:
        await staged[0].flush()
    elif staged:
        await asyncio.gather(*(table.flush() for table in staged))
    await then()


@dataclass
class Restorer:
    """Restores the worker's tables for each new assignment before anything reads them.

    Every agent and timer that reads state awaits ``ready`` first; the first of them after a
    rebalance restores the active partitions of every table, the others wait for it.
    """

    tables: Sequence[ChangelogTable]
    generation: Callable[[], int | None]
    active_partitions: Callable[[], Collection[int]]
    on_restored: list[Callable[[int], None]] = field(default_factory=list)
    _restored_generation: int | None = None
    _restored_partitions: frozenset[int] = frozenset()
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def is_ready(self) -> bool:
        """The current assignment's partitions are restored."""
        return self._restored_generation == self.generation() and self._restored_partitions == (
            frozenset(self.active_partitions())
        )

    async def ready(self) -> None:
        if self.is_ready():
            return
        async with self._lock:
            generation, partitions = self.generation(), frozenset(self.active_partitions())
            if (generation, partitions) == (self._restored_generation, self._restored_partitions):
                return
            # Every active partition: one this worker kept may have been another's in between
            # (a generation it never saw); one that stayed costs only its end offset.
            read = 0
            for table in self.tables:
                read += await table.restore(sorted(partitions))
            self._restored_generation, self._restored_partitions = generation, partitions
            for listener in self.on_restored:
                listener(read)
