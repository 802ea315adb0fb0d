"""Building the DeadLetter of a failed record: nothing lost, nothing leaked, replayable."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.contracts.codecs import EventDecoder, encode_avro, encode_json
from streams.contracts.dead_letters import build_dead_letter, dead_letter_id, original_record
from streams.contracts.models import DeadLetter, RecordHeader
from streams.contracts.schemas import default_catalog

FAILED_AT = datetime(2026, 5, 4, 12, 30, 45, 678901, tzinfo=timezone(timedelta(hours=2)))
BINARY = bytes(range(256))
DECODER = EventDecoder(default_catalog())


def _build(**changes: Any) -> DeadLetter:
    arguments: dict[str, Any] = {
        "topic": "medication-events",
        "partition": 3,
        "offset": 1234,
        "key": b"patient-1",
        "value": b'{"event_type": "DoseTaken"',
        "headers": [("trace-id", b"abc"), ("binary", BINARY)],
        "error_type": "DecodeError",
        "error_message": "not valid JSON: Expecting ',' delimiter (line 1, column 27)",
        "failed_at": FAILED_AT,
    }
    arguments.update(changes)
    return build_dead_letter(**arguments)


def test_a_text_record_is_kept_byte_exact() -> None:
    dead = _build()
    assert dead.event_type == "DeadLetter"
    assert dead.original_topic == "medication-events"
    assert dead.partition == 3
    assert dead.offset == 1234
    assert dead.patient_id == "patient-1"
    assert dead.key == base64.b64encode(b"patient-1").decode()
    assert dead.value == base64.b64encode(b'{"event_type": "DoseTaken"').decode()
    assert base64.b64decode(dead.value) == b'{"event_type": "DoseTaken"'
    assert dead.error_type == "DecodeError"
    assert dead.error_message == "not valid JSON: Expecting ',' delimiter (line 1, column 27)"
    # The failure time is the event's time, in UTC milliseconds.
    expected = datetime(2026, 5, 4, 10, 30, 45, 678000, tzinfo=UTC)
    assert dead.failed_at == expected
    assert dead.occurred_at == expected


def test_a_binary_record_is_kept_byte_exact() -> None:
    value = b"\xc3\x01" + BINARY + b"\x00" * 5
    dead = _build(key=b"\x00\xff\xfe", value=value)
    assert dead.value is not None
    assert base64.b64decode(dead.value, validate=True) == value
    assert dead.key is not None
    assert base64.b64decode(dead.key, validate=True) == b"\x00\xff\xfe"


def test_a_tombstone_keeps_a_null_value() -> None:
    dead = _build(value=None)
    assert dead.value is None
    assert original_record(dead)[1] is None


def test_a_missing_key_and_an_empty_key() -> None:
    missing = _build(key=None)
    assert missing.key is None
    assert missing.patient_id == ""
    empty = _build(key=b"")
    assert empty.key == ""
    assert empty.patient_id == ""
    assert original_record(missing)[0] is None
    assert original_record(empty)[0] == b""


@pytest.mark.parametrize("key", [b"\xff\xfepatient", b"\xc3\x28", b"abc\x80"])
def test_a_key_that_is_not_utf8_gives_an_empty_patient_id(key: bytes) -> None:
    dead = _build(key=key)
    assert dead.patient_id == ""
    assert dead.key is not None
    assert base64.b64decode(dead.key) == key


def test_a_key_too_long_for_a_patient_id_is_kept_but_not_used_as_one() -> None:
    key = ("p" * 201).encode()
    dead = _build(key=key)
    assert dead.patient_id == ""
    assert original_record(dead)[0] == key
    assert _build(key=("p" * 200).encode()).patient_id == "p" * 200
    assert _build(key="пациент-1".encode()).patient_id == "пациент-1"


def test_headers_as_a_list_of_tuples_keep_order_duplicates_and_nulls() -> None:
    headers = [("b", b"2"), ("a", b"1"), ("b", b"3"), ("none", None), ("bin", BINARY)]
    dead = _build(headers=headers)
    assert [header.key for header in dead.headers] == ["b", "a", "b", "none", "bin"]
    assert dead.headers[3] == RecordHeader(key="none", value=None)
    assert dead.headers[4].value == base64.b64encode(BINARY).decode()
    assert original_record(dead)[2] == headers


def test_headers_as_a_dict() -> None:
    headers = {"trace-id": b"abc", "empty": b"", "none": None}
    dead = _build(headers=headers)
    assert [(h.key, h.value) for h in dead.headers] == [
        ("trace-id", "YWJj"),
        ("empty", ""),
        ("none", None),
    ]
    assert original_record(dead)[2] == list(headers.items())


def test_text_header_values_are_kept_as_their_utf8_bytes() -> None:
    dead = _build(headers=[("lang", "ünï")])
    assert original_record(dead)[2] == [("lang", "ünï".encode())]


def test_no_headers() -> None:
    assert _build(headers=None).headers == []
    assert _build(headers=[]).headers == []
    assert original_record(_build(headers=None))[2] == []


def test_the_event_id_is_deterministic_in_topic_partition_and_offset() -> None:
    first = _build()
    again = _build(value=b"other", error_message="other", failed_at=FAILED_AT + timedelta(1))
    assert first.event_id == again.event_id == "dead-letter:medication-events:3:1234"
    assert _build(offset=1235).event_id != first.event_id
    assert _build(partition=4).event_id != first.event_id
    assert _build(topic="schedule-events").event_id != first.event_id


def test_the_longest_kafka_topic_name_still_gives_a_valid_dead_letter() -> None:
    topic = "t" * 249  # Kafka's limit
    dead = _build(topic=topic, partition=2**31 - 1, offset=2**63 - 1)
    assert dead.original_topic == topic
    assert len(dead.event_id) <= 200
    assert dead.event_id == dead_letter_id(topic, 2**31 - 1, 2**63 - 1)
    assert dead.event_id.endswith(f":{2**31 - 1}:{2**63 - 1}")
    assert _build(topic="u" * 249).event_id != dead.event_id
    assert DECODER.decode(encode_json(dead)) == dead


def test_error_message_is_truncated_to_1000_characters() -> None:
    dead = _build(error_message="x" * 999 + "é" + "y" * 500)
    assert len(dead.error_message) == 1000
    assert dead.error_message == "x" * 999 + "é"
    assert _build(error_message="z" * 1000).error_message == "z" * 1000


def test_an_empty_error_message_still_says_something() -> None:
    assert _build(error_message="").error_message == "unknown error"


def test_original_record_restores_exactly_what_went_in() -> None:
    key, value = b"\x00patient\xff", b"\xc3\x01" + BINARY
    headers = [("x", b"\x00\x01"), ("x", None), ("y", b"")]
    dead = _build(key=key, value=value, headers=headers)
    assert original_record(dead) == (key, value, headers)


@pytest.mark.parametrize(
    "dead",
    [
        _build(),
        _build(key=None, value=None, headers=None),
        _build(key=b"\xff", value=BINARY, headers={"a": None, "b": BINARY}),
    ],
    ids=["text", "tombstone", "binary"],
)
def test_the_dead_letter_round_trips_through_json_and_avro(dead: DeadLetter) -> None:
    schema = default_catalog().by_name("DeadLetter")
    assert schema is not None
    for data in (encode_json(dead), encode_avro(schema, dead)):
        decoded = DECODER.decode(data, allowed_types=("DeadLetter",), topic="dead-letters")
        assert decoded == dead
        assert isinstance(decoded, DeadLetter)
        assert original_record(decoded) == original_record(dead)


HEADERS = st.lists(
    st.tuples(st.text(max_size=20), st.one_of(st.none(), st.binary(max_size=50))), max_size=5
)


@settings(max_examples=100, deadline=None)
@given(
    key=st.one_of(st.none(), st.binary(max_size=300)),
    value=st.one_of(st.none(), st.binary(max_size=300)),
    headers=HEADERS,
    partition=st.integers(0, 2**31 - 1),
    offset=st.integers(0, 2**63 - 1),
)
def test_any_record_is_kept_and_round_trips(
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes | None]],
    partition: int,
    offset: int,
) -> None:
    dead = _build(key=key, value=value, headers=headers, partition=partition, offset=offset)
    assert original_record(dead) == (key, value, headers)
    schema = default_catalog().by_name("DeadLetter")
    assert schema is not None
    assert DECODER.decode(encode_avro(schema, dead)) == dead
    assert DECODER.decode(encode_json(dead)) == dead


def test_a_value_too_large_for_the_broker_is_cut_with_its_length_and_digest() -> None:
    value = b"x" * 900_000
    dead = _build(value=value, max_value_bytes=512 * 1024)
    assert dead.truncated
    assert dead.value is not None
    assert base64.b64decode(dead.value) == value[: 512 * 1024]
    assert dead.value_length == 900_000
    assert dead.value_sha256 == hashlib.sha256(value).hexdigest()
    # Encoded as the worker publishes it, it fits the broker's default limit (1 MiB).
    assert len(encode_json(dead)) < 1_000_000


def test_a_value_within_the_bound_is_kept_whole_and_still_described() -> None:
    dead = _build()
    assert not dead.truncated
    assert dead.value_length == len(b'{"event_type": "DoseTaken"')
    assert dead.value_sha256 == hashlib.sha256(b'{"event_type": "DoseTaken"').hexdigest()
    assert _build(value=None).value_length is None


def test_an_oversized_key_and_headers_are_cut_too() -> None:
    headers = [(f"h{number}", b"y" * 30_000) for number in range(10)] + [("n" * 1000, b"z")]
    dead = _build(key=b"k" * 100_000, headers=headers)
    assert dead.truncated
    assert dead.key is not None
    assert len(base64.b64decode(dead.key)) == 4096
    kept = sum(len(h.key) + len(base64.b64decode(h.value or "")) for h in dead.headers)
    assert kept <= 64 * 1024
    assert [h.key for h in dead.headers][:2] == ["h0", "h1"]
    assert all(len(h.key) <= 256 for h in dead.headers)
    assert len(encode_json(dead)) < 1_000_000
    # The patient id of a key too long to be one is left empty, as for a binary key.
    assert dead.patient_id == ""


@given(
    value=st.one_of(st.none(), st.binary(max_size=3000)),
    limit=st.integers(min_value=1024, max_value=2048),
)
@settings(max_examples=60)
def test_whatever_the_value_the_dead_letter_says_whether_it_is_whole(
    value: bytes | None, limit: int
) -> None:
    dead = _build(value=value, max_value_bytes=limit)
    _, kept, _ = original_record(dead)
    if value is None or len(value) <= limit:
        assert kept == value
        assert not dead.truncated
    else:
        assert dead.truncated
        assert kept == value[:limit]
        assert dead.value_length == len(value)
