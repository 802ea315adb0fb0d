"""Operators' helpers: reading a topic between bounds, showing records, filtering dead letters."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.contracts.codecs import (
    DecodeError,
    EventDecoder,
    EventValidationError,
    SchemaNotCachedError,
)
from streams.contracts.models import DeadLetter
from streams.contracts.registry import SchemaRegistry


def parse_time(text: str) -> datetime:
    """An ISO-8601 time from the command line; one without an offset is taken as UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not an ISO-8601 time: {text!r} (e.g. 2026-11-29T08:00:00Z)") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def to_millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True)
class OffsetRange:
    """Offsets [start, end) of one partition."""

    start: int
    end: int

    @property
    def size(self) -> int:
        return max(0, self.end - self.start)


def plan_ranges(
    beginnings: Mapping[int, int],
    ends: Mapping[int, int],
    *,
    since_offsets: Mapping[int, int | None] | None = None,
    until_offsets: Mapping[int, int | None] | None = None,
    from_offset: int | None = None,
    to_offset: int | None = None,
    partition: int | None = None,
) -> dict[int, OffsetRange]:
    """The range to read in each partition.

    ``ends`` are the high-water marks taken when the command started: a read that stops there
    terminates even while records (its own replays included) keep arriving. ``since_offsets``
    and ``until_offsets`` are offsets_for_times' answers (None: no record at or after that time).
    ``to_offset`` is inclusive, as operators say "offsets 5 to 9".
    """
    ranges: dict[int, OffsetRange] = {}
    for number in sorted(ends):
        if partition is not None and number != partition:
            continue
        start, end = beginnings.get(number, 0), ends[number]
        if since_offsets is not None:
            found = since_offsets.get(number)
            start = end if found is None else max(start, found)
        if until_offsets is not None:
            found = until_offsets.get(number)
            if found is not None:
                end = min(end, found)
        if from_offset is not None:
            start = max(start, from_offset)
        if to_offset is not None:
            end = min(end, to_offset + 1)
        ranges[number] = OffsetRange(min(start, end), end)
    return ranges


@dataclass(frozen=True)
class RawRecord:
    """One Kafka record as the operator commands need it."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # milliseconds since the epoch
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()

    @classmethod
    def from_consumer(cls, record: Any) -> RawRecord:
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp=record.timestamp,
            key=record.key,
            value=record.value,
            headers=tuple((str(name), value) for name, value in record.headers or ()),
        )


def new_consumer(options: Mapping[str, Any]) -> AIOKafkaConsumer:
    """A group-less consumer that assigns partitions itself and commits nothing."""
    # read_committed: an aborted transaction's records were never output, so they are not shown
    # nor replayed, and end_offsets gives the last stable offset.
    return AIOKafkaConsumer(enable_auto_commit=False, isolation_level="read_committed", **options)


async def topic_partitions(options: Mapping[str, Any], topic: str) -> list[TopicPartition]:
    """The topic's partitions; LookupError when the topic does not exist."""
    # The admin client: a group-less consumer only learns the partitions of topics it subscribed.
    admin = AIOKafkaAdminClient(**options)
    await admin.start()
    try:
        # Listing first: a metadata request for a missing topic could auto-create it.
        if topic not in await admin.list_topics():
            raise LookupError(f"topic {topic!r} does not exist")
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    numbers = sorted(int(item["partition"]) for item in described["partitions"])
    return [TopicPartition(topic, number) for number in numbers]


async def find_ranges(
    consumer: AIOKafkaConsumer,
    options: Mapping[str, Any],
    topic: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    from_offset: int | None = None,
    to_offset: int | None = None,
    partition: int | None = None,
) -> dict[TopicPartition, OffsetRange]:
    """The ranges of a topic selected by times and offsets, ending at today's high-water marks."""
    partitions = await topic_partitions(options, topic)
    if partition is not None and partition not in {tp.partition for tp in partitions}:
        raise LookupError(f"topic {topic!r} has no partition {partition}")
    beginnings = await consumer.beginning_offsets(partitions)
    ends = await consumer.end_offsets(partitions)

    async def at(moment: datetime | None) -> dict[int, int | None] | None:
        if moment is None:
            return None
        found = await consumer.offsets_for_times({tp: to_millis(moment) for tp in partitions})
        return {tp.partition: (None if hit is None else hit.offset) for tp, hit in found.items()}

    planned = plan_ranges(
        {tp.partition: offset for tp, offset in beginnings.items()},
        {tp.partition: offset for tp, offset in ends.items()},
        since_offsets=await at(since),
        until_offsets=await at(until),
        from_offset=from_offset,
        to_offset=to_offset,
        partition=partition,
    )
    return {TopicPartition(topic, number): span for number, span in planned.items()}


