"""Faust's aiokafka transport (lossless rewinds, paused topics, a cheaper fetch loop, topic
creation that survives a dead broker)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode import Service

from streams.topics import TOPIC_ADMIN_RETRY_SECONDS, durability_configs, is_unreachable_broker

# The fetch loop lets the event loop run other tasks after this many records handed over.
_YIELD_EVERY_RECORDS = 100


class MedstreamConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, with three changes: rewinds, held (paused) topics, and a
    fetch loop that hands records over without a task per record.

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

    # --- the fetch loop ------------------------------------------------------------------
    # Faust's loop hands each fetched record to the streams through ``wait_first``: four
    # futures and an ``asyncio.wait`` per record, so that a stopped flow interrupts it. That
    # was the largest part of the per-event framework cost, and since it yields to the event
    # loop after every record, an agent never found more than one record waiting, and its
    # batches stayed tiny. This loop calls the handover directly (it waits only when a
    # stream's buffer is full, and a stopped fetcher cancels it) and checks the flow before
    # each record instead.

    async def _drain_messages(self, fetcher: Any) -> None:
        deliver = self.callback
        flow_stopped = self.suspend_flow.is_set
        read_offsets = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        commit_every = self._commit_every
        since_yield = 0

        def stopping() -> bool:
            return bool(self._stopped.is_set() or fetcher._stopped.is_set())

        try:
            while not stopping():
                self.diag.set_flag(CONSUMER_FETCHING)
                records = self.getmany(timeout=1.0)
                # getmany can return at once again and again: let other tasks run.
                await asyncio.sleep(0)
                if self.should_stop:
                    continue
                async for tp, message in records:
                    since_yield += 1
                    if since_yield >= _YIELD_EVERY_RECORDS:
                        since_yield = 0
                        await asyncio.sleep(0)
                    offset = message.offset
                    read = read_offsets[tp]
                    if read is not None and offset < read:
                        continue  # read before a seek moved the position back past it
                    if read and offset - read > 1 and acks_enabled_for(message.topic):
                        # Offsets the broker skipped (compaction, transactions) count as
                        # acknowledged, or the committed offset could never pass them.
                        await self._add_gap(tp, read + 1, offset)
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    if not flow_stopped():
                        # A stopped flow (rebalance, seek) drops the record: the position is
                        # rewound to the committed offset before the flow resumes.
                        await deliver(message)
                    read_offsets[tp] = offset
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if not self.transport.app.should_stop:
                raise
            self.log.info("Broker stopped consumer, shutting down...")
        except asyncio.CancelledError:
            if not self.transport.app.should_stop:
                raise
            self.log.info("Consumer shutting down for user cancel.")
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

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

    async def _create_topic(
        self,
        owner: Service,
        client: Any,
        topic: str,
        partitions: int,
        replication: int,
        **kwargs: Any,
    ) -> None:
        """Faust's creation of its own topics (the leader topic, the changelogs), with
        medstream's durability configs, tried again while a broker is unreachable.

        Faust asks the first broker of the metadata, and a broker killed a moment ago stays
        there until the controller fences it: a worker starting then exited at once.
        """
        config = {**durability_configs(replication), **(kwargs.pop("config", None) or {})}
        deadline = time.monotonic() + TOPIC_ADMIN_RETRY_SECONDS
        while True:
            try:
                await super()._create_topic(
                    owner, client, topic, partitions, replication, config=config, **kwargs
                )
                return
            except Exception as error:
                if not is_unreachable_broker(error) or time.monotonic() > deadline:
                    raise
                owner.log.warning("Creating topic %r: a broker is unreachable; trying again", topic)
                await client.force_metadata_update()
                await asyncio.sleep(0.5)


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
