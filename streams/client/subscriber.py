"""A typed subscriber of medstream's alerts, for downstream Python services."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Self, cast

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from streams.acls import downstream_group
from streams.backoff import delays
from streams.client.ids import DEFAULT_DEDUP_WINDOW, RecentIds
from streams.contracts.codecs import ContractError, EventDecoder, SchemaNotCachedError
from streams.contracts.models import (
    DoseMissed,
    InteractionWarning,
    NotificationOutcome,
    RefillAlert,
    ReminderDue,
)
from streams.contracts.registry import SchemaRegistry
from streams.contracts.schemas import default_catalog
from streams.kafka_client import client_options
from streams.settings import Settings
from streams.topics import ALERT_TOPICS, DOWNSTREAM_TOPICS, NOTIFICATIONS, TopicSpec

log = logging.getLogger(__name__)

Alert = ReminderDue | DoseMissed | RefillAlert | InteractionWarning | NotificationOutcome
SUBSCRIBABLE_TOPICS: dict[str, TopicSpec] = {spec.base_name: spec for spec in DOWNSTREAM_TOPICS}
Handler = Callable[[Alert], Awaitable[object] | object]


@dataclass(frozen=True)
class Undecodable:
    """A record that is no event of its topic: where it is and why (never its value)."""

    topic: str
    partition: int
    offset: int
    error_type: str
    reason: str


def _log_undecodable(item: Undecodable) -> None:
    log.warning(
        "skipped an undecodable record: topic=%s partition=%s offset=%s error_type=%s reason=%s",
        item.topic,
        item.partition,
        item.offset,
        item.error_type,
        item.reason,
    )


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, subscriber: Subscriber) -> None:
        self.subscriber = subscriber

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        await self.subscriber._partitions_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        return None


class Subscriber:
    """Typed alerts from medstream's output topics, in a consumer group, at least once.

    ``async with Subscriber(settings) as sub: async for alert in sub: ...`` yields
    ReminderDue, DoseMissed, RefillAlert, InteractionWarning (and NotificationOutcome with
    ``notifications=True``) models, decoded from JSON, Avro single-object or Confluent framing.

    Commits: the offset of a yielded alert is committed when the next one is requested (the
    loop body returned), or when the ``async with`` block exits without an exception. If the
    body raises, that alert stays uncommitted and the group gets it again after a restart.
    ``run(handler)`` does the same with a handler. Duplicates (an event_id among the last
    ``dedup_window`` ids this instance yielded) and undecodable records are skipped and
    committed; an undecodable record is reported to ``on_undecodable`` (default: a log line
    without the record's value).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        topics: Iterable[str] | None = None,
        notifications: bool = False,
        group_id: str | None = None,
        dedup_window: int = DEFAULT_DEDUP_WINDOW,
        on_undecodable: Callable[[Undecodable], None] | None = None,
        idle_timeout: float | None = None,
        auto_offset_reset: str = "earliest",
    ) -> None:
        if topics is None:
            specs = list(ALERT_TOPICS) + ([NOTIFICATIONS] if notifications else [])
        else:
            unknown = [name for name in topics if name not in SUBSCRIBABLE_TOPICS]
            if unknown:
                raise ValueError(
                    f"topics: {', '.join(unknown)} is none of {', '.join(SUBSCRIBABLE_TOPICS)}"
                )
            specs = [SUBSCRIBABLE_TOPICS[name] for name in topics]
            if notifications and NOTIFICATIONS not in specs:
                specs.append(NOTIFICATIONS)
        if not specs:
            raise ValueError("topics: name at least one topic")
        self.settings = settings
        self.group_id = group_id or downstream_group(settings)
        self.topics = [settings.topic_name(spec.base_name) for spec in specs]
        self._allowed = {
            settings.topic_name(spec.base_name): frozenset(spec.event_types) for spec in specs
        }
        self.idle_timeout = idle_timeout
        self.auto_offset_reset = auto_offset_reset
        self.on_undecodable = on_undecodable or _log_undecodable
        self.registry = (
            SchemaRegistry(settings.schema_registry_url, settings.schema_registry_timeout)
            if settings.schema_registry_url
            else None
        )
        self.decoder = EventDecoder(default_catalog(), self.registry)
        self.seen = RecentIds(dedup_window)
        self.duplicates = 0
        self.undecodable = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._buffer: deque[ConsumerRecord[bytes, bytes]] = deque()
        # The record last yielded, not yet committed; the next offsets of skipped records.
        self._in_flight: ConsumerRecord[bytes, bytes] | None = None
        self._pending: dict[TopicPartition, int] = {}

    # --- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        if self._consumer is not None:
            return
        consumer = AIOKafkaConsumer(
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset=self.auto_offset_reset,
            **client_options(self.settings),
        )
        consumer.subscribe(self.topics, listener=_Rebalance(self))
        await consumer.start()
        self._consumer = consumer

    async def stop(self, *, commit_in_flight: bool = True) -> None:
        """Commit what was handled (the alert last yielded too, unless told not to) and leave
        the group."""
        consumer = self._consumer
        if consumer is None:
            return
        try:
            if commit_in_flight:
                self._settle_in_flight()
            self._in_flight = None
            await self._commit()
        finally:
            self._consumer = None
            await consumer.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop(commit_in_flight=exc is None)

    # --- iteration -------------------------------------------------------------------------

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Alert:
        if self._consumer is None:
            raise RuntimeError("the Subscriber is not started: use 'async with Subscriber(...)'")
        # Asking for the next alert means the caller is done with the previous one.
        self._settle_in_flight()
        await self._commit()
        while True:
            record = await self._next_record()
            if record is None:
                await self._commit()
                raise StopAsyncIteration
            alert = await self._decode(record)
            if alert is None:
                self._done(record)
                continue
            if not self.seen.add(alert.event_id):
                self.duplicates += 1
                self._done(record)
                continue
            self._in_flight = record
            return alert

    async def run(self, handler: Handler) -> None:
        """Call ``handler`` with each alert (awaiting it if it returns an awaitable) until the
        subscriber is idle for ``idle_timeout`` or stopped. A handler exception stops the run
        and propagates; that alert is not committed, so the group gets it again."""
        async for alert in self:
            try:
                result = handler(alert)
                if inspect.isawaitable(result):
                    await result
            except BaseException:
                self._in_flight = None
                raise

    # --- offsets ---------------------------------------------------------------------------

    def _done(self, record: ConsumerRecord[bytes, bytes]) -> None:
        partition = TopicPartition(record.topic, record.partition)
        self._pending[partition] = max(self._pending.get(partition, 0), record.offset + 1)

    def _settle_in_flight(self) -> None:
        if self._in_flight is not None:
            self._done(self._in_flight)
            self._in_flight = None

    async def _commit(self) -> None:
        if not self._pending or self._consumer is None:
            return
        offsets, self._pending = self._pending, {}
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as error:
            # The partitions went to another member: it reads them from the last commit, so
            # these records come again there (at least once; its de-duplication is its own).
            log.warning("offsets not committed after a rebalance (%s)", type(error).__name__)

    async def _partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._buffer = deque(
            record
            for record in self._buffer
            if TopicPartition(record.topic, record.partition) not in revoked
        )
        keep = {tp: offset for tp, offset in self._pending.items() if tp not in revoked}
        self._pending = {tp: offset for tp, offset in self._pending.items() if tp in revoked}
        await self._commit()
        self._pending.update(keep)

    # --- records ---------------------------------------------------------------------------

    async def _next_record(self) -> ConsumerRecord[bytes, bytes] | None:
        assert self._consumer is not None
        started = time.monotonic()
        while not self._buffer:
            if self.idle_timeout is not None and time.monotonic() - started >= self.idle_timeout:
                return None
            batches = await self._consumer.getmany(timeout_ms=500)
            for records in batches.values():
                self._buffer.extend(records)
            if not self._buffer:
                await self._commit()  # skipped records are committed while idle too
        return self._buffer.popleft()

    async def _decode(self, record: ConsumerRecord[bytes, bytes]) -> Alert | None:
        waits = delays(0.5, 30.0)
        while True:
            try:
                event = self.decoder.decode(record.value, self._allowed[record.topic], record.topic)
                # The topic's event types are alerts: the decoder checked it.
                return cast(Alert, event)
            except SchemaNotCachedError as missing:
                if self.registry is None:
                    self._skip(record, missing)
                    return None
                try:
                    await self.registry.fetch(missing.schema_id)
                except ContractError as error:
                    self._skip(record, error)
                    return None
                except ConnectionError as error:
                    # The registry down is no fault of the record: wait, do not skip it.
                    delay = next(waits)
                    log.error(
                        "schema registry unreachable (%s); trying again in %.1fs", error, delay
                    )
                    await asyncio.sleep(delay)
            except ContractError as error:
                self._skip(record, error)
                return None

    def _skip(self, record: ConsumerRecord[bytes, bytes], error: ContractError) -> None:
        self.undecodable += 1
        item = Undecodable(
            record.topic, record.partition, record.offset, error.error_type, error.message
        )
        try:
            self.on_undecodable(item)
        except Exception as callback_error:  # a report must not stop the subscriber
            log.error("on_undecodable raised %s", type(callback_error).__name__)
