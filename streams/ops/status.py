"""`medstream status`: the workers and their partitions, lag per partition, events in and out,
dead letters, deliveries, pauses."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.consumer_groups import GroupMember, group_members
from streams.contracts.codecs import EventDecoder
from streams.contracts.schemas import default_catalog
from streams.kafka_client import client_options
from streams.ops.control import read_pause_state
from streams.ops.records import (
    decode_record,
    find_ranges,
    format_table,
    new_consumer,
    read_ranges,
    topic_partitions,
)
from streams.settings import Settings
from streams.topics import DEAD_LETTERS, NOTIFICATIONS, TopicSpec


@dataclass(frozen=True)
class PartitionStatus:
    """One consumed partition: its end offset, the group's committed offset and the lag.

    ``stalled`` compares two samples of the group's offsets taken ``--stall-sample`` seconds
    apart: True when the partition had lag at both and its committed offset did not move,
    and it is not paused; None when only one sample was taken.
    """

    topic: str
    partition: int
    end: int
    committed: int | None
    stalled: bool | None = None
    paused: bool = False

    @property
    def lag(self) -> int:
        return self.end - (self.committed or 0)

    @property
    def progress(self) -> str:
        if self.paused:
            return "paused"
        if self.stalled is None:
            return "-"
        return "stalled" if self.stalled else "ok"


@dataclass
class Status:
    """What `medstream status` shows."""

    consumed: list[PartitionStatus] = field(default_factory=list)
    # Records per topic (base name), summed over partitions: events in, and out.
    records: dict[str, int] = field(default_factory=dict)
    dead_letters: Counter[str] = field(default_factory=Counter)
    deliveries: Counter[str] = field(default_factory=Counter)
    paused: list[str] = field(default_factory=list)
    # Seconds between the two samples of the group's offsets (0: one sample, no stall check).
    stall_sample: float = 0.0
    group_state: str = "Unknown"
    # The workers in the group, each with the partitions of the consumed topics it holds.
    members: tuple[GroupMember, ...] = ()

    @property
    def stalled(self) -> list[PartitionStatus]:
        return [p for p in self.consumed if p.stalled]

    def as_json(self) -> dict[str, Any]:
        return {
            "group_state": self.group_state,
            "workers": [
                {
                    "member_id": m.member_id,
                    "host": m.host,
                    "partitions": [f"{tp.topic}[{tp.partition}]" for tp in m.partitions],
                }
                for m in self.members
            ],
            "consumer_group": [
                {
                    "topic": p.topic,
                    "partition": p.partition,
                    "end_offset": p.end,
                    "committed": p.committed,
                    "lag": p.lag,
                    "stalled": p.stalled,
                    "paused": p.paused,
                }
                for p in self.consumed
            ],
            "stall_sample_seconds": self.stall_sample,
            "records": self.records,
            "dead_letters_by_reason": dict(self.dead_letters),
            "deliveries_by_outcome": dict(self.deliveries),
            "paused_topics": self.paused,
        }

    def as_text(self, group: str) -> str:
        lag = format_table(
            ["topic", "partition", "end offset", "committed", "lag", "progress"],
            [
                [
                    p.topic,
                    str(p.partition),
                    str(p.end),
                    str(p.committed if p.committed is not None else "-"),
                    str(p.lag),
                    p.progress,
                ]
                for p in self.consumed
            ],
        )
        if self.stall_sample:
            stalled = ", ".join(f"{p.topic}[{p.partition}]" for p in self.stalled) or "none"
            lag += (
                f"\nstalled (lag, committed offset unmoved for {self.stall_sample:g}s, "
                f"not paused): {stalled}"
            )
        records = format_table(
            ["topic", "records"], [[name, str(n)] for name, n in self.records.items()]
        )
        letters = format_table(
            ["dead-letter reason", "count"],
            [[reason, str(n)] for reason, n in self.dead_letters.most_common()] or [["-", "0"]],
        )
        deliveries = format_table(
            ["delivery outcome", "count"],
            [[outcome, str(n)] for outcome, n in sorted(self.deliveries.items())] or [["-", "0"]],
        )
        paused = ", ".join(self.paused) or "none"
        workers = format_table(
            ["worker", "host", "partitions held"],
            [
                [m.member_id, m.host, _partition_ranges(m.partitions)]
                for m in sorted(self.members, key=lambda m: m.member_id)
            ]
            or [["-", "-", "none: no worker in the group"]],
        )
        heading = f"consumer group {group}: {self.group_state}, {len(self.members)} workers"
        return "\n\n".join(
            [heading, workers, lag, records, letters, deliveries, f"paused: {paused}"]
        )


def _partition_ranges(partitions: Iterable[TopicPartition]) -> str:
    """``medication-events 0-2,5; patient-events 0-2``: a member's partitions, by topic."""
    by_topic: dict[str, list[int]] = {}
    for tp in partitions:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    parts = []
    for topic, numbers in sorted(by_topic.items()):
        numbers.sort()
        spans: list[str] = []
        start = previous = numbers[0]
        for number in [*numbers[1:], None]:
            if number is not None and number == previous + 1:
                previous = number
                continue
            spans.append(str(start) if start == previous else f"{start}-{previous}")
            if number is not None:
                start = previous = number
        parts.append(f"{topic} {','.join(spans)}")
    return "; ".join(parts) or "none"


