"""Faust's aiokafka transport with the rewind that keeps never-committed partitions lossless."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, ClassVar

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP


class RewindingConsumer(faust_aiokafka.Consumer):
    """Seeks partitions that have no committed offset back to their beginning.

    Faust fetches records it then drops: during recovery, when a rebalance starts mid-batch,
    or when the flow is stopped. It relies on "seek to committed" to fetch them again, but
    aiokafka seeks only partitions with a committed offset above zero. A partition that was
    never committed (a worker killed before its first commit) therefore kept its advanced
    position, and the dropped records, with their reminders and alerts, were lost for good.
    """

    async def perform_seek(self) -> None:
        # Faust seeks while its fetch loop may be mid-batch: a record of the old position
        # handled after the seek would move the read offset past the rewound records, which
        # are then dropped as already read. Stopping the flow ends the batch first; Faust
        # resumes the flow once the seek is done.
        self.stop_flow()
        await asyncio.sleep(0)
        await super().perform_seek()

    async def seek_to_committed(self) -> Mapping[TP, int]:
        committed = await super().seek_to_committed()
        changelogs = self.app.tables.changelog_topics
        # Changelogs are positioned by table recovery, never by committed offsets.
        never_committed = [
            tp for tp, offset in committed.items() if not offset and tp.topic not in changelogs
        ]
        if never_committed:
            await self._thread.seek_to_beginning(*never_committed)
        return committed


class RewindingTransport(faust_aiokafka.Transport):
    """The aiokafka transport, with :class:`RewindingConsumer` as its consumer."""

    Consumer: ClassVar[type[Any]] = RewindingConsumer


def install_transport(app: faust.App) -> None:
    """Make ``app`` consume through :class:`RewindingTransport` (before its consumer exists)."""
    app.transport = RewindingTransport(app.conf.broker_consumer, app)
