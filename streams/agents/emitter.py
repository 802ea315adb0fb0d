"""Emitting encoded output events, and sending again what must not be lost until it is stored."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import faust
from aiokafka.errors import KafkaError

from streams import backoff
from streams.contracts.codecs import EventEncoder
from streams.contracts.models import Event
from streams.observability import tracing
from streams.observability.metrics import Metrics
from streams.producer_batches import Record, aiokafka_producer, partition_of, send_batches

log = logging.getLogger(__name__)

SEND_RETRY_FIRST = 0.5
SEND_RETRY_CAP = 10.0


def waits_before_retrying() -> Iterator[float]:
    """How long a stream waits before each new try of what must not be given up: from
    ``SEND_RETRY_FIRST`` seconds, doubling, at most ``SEND_RETRY_CAP`` (both read at the call)."""
    return backoff.delays(SEND_RETRY_FIRST, SEND_RETRY_CAP)


@dataclass(frozen=True)
class Sent:
    """An event handed to the producer, and the broker's acknowledgement to come."""

    topic: faust.TopicT
    event: Event
    acknowledged: Awaitable[Any]


@dataclass(frozen=True, eq=False, slots=True)
class Encoded:
    """An event encoded ahead of its send: its record's key, value, headers and partition."""

    event: Event
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    # None when the topic's partitions were not known yet: the producer's partitioner picks
    # it from the key at the send, as for ``Emitter.emit``.
    partition: int | None


@dataclass(frozen=True)
class SentBatch:
    """Encoded records handed to the producer as one batch of one partition, and the broker's
    acknowledgement of all of them (or the send's failure) to come."""

    topic: faust.TopicT
    records: Sequence[Encoded]
    acknowledged: Awaitable[Any]


class Emitter:
    """Encodes events and sends them keyed by patient_id, counting what it produced."""

    def __init__(self, encoder: EventEncoder, metrics: Metrics) -> None:
        self.encoder = encoder
        self.metrics = metrics

    async def emit(self, topic: faust.TopicT, event: Event, *, wait: bool = False) -> Sent:
        """Send now; with ``wait`` return only once the broker acknowledged the record.

        Straight to the app's producer, not through ``topic.send``: Faust's topic layer
        (message futures, callbacks, attachments that would hold the send until the source
        event is acknowledged) doubled the cost of a send, and a dead letter must be stored
        before the offset moves on anyway.
        """
        name = topic.get_topic_name()
        with tracing.produce_span(name, event.event_type, event.event_id) as headers:
            future = await topic.app.producer.send(
                name,
                event.patient_id.encode("utf-8"),
                self.encoder.encode(event),
                None,
                None,
                headers,
            )
            if wait:
                await future
        self.metrics.produced(name)
        return Sent(topic, event, future)

    def encode(self, topic: faust.TopicT, event: Event) -> Encoded:
        """``event`` as ``emit`` would send it to ``topic`` (bytes, headers with a traceparent
        when tracing is on, partition), for a later ``emit_encoded_batch``."""
        name = topic.get_topic_name()
        key = event.patient_id.encode("utf-8")
        with tracing.produce_span(name, event.event_type, event.event_id) as headers:
            value = self.encoder.encode(event)
        return Encoded(event, key, value, list(headers), partition_of(topic.app, name, key))

    async def emit_encoded_batch(
        self, topic: faust.TopicT, records: Sequence[Encoded]
    ) -> list[SentBatch]:
        """Send encoded records in batches, one partition each (more when one fills), each
        partition's records in their order; counted like ``emit``'s.

        A batch the producer refuses comes back with the failure as its acknowledgement, and
        the batches after it are still sent: the caller sends what failed again. Raises only
        before anything was sent (producer not started, topic metadata not there).
        """
        name = topic.get_topic_name()
        producer = aiokafka_producer(topic.app)
        if any(record.partition is None for record in records):
            await producer.partitions_for(name)  # waits for the topic's metadata
        by_partition: dict[int, list[tuple[Encoded, Record]]] = {}
        for record in records:
            partition = record.partition
            if partition is None:
                partition = int(producer._partition(name, None, record.key, None, record.key, None))
            by_partition.setdefault(partition, []).append(
                (record, Record(record.key, record.value, record.headers))
            )
        sent: list[SentBatch] = []
        for partition, group in by_partition.items():
            for handed in await send_batches(producer, name, partition, group):
                if not handed.acknowledged.done() or handed.acknowledged.exception() is None:
                    self.metrics.produced(name, len(handed.items))
                sent.append(SentBatch(topic, handed.items, handed.acknowledged))
        return sent

    async def send_confirmed(
        self, topic: faust.TopicT, event: Event, what: str, *, sent: Sent | None = None
    ) -> None:
        """Send ``event`` (unless ``sent`` is its send already under way) and return once the
        broker acknowledged it, sending it again until it does.

        Giving up would let an offset move past an event whose output is stored nowhere, so
        the caller (and its partition's stream) waits, and the log says why. ``what`` names
        the record in that log line; it must not carry patient data.
        """
        pending = sent
        for delay in waits_before_retrying():
            try:
                if pending is None:
                    pending = await self.emit(topic, event)
                await pending.acknowledged
                return
            except KafkaError as error:
                log.error(
                    "%s not stored (%s); sending again in %.1fs, the stream waits",
                    what,
                    type(error).__name__,
                    delay,
                )
                pending = None
                await asyncio.sleep(delay)