async def gather_status(
    settings: Settings,
    consumed: Iterable[str],
    every_topic: Iterable[TopicSpec],
    stall_sample: float = 0.0,
) -> Status:
    """Read the cluster: ``consumed`` are the base names of the topics the agents read.

    With ``stall_sample`` > 0 the group's committed offsets and the end offsets are read a
    second time that many seconds after the first (the rest of the status is gathered in
    between) to tell which partitions are stalled. Status runs outside the workers, so the
    committed offset is its measure of progress: a worker commits every few seconds
    (Faust's commit interval, 2.8 s) while it makes progress, so a sample shorter than that
    can call a working partition stalled.
    """
    options = client_options(settings)
    status = Status(stall_sample=stall_sample)
    names = {settings.topic_name(topic) for topic in consumed}
    consumer = new_consumer(options)
    await consumer.start()
    try:
        ends: dict[TopicPartition, int] = {}
        for spec in every_topic:
            partitions = await topic_partitions(options, settings.topic_name(spec.base_name))
            found = await consumer.end_offsets(partitions)
            ends.update(found)
            status.records[spec.base_name] = sum(found.values())
        first = await _committed(settings)
        sampled_at = time.monotonic()
        status.group_state, members = await _members(settings)
        status.members = tuple(
            GroupMember(
                m.member_id,
                m.client_id,
                m.host,
                tuple(tp for tp in m.partitions if tp.topic in names),
            )
            for m in members
        )
        status.dead_letters = await _count(
            settings, consumer, DEAD_LETTERS, lambda event: str(event.get("error_type"))
        )
        status.deliveries = await _count(
            settings, consumer, NOTIFICATIONS, lambda event: str(event.get("status"))
        )
        state = await read_pause_state(settings)
        status.paused = sorted(topic for topic, command in state.items() if command.paused)
        paused = {settings.topic_name(topic) for topic in status.paused}
        consumed_ends = {tp: end for tp, end in sorted(ends.items()) if tp.topic in names}
        if stall_sample <= 0:
            status.consumed = [
                PartitionStatus(
                    tp.topic, tp.partition, end, first.get(tp), None, tp.topic in paused
                )
                for tp, end in consumed_ends.items()
            ]
            return status
        await asyncio.sleep(max(0.0, sampled_at + stall_sample - time.monotonic()))
        second = await _committed(settings)
        later_ends = await consumer.end_offsets(list(consumed_ends))
    finally:
        await consumer.stop()
    for tp, end in consumed_ends.items():
        before, after = first.get(tp), second.get(tp)
        had_lag = end > (before or 0)
        is_paused = tp.topic in paused
        stalled = had_lag and after == before and not is_paused
        status.consumed.append(
            PartitionStatus(tp.topic, tp.partition, later_ends[tp], after, stalled, is_paused)
        )
    return status


async def _committed(settings: Settings) -> Mapping[TopicPartition, int]:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(settings.app_id)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


async def _members(settings: Settings) -> tuple[str, tuple[GroupMember, ...]]:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        return await group_members(admin, settings.app_id)
    finally:
        await admin.close()


async def _count(settings: Settings, consumer: Any, spec: TopicSpec, key: Any) -> Counter[str]:
    """Count a topic's events (read in full, up to today's end) by ``key(event)``."""
    decoder = EventDecoder(default_catalog())
    ranges = await find_ranges(
        consumer, client_options(settings), settings.topic_name(spec.base_name), from_offset=0
    )
    counts: Counter[str] = Counter()
    async for raw in read_ranges(consumer, ranges):
        decoded = await decode_record(decoder, raw.value)
        counts["undecodable" if decoded.event is None else key(decoded.event)] += 1
    return counts
