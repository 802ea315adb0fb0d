"""Faust's aiokafka transport (lossless rewinds, paused topics), with what we need."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP


class MedstreamConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, with two changes: rewinds, and held (paused) topics.

    Rewinds: partitions that have no committed offset are sought back to their beginning.

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

    # --- held topics: `medstream pause` ---------------------------------------------------
    # Pausing here is Faust's own partition pause: records stay in aiokafka's fetch buffer and
    # its position does not move, so resuming loses nothing. Faust resumes every stream
    # partition after each rebalance; a held topic's partitions are left out of that.

    @property
    def held_topics(self) -> frozenset[str]:
        return self.transport.held_topics  # type: ignore[attr-defined,no-any-return]

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        held = self.held_topics
        super().resume_partitions({tp for tp in tps if tp.topic not in held})

    def hold(self, topics: Iterable[str]) -> None:
        """Keep exactly these topics (full names) paused, from now and after rebalances."""
        before, after = self.held_topics, frozenset(topics)
        self.transport.held_topics = after  # type: ignore[attr-defined]
        assigned = self.assignment()
        self.pause_partitions({tp for tp in assigned if tp.topic in after})
        released = {tp for tp in assigned if tp.topic in before - after}
        if released and not self.app.rebalancing:
            # During a rebalance Faust resumes them itself once the tables are recovered.
            super().resume_partitions(released)


class MedstreamTransport(faust_aiokafka.Transport):
    """The aiokafka transport, with :class:`MedstreamConsumer` as its consumer."""

    Consumer: ClassVar[type[Any]] = MedstreamConsumer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held_topics: frozenset[str] = frozenset()


def install_transport(app: faust.App) -> None:
    """Make ``app`` consume through :class:`MedstreamTransport` (before its consumer exists)."""
    app.transport = MedstreamTransport(app.conf.broker_consumer, app)


def hold_until_known(app: faust.App, topics: Iterable[str]) -> None:
    """Hold these topics from the start, until :meth:`MedstreamConsumer.hold` says otherwise.

    So a worker started while a topic is paused processes none of it, not even for a moment.
    """
    transport = app.transport
    assert isinstance(transport, MedstreamTransport)
    transport.held_topics = frozenset(topics)


def tables_recovered(app: faust.App) -> bool:
    """No rebalance under way and table recovery done: until then the tables are incomplete."""
    recovery = app.tables.recovery  # type: ignore[attr-defined]
    return not app.rebalancing and bool(recovery.completed.is_set())


def active_partitions(app: faust.App, topic: str) -> set[int]:
    """The partitions of ``topic`` this worker actively owns (copartitioned topics share them)."""
    return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic}