async def read_ranges(
    consumer: AIOKafkaConsumer,
    ranges: Mapping[TopicPartition, OffsetRange],
    stall_timeout: float = 30.0,
) -> AsyncIterator[RawRecord]:
    """Every record in the ranges (in offset order per partition), then stop."""
    pending = {tp: span for tp, span in ranges.items() if span.size > 0}
    consumer.assign(list(pending))
    for tp, first in pending.items():
        consumer.seek(tp, first.start)
    last_progress = time.monotonic()
    while pending:
        batches = await consumer.getmany(*pending, timeout_ms=500)
        for tp, records in batches.items():
            end = pending[tp].end if tp in pending else -1
            for record in records:
                if record.offset >= end:
                    break
                last_progress = time.monotonic()
                yield RawRecord.from_consumer(record)
        for tp in list(pending):
            # Positions, not the last offset seen: compaction and transaction markers leave gaps.
            if await consumer.position(tp) >= pending[tp].end:
                del pending[tp]
                consumer.pause(tp)
        if pending and time.monotonic() - last_progress > stall_timeout:
            raise TimeoutError(
                f"no progress reading {sorted(map(str, pending))} in {stall_timeout}s"
            )


@dataclass
class Decoded:
    """A record's value for display: the event as JSON-ready data, else why it is not one."""

    event: dict[str, Any] | None
    error: str | None = None


def _json_ready(payload: Any) -> Any:
    # Avro payloads carry datetimes and bytes: go through JSON once with str() for those.
    return json.loads(json.dumps(payload, default=str))


async def decode_record(
    decoder: EventDecoder, value: bytes | None, registry: SchemaRegistry | None = None
) -> Decoded:
    """The value decoded and validated; a valid-looking payload that breaks a rule is kept."""
    for _ in range(2):
        try:
            return Decoded(decoder.decode(value).model_dump(mode="json"))
        except SchemaNotCachedError as error:
            if registry is None:
                return Decoded(None, error.message)
            try:
                await registry.fetch(error.schema_id)
            except (DecodeError, ConnectionError) as fetch_error:
                return Decoded(None, str(fetch_error))
        except EventValidationError as error:
            payload = decoder.decode_payload(value)
            return Decoded(
                _json_ready(payload) if isinstance(payload, dict) else None, error.message
            )
        except DecodeError as error:
            return Decoded(None, error.message)
    return Decoded(None, "schema not cached after fetching it")


def _key_text(key: bytes | None) -> str | None:
    if key is None:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return None


