"""The input agents' intake: decoding, the error boundary with dead-lettering, and batches."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

import faust
from faust.exceptions import PartitionsMismatch

from streams.agents.emitter import Emitter, waits_before_retrying
from streams.contracts.codecs import (
    ContractError,
    DecodeError,
    EventDecoder,
    EventValidationError,
    SchemaNotCachedError,
)
from streams.contracts.dead_letters import DEFAULT_MAX_VALUE_BYTES, build_dead_letter
from streams.contracts.models import Event
from streams.contracts.registry import SchemaRegistry
from streams.observability import tracing
from streams.observability.metrics import Metrics

log = logging.getLogger(__name__)

# Failures of the worker's own setup, not of the event: the event waits for them to pass (a
# table's changelog metadata still incomplete while a broker starts) instead of being
# dead-lettered with every event behind it. Raised before the handler has written anything.
NOT_THE_EVENTS_FAULT: tuple[type[Exception], ...] = (PartitionsMismatch,)


async def _nothing_to_finish() -> None:
    return None


class ProcessingError(ContractError):
    """Processing a valid event failed; the message names only the failure's type."""

    error_type: ClassVar[str] = "ProcessingError"


class RejectedEventError(ContractError):
    """A valid event that cannot be applied safely (e.g. older than the de-duplication window)."""

    error_type: ClassVar[str] = "RejectedEventError"


class BatchFullError(Exception):
    """The handler needs what the batch staged so far made durable before it can stage this
    event (the patient's outbox would otherwise exceed its bound): finish the batch, retry."""


@dataclass(frozen=True)
class Failure:
    """What the error boundary made of an exception met while handling a record."""

    # The worker's fault (a broker or its metadata not ready): the record waits and is handled
    # again. Otherwise the record's: it is dead-lettered with this type and message.
    retry: bool
    error_type: str
    message: str


def judge(error: Exception, event_type: str | None) -> Failure:
    """The one place that decides whose fault an exception is, and what a dead letter says.

    Messages are built from the exception's type and the (contract-checked) event type only:
    an exception's own text may quote the event.
    """
    if isinstance(error, ContractError):
        return Failure(False, error.error_type, error.message)
    if isinstance(error, NOT_THE_EVENTS_FAULT):
        return Failure(True, type(error).__name__, "the worker is not ready")
    if event_type is None:
        # Decoding raised something other than a DecodeError: still the bytes' fault.
        return Failure(False, DecodeError.error_type, f"{type(error).__name__} while decoding")
    return Failure(
        False, ProcessingError.error_type, f"{type(error).__name__} while processing {event_type}"
    )


class Outcome(StrEnum):
    """What a handler did with an event."""

    PROCESSED = "processed"
    DUPLICATE = "duplicate"


class Settled(StrEnum):
    """What became of an event, as counted in the metrics."""

    PROCESSED = "processed"
    DUPLICATE = "duplicate"
    DEAD_LETTERED = "dead_lettered"


# A handler gets the event and the partition it arrived on.
Handler = Callable[[Event, int], Awaitable[Outcome]]
# What ``Intake.run_batches`` runs on each record, given the batch's retrying finish (to make
# the open batch durable first when the record needs it).
RecordHandler = Callable[[faust.EventT[Any], Callable[[], Awaitable[None]]], Awaitable[None]]


def _waiting_records(stream: faust.StreamT[Any]) -> Callable[[], bool]:
    """Whether more records already wait in the stream's channel (read without waiting)."""
    queue = getattr(stream.channel, "queue", None)
    if queue is None:
        return lambda: False
    return lambda: not queue.empty()


@dataclass(eq=False)
class _OpenBatch:
    """The records an agent handled since its last checkpoint, closed and settled by the
    agent (nothing more waiting, or full) or by the window's timer.

    (Settling a batch in the background while the agent handles the next was tried: the
    worker is CPU-bound under load, so it changed nothing measurable, and was not kept.)

    The timer matters while the agent waits for a record that does not come: a rebalance
    empties the stream's buffer and then waits for every record read to be acknowledged.
    """

    settle: Callable[[list[faust.EventT[Any]], list[tuple[Settled, str]]], Awaitable[None]]
    window_seconds: float
    records: list[faust.EventT[Any]] = field(default_factory=list)
    # What the records came to, counted when they are settled.
    settled: list[tuple[Settled, str]] = field(default_factory=list)
    # Held while a record is handled and while a batch is closed: never both at once.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _timer: asyncio.TimerHandle | None = None
    _closing: asyncio.Task[None] | None = None

    def open(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self.window_seconds, self._expire)

    def _expire(self) -> None:
        self._timer = None
        self._closing = asyncio.ensure_future(self.close())

    async def close(self) -> None:
        async with self.lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            records, self.records = self.records, []
            settled, self.settled = self.settled, []
            if records:
                await self.settle(records, settled)

    def abandon(self) -> None:
        """The agent stops: its unsettled records stay unacknowledged, for the next worker."""
        if self._timer is not None:
            self._timer.cancel()
        if self._closing is not None and not self._closing.done():
            self._closing.cancel()


