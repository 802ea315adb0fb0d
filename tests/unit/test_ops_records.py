"""The pure parts of the operators' tools: bounds, display, dead-letter filters, progress."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime

import pytest

from streams.contracts.codecs import EventDecoder, encode_avro, encode_json
from streams.contracts.dead_letters import build_dead_letter
from streams.contracts.models import DeadLetter, DoseTaken
from streams.contracts.schemas import default_catalog
from streams.ops.records import (
    DeadLetterFilter,
    OffsetRange,
    Progress,
    RawRecord,
    bytes_for_display,
    decode_record,
    format_duration,
    format_json,
    format_table,
    format_text,
    parse_time,
    plan_ranges,
    progress_text,
)

DECODER = EventDecoder(default_catalog())
DOSE = DoseTaken(
    event_id="e1",
    patient_id="p1",
    occurred_at=datetime(2026, 11, 29, 8, tzinfo=UTC),
    medication_id="m1",
)


def record(value: bytes | None, key: bytes | None = b"p1") -> RawRecord:
    return RawRecord("t.medication-events", 1, 42, 1_796_025_600_000, key, value)


def test_parse_time_takes_naive_times_as_utc() -> None:
    assert parse_time("2026-11-29T08:00:00Z") == datetime(2026, 11, 29, 8, tzinfo=UTC)
    assert parse_time("2026-11-29 08:00") == datetime(2026, 11, 29, 8, tzinfo=UTC)
    assert parse_time("2026-11-29T09:00+01:00") == datetime(2026, 11, 29, 8, tzinfo=UTC)
    with pytest.raises(ValueError, match="not an ISO-8601 time"):
        parse_time("yesterday")


def test_plan_ranges_defaults_to_everything_up_to_the_high_water_mark() -> None:
    assert plan_ranges({0: 3, 1: 0}, {0: 10, 1: 5}) == {0: OffsetRange(3, 10), 1: OffsetRange(0, 5)}


def test_plan_ranges_by_offsets_is_inclusive_and_clamped() -> None:
    planned = plan_ranges({0: 3, 1: 0}, {0: 10, 1: 5}, from_offset=4, to_offset=6)
    assert planned == {0: OffsetRange(4, 7), 1: OffsetRange(4, 5)}
    assert plan_ranges({0: 0}, {0: 10}, to_offset=100) == {0: OffsetRange(0, 10)}
    # A start past the end reads nothing rather than waiting for records to come.
    assert plan_ranges({0: 0}, {0: 10}, from_offset=50)[0].size == 0
    assert plan_ranges({0: 0, 1: 0}, {0: 10, 1: 5}, partition=1) == {1: OffsetRange(0, 5)}


def test_plan_ranges_by_time() -> None:
    planned = plan_ranges(
        {0: 0, 1: 0, 2: 0},
        {0: 10, 1: 5, 2: 8},
        since_offsets={0: 4, 1: None, 2: 2},
        until_offsets={0: 6, 1: None, 2: None},
    )
    # Partition 1 has nothing at or after --since; partition 2 nothing at or after --until.
    assert planned == {0: OffsetRange(4, 6), 1: OffsetRange(5, 5), 2: OffsetRange(2, 8)}


async def test_decode_for_display_json_avro_invalid_and_undecodable() -> None:
    decoded = await decode_record(DECODER, encode_json(DOSE))
    assert decoded.event is not None
    assert decoded.event["event_id"] == "e1"
    assert decoded.error is None

    schema = default_catalog().by_name("DoseTaken")
    assert schema is not None
    avro = await decode_record(DECODER, encode_avro(schema, DOSE))
    assert avro.event == decoded.event

    invalid = await decode_record(
        DECODER, b'{"event_id":"e2","event_type":"DoseTaken","patient_id":"p1"}'
    )
    assert invalid.event is not None
    assert invalid.event["event_id"] == "e2"
    assert invalid.error is not None
    assert "occurred_at" in invalid.error

    garbage = await decode_record(DECODER, b"\xff\xfe")
    assert garbage.event is None
    assert garbage.error is not None
    assert "unrecognised encoding" in garbage.error


async def test_text_line_is_compact_and_readable() -> None:
    line = format_text(record(encode_json(DOSE)), await decode_record(DECODER, encode_json(DOSE)))
    assert line.startswith("2026-11-30T08:00:00.000Z p1@42 key=p1 DoseTaken event_id=e1 ")
    assert "medication_id=m1" in line
    assert "patient_id" not in line  # the key says it already
    binary = format_text(record(b"\xff", key=b"\x01\x02"), await decode_record(DECODER, b"\xff"))
    assert "key=0x0102 <undecodable 1 bytes:" in binary


async def test_json_line_for_machines() -> None:
    good = json.loads(
        format_json(record(encode_json(DOSE)), await decode_record(DECODER, encode_json(DOSE)))
    )
    assert good["topic"] == "t.medication-events"
    assert (good["partition"], good["offset"], good["key"]) == (1, 42, "p1")
    assert good["timestamp"] == "2026-11-30T08:00:00.000Z"
    assert good["event"]["medication_id"] == "m1"
    assert "error" not in good

    bad = json.loads(
        format_json(record(b"\xff", key=b"\xfe"), await decode_record(DECODER, b"\xff"))
    )
    assert bad["key"] is None
    assert base64.b64decode(bad["key_base64"]) == b"\xfe"
    assert base64.b64decode(bad["value_base64"]) == b"\xff"
    assert "event" not in bad


def dead_letter(error_type: str, message: str, topic: str, day: int) -> DeadLetter:
    return build_dead_letter(
        topic=topic,
        partition=0,
        offset=day,
        key=b"p1",
        value=b"{",
        headers=[],
        error_type=error_type,
        error_message=message,
        failed_at=datetime(2026, 11, day, tzinfo=UTC),
    )


def test_dead_letter_filter() -> None:
    decode = dead_letter("DecodeError", "not valid JSON", "p.medication-events", 1)
    invalid = dead_letter("ValidationError", "quantity: too small", "p.schedule-events", 20)
    assert DeadLetterFilter().matches(decode)
    assert DeadLetterFilter(reason="json").matches(decode)
    assert DeadLetterFilter(reason="validation").matches(invalid)
    assert not DeadLetterFilter(reason="json").matches(invalid)
    assert DeadLetterFilter(original_topic="p.schedule-events").matches(invalid)
    assert not DeadLetterFilter(original_topic="p.schedule-events").matches(decode)
    middle = datetime(2026, 11, 10, tzinfo=UTC)
    assert not DeadLetterFilter(since=middle).matches(decode)
    assert DeadLetterFilter(since=middle).matches(invalid)
    assert DeadLetterFilter(until=middle).matches(decode)
    assert not DeadLetterFilter(until=datetime(2026, 11, 20, tzinfo=UTC)).matches(invalid)


def test_table_and_bytes_for_display() -> None:
    table = format_table(["a", "long header", "last"], [["xx", "y", "anything goes"]])
    assert table.splitlines() == ["a   long header  last", "xx  y            anything goes"]
    assert bytes_for_display(b"caf\xc3\xa9") == "café"
    assert bytes_for_display(b"\xc3\x01") == "(hex) c301"
    assert bytes_for_display(None) == "(null)"
    assert bytes_for_display(b"a\x1b[2Jb\n") == "a\\x1b[2Jb\n"


def test_progress_text() -> None:
    assert format_duration(75) == "1:15"
    assert format_duration(3725) == "1:02:05"
    assert progress_text(50, 200, 10.0) == "50/200 records, 5.0/s, ETA 0:30"
    assert progress_text(0, 10, 0.0) == "0/10 records, 0.0/s, ETA ?"
    assert progress_text(5, 10, 1.0, bar_width=10).startswith("[#####-----] 5/10")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_on_a_log_writes_a_line_now_and_then() -> None:
    stream, clock = io.StringIO(), FakeClock()
    progress = Progress(100, stream, interval=2.0, clock=clock)
    for _ in range(10):
        clock.now += 0.5
        progress.advance(10)
    progress.finish()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines[-1] == "100/100 records, 20.0/s, ETA 0:00"
    assert 2 <= len(lines) <= 4


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_redraws_one_bar() -> None:
    stream, clock = Terminal(), FakeClock()
    progress = Progress(4, stream, clock=clock)
    for _ in range(4):
        clock.now += 1.0
        progress.advance()
    progress.finish()
    text = stream.getvalue()
    assert text.count("\n") == 1
    assert text.endswith("[" + "#" * 30 + "] 4/4 records, 1.0/s, ETA 0:00\n")