def iso_millis(millis: int) -> str:
    return (
        datetime.fromtimestamp(millis / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _compact(value: Any) -> str:
    if isinstance(value, str) and value.isprintable() and " " not in value and value:
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def format_text(record: RawRecord, decoded: Decoded) -> str:
    """One readable line: time, partition@offset, key, event type and the other fields."""
    key = _key_text(record.key)
    if record.key is None:
        shown_key = "-"
    elif key is not None and key.isprintable() and " " not in key:
        shown_key = key
    else:
        # Binary or control characters would garble the operator's terminal.
        shown_key = f"0x{record.key.hex()}"
    head = f"{iso_millis(record.timestamp)} p{record.partition}@{record.offset} key={shown_key}"
    if decoded.event is None:
        size = 0 if record.value is None else len(record.value)
        return f"{head} <undecodable {size} bytes: {decoded.error}>"
    event = decoded.event
    fields = " ".join(
        f"{name}={_compact(item)}"
        for name, item in event.items()
        if name != "event_type"
        and not (name == "patient_id" and item == key)
        and item not in (None, [], {})
    )
    invalid = f" <invalid: {decoded.error}>" if decoded.error else ""
    return f"{head} {event.get('event_type', '?')} {fields}{invalid}".rstrip()


def format_json(record: RawRecord, decoded: Decoded) -> str:
    """One JSON object per record for machines; the raw value in base64 when undecodable."""
    key = _key_text(record.key)
    line: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": iso_millis(record.timestamp),
        "key": key,
    }
    if record.key is not None and key is None:
        line["key_base64"] = base64.b64encode(record.key).decode("ascii")
    if decoded.event is not None:
        line["event"] = decoded.event
    else:
        line["value_base64"] = (
            None if record.value is None else base64.b64encode(record.value).decode("ascii")
        )
    if decoded.error is not None:
        line["error"] = decoded.error
    return json.dumps(line, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters an operator asked for; None means any."""

    reason: str | None = None  # substring of error_type or error_message, any case
    original_topic: str | None = None  # the full topic name
    since: datetime | None = None  # failed_at >= since
    until: datetime | None = None  # failed_at < until

    def matches(self, dead_letter: DeadLetter) -> bool:
        if self.reason is not None:
            wanted = self.reason.casefold()
            text = f"{dead_letter.error_type}\n{dead_letter.error_message}".casefold()
            if wanted not in text:
                return False
        if self.original_topic is not None and dead_letter.original_topic != self.original_topic:
            return False
        if self.since is not None and dead_letter.failed_at < self.since:
            return False
        return self.until is None or dead_letter.failed_at < self.until


def dead_letter_row(record: RawRecord, dead_letter: DeadLetter, width: int = 60) -> list[str]:
    """The cells of `dlq list`'s table for one dead letter."""
    message = " ".join(dead_letter.error_message.split())
    if len(message) > width:
        message = message[: width - 1] + "…"
    return [
        f"{record.partition}:{record.offset}",
        dead_letter.failed_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
        f"{dead_letter.original_topic}[{dead_letter.partition}]@{dead_letter.offset}",
        dead_letter.error_type,
        message,
    ]


DEAD_LETTER_HEADER = ["partition:offset", "failed_at", "original", "error_type", "error_message"]


def format_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns; the last one is not padded."""
    table = [list(header), *(list(row) for row in rows)]
    widths = [max(len(row[column]) for row in table) for column in range(len(header) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])), row[-1]])
        for row in table
    )


def bytes_for_display(data: bytes | None) -> str:
    """UTF-8 text as it is, anything else as hex."""
    if data is None:
        return "(null)"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return f"(hex) {data.hex()}"
    # Control characters (terminal escape sequences) are shown escaped, not sent to the terminal.
    return "".join(ch if ch.isprintable() or ch in "\n\t" else f"\\x{ord(ch):02x}" for ch in text)


def format_duration(seconds: float) -> str:
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_text(done: int, total: int, elapsed: float, bar_width: int = 0) -> str:
    """'done/total, rate/s, ETA m:ss', with a [###---] bar in front when bar_width > 0."""
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = format_duration((total - done) / rate) if rate > 0 and total >= done else "?"
    text = f"{done}/{total} records, {rate:.1f}/s, ETA {eta}"
    if bar_width > 0:
        filled = bar_width if total <= 0 else min(bar_width, bar_width * done // total)
        text = f"[{'#' * filled}{'-' * (bar_width - filled)}] {text}"
    return text


@dataclass
class Progress:
    """A progress report on stderr: a redrawn bar on a terminal, a line every few seconds else."""

    total: int
    stream: TextIO
    interval: float = 2.0
    clock: Any = time.monotonic
    done: int = 0
    _started: float = field(default=0.0, init=False)
    _last: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self._started = self._last = self.clock()
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def advance(self, count: int = 1) -> None:
        self.done += count
        now = self.clock()
        # A terminal redraws cheaply, 10 times a second; a log file wants few lines.
        if now - self._last >= (0.1 if self._tty else self.interval):
            self._last = now
            self._show(now)

    def finish(self) -> None:
        self._show(self.clock())
        if self._tty:
            self.stream.write("\n")
        self.stream.flush()

    def _show(self, now: float) -> None:
        elapsed = now - self._started
        if self._tty:
            self.stream.write("\r" + progress_text(self.done, self.total, elapsed, bar_width=30))
        else:
            self.stream.write(progress_text(self.done, self.total, elapsed) + "\n")
        self.stream.flush()