@dataclass
class Intake:
    """Runs an input agent's handler on each record; whatever fails goes to dead-letters.

    Records come in batches (what is waiting, up to ``batch_max_events`` or
    ``batch_window_seconds``): the handler sees them one by one, then ``finish_batch`` makes
    their effects durable once for the whole batch (table writes, acknowledgements). The
    intake acknowledges a batch's records to Faust only after that, and a dead letter is
    acknowledged by the broker before the next record is handled, so an offset never moves
    past an event that was neither processed nor dead-lettered.
    """

    decoder: EventDecoder
    emitter: Emitter
    dead_letters_topic: faust.TopicT
    allowed_types: Mapping[str, Collection[str]]
    metrics: Metrics
    registry: SchemaRegistry | None = None
    agent: str = "agent"
    batch_max_events: int = 500
    batch_window_seconds: float = 0.01
    dead_letter_max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    # Awaited before each batch: the tables restored for the current assignment.
    ready: Callable[[], Awaitable[None]] = _nothing_to_finish
    # What the record being handled came to (the open batch takes it over). Not an init
    # field, so that each ``dataclasses.replace`` copy has its own.
    _settled: list[tuple[Settled, str]] = field(default_factory=list, init=False)

    async def run(
        self,
        stream: faust.StreamT[Any],
        handler: Handler,
        finish_batch: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Decode each record into a contract event and run ``handler`` on it, in batches
        (``run_batches``)."""

        async def handle(record: faust.EventT[Any], finish: Callable[[], Awaitable[None]]) -> None:
            await self.handle_record(record, handler, finish)

        await self.run_batches(stream, handle, finish_batch)

    async def run_batches(
        self,
        stream: faust.StreamT[Any],
        handle: RecordHandler,
        finish_batch: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Run ``handle`` on the stream's records as they come; a batch ends when nothing more
        is waiting, at ``batch_max_events``, or ``batch_window_seconds`` after it began, and
        its records are acknowledged to Faust once ``finish_batch`` made them durable.
        ``handle`` must not raise (dead-letter instead) and reports what each record came to
        with ``settle``.

        Ending a batch as soon as the input runs dry keeps a quiet stream's latency to one
        checkpoint, while under load a batch grows to what arrived meanwhile, so the round
        trips of its checkpoint are shared by many events. (Faust's ``take_events`` closes a
        batch on a timer only, and moves each record through a buffer of futures first.)
        """
        given = finish_batch or _nothing_to_finish

        async def finish() -> None:
            await self._until_done(given, "finishing a batch")

        async def settle(
            records: list[faust.EventT[Any]], settled: list[tuple[Settled, str]]
        ) -> None:
            await finish()
            for record in records:
                await stream.ack(record)
            self._count(settled)

        # The intake acknowledges each record itself, once its batch is durable.
        stream.enable_acks = False
        waiting = _waiting_records(stream)
        batch = _OpenBatch(settle, self.batch_window_seconds)
        try:
            async for record in stream.events():
                async with batch.lock:
                    if not batch.records:
                        await self._until_done(self.ready, "restoring the tables")
                        batch.open()
                    batch.records.append(record)
                    await handle(record, finish)
                    batch.settled.extend(self._settled)
                    self._settled.clear()
                    complete = len(batch.records) >= self.batch_max_events or not waiting()
                if complete:
                    await batch.close()
        finally:
            batch.abandon()

    async def _until_done(self, step: Callable[[], Awaitable[None]], what: str) -> None:
        """Run ``step`` until it succeeds: an exception escaping here would stop the agent,
        and Faust would then acknowledge the batch's events as it closes the stream, although
        their state and outputs were never stored."""
        for delay in waits_before_retrying():
            try:
                await step()
                return
            except Exception as error:
                log.error(
                    "%s of %s failed (%s); trying again in %.1fs, the stream waits",
                    what,
                    self.agent,
                    type(error).__name__,
                    delay,
                )
                await asyncio.sleep(delay)

    def _count(self, settled_events: list[tuple[Settled, str]]) -> None:
        for settled, name in settled_events:
            if settled is Settled.PROCESSED:
                self.metrics.processed(name)
            elif settled is Settled.DUPLICATE:
                self.metrics.duplicate(name)
            else:
                self.metrics.dead_lettered(name)

    async def handle_record(
        self,
        record: faust.EventT[Any],
        handler: Handler,
        finish_batch: Callable[[], Awaitable[None]] = _nothing_to_finish,
    ) -> None:
        """Handle one record: processed, a duplicate, or dead-lettered; never an exception
        (but cancellation), so no record can stop its agent."""
        message = record.message
        # The hop's span continues the producer's trace; what the handler emits nests in it.
        with tracing.consume_span(
            message.topic, message.partition, message.offset, message.headers
        ) as span:
            await self._handle(message, span, handler, finish_batch)

    async def _handle(
        self,
        message: Any,
        span: tracing.Span,
        handler: Handler,
        finish_batch: Callable[[], Awaitable[None]],
    ) -> None:
        topic = message.topic
        self.metrics.consumed(topic)
        try:
            event = await self._decode(message.value, topic)
            if message.key is None or message.key != event.patient_id.encode("utf-8"):
                # A wrong key puts a patient's events on two partitions and two workers.
                raise EventValidationError("record key is not the event's patient_id")
        except Exception as error:
            await self.dead_letter(message, judge(error, None))
            return
        tracing.name_event(span, f"consume {topic}", event.event_type)
        started = time.perf_counter()
        waits = waits_before_retrying()
        flushed = False
        while True:
            try:
                outcome = await self._run_handler(handler, event, message.partition)
                break
            except Exception as error:
                if isinstance(error, BatchFullError) and not flushed:
                    await finish_batch()
                    flushed = True
                    continue
                failure = judge(error, event.event_type)
                if not failure.retry:
                    if failure.error_type == ProcessingError.error_type:
                        log.error(
                            "processing failed: topic=%s partition=%s offset=%s event_type=%s "
                            "error=%s",
                            topic,
                            message.partition,
                            message.offset,
                            event.event_type,
                            type(error).__name__,
                        )
                    await self.dead_letter(message, failure)
                    return
                delay = next(waits)
                log.error(
                    "processing waits: topic=%s partition=%s offset=%s error=%s (%s, not the "
                    "event's fault); trying again in %.1fs",
                    topic,
                    message.partition,
                    message.offset,
                    failure.error_type,
                    failure.message,
                    delay,
                )
                await asyncio.sleep(delay)
        self.metrics.observe_processing(self.agent, time.perf_counter() - started)
        self.settle(
            Settled.DUPLICATE if outcome is Outcome.DUPLICATE else Settled.PROCESSED,
            event.event_type,
        )

    def settle(self, settled: Settled, name: str) -> None:
        """What the record being handled came to: counted (by event or error type ``name``)
        once its batch is durable."""
        self._settled.append((settled, name))

    async def _run_handler(self, handler: Handler, event: Event, partition: int) -> Outcome:
        with tracing.span(
            f"process {self.agent} {event.event_type}",
            attributes={"medstream.agent": self.agent, "medstream.event_type": event.event_type},
        ):
            return await handler(event, partition)

    async def _decode(self, value: bytes | None, topic: str) -> Event:
        allowed = self.allowed_types.get(topic)
        waits = waits_before_retrying()
        while True:
            try:
                return self.decoder.decode(value, allowed, topic)
            except SchemaNotCachedError as missing:
                if self.registry is None:
                    raise
                try:
                    # An id the registry does not know raises DecodeError: the record's fault.
                    await self.registry.fetch(missing.schema_id)
                except ConnectionError as error:
                    # The registry down is the worker's fault, not the record's: dead-lettering
                    # would send every Confluent-framed record of the outage there.
                    delay = next(waits)
                    log.error(
                        "decoding waits: schema id %d not fetched (%s); the partition waits, "
                        "trying again in %.1fs",
                        missing.schema_id,
                        error,
                        delay,
                    )
                    await asyncio.sleep(delay)

    async def dead_letter(self, message: Any, failure: Failure) -> None:
        """Dead-letter the record being handled and settle it so."""
        await self._send_dead_letter(message, failure)
        self.settle(Settled.DEAD_LETTERED, failure.error_type)

    async def _send_dead_letter(self, message: Any, failure: Failure) -> None:
        """Dead-letter ``message`` (its key, value and headers kept) with the failure's type
        and reason, and return once the broker stored it."""
        error_type = failure.error_type
        dead_letter = build_dead_letter(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            headers=message.headers,
            error_type=error_type,
            error_message=failure.message,
            failed_at=datetime.now(UTC),
            max_value_bytes=self.dead_letter_max_value_bytes,
        )
        log.warning(
            "dead-lettered: topic=%s partition=%s offset=%s error_type=%s reason=%s",
            message.topic,
            message.partition,
            message.offset,
            error_type,
            dead_letter.error_message,
        )
        await self.emitter.send_confirmed(
            self.dead_letters_topic,
            dead_letter,
            f"dead letter of {dead_letter.original_topic} partition {dead_letter.partition} "
            f"offset {dead_letter.offset}",
        )
