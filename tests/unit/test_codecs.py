"""Bytes to events and back: round trips, precise validation messages, no patient data in
messages, decode errors, and robustness against arbitrary and corrupted input."""

from __future__ import annotations

import io
import json
import tracemalloc
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastavro import schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.contracts.codecs import (
    AVRO_SINGLE_OBJECT_MARKER,
    ContractError,
    DecodeError,
    EventDecoder,
    EventEncoder,
    EventValidationError,
    SchemaNotCachedError,
    encode_avro,
    encode_confluent,
    encode_json,
    scrub,
    validate_event,
)
from streams.contracts.models import (
    EVENT_MODELS,
    AdminAlert,
    AuditRecord,
    ContactChannel,
    ContactPreferencesSet,
    DeadLetter,
    DoseMissed,
    DoseSkipped,
    DoseTaken,
    Event,
    InteractionWarning,
    MedicationDiscontinued,
    MedicationPrescribed,
    NotificationOutcome,
    QuietHours,
    RecordHeader,
    RefillAlert,
    RefillDispensed,
    ReminderDue,
    ScheduleCleared,
    ScheduleSet,
)
from streams.contracts.schemas import EventSchema, SchemaCatalog, default_catalog, rabin_fingerprint
from streams.contracts.vocabulary import (
    ChannelKind,
    DeliveryStatus,
    RefillReason,
    Severity,
    Weekday,
)
from streams.settings import OutputEncoding
from streams.topics import MEDICATION_EVENTS, SCHEDULE_EVENTS

CATALOG = default_catalog()
# A local time with an offset and microseconds: models keep UTC milliseconds.
T0 = datetime(2026, 3, 29, 1, 30, 15, 123456, tzinfo=ZoneInfo("Europe/Berlin"))
T1 = T0 + timedelta(hours=2, minutes=5)
ENVELOPE: dict[str, Any] = {"patient_id": "patient-1", "occurred_at": T0}

SAMPLES: list[Event] = [
    MedicationPrescribed(
        event_id="evt-prescribed",
        **ENVELOPE,
        medication_id="med-1",
        name="Warfarin sodium 5 mg tablet",
        rxnorm_code="855332",
        dose_quantity=1.5,
        dose_unit="tablet",
        supply_quantity=30.0,
        refills_remaining=2,
        refill_threshold_days=10,
        route="26643006",
    ),
    MedicationDiscontinued(
        event_id="evt-discontinued", **ENVELOPE, medication_id="med-1", reason="bleeding risk"
    ),
    DoseTaken(
        event_id="evt-taken",
        **ENVELOPE,
        medication_id="med-1",
        quantity=0.5,
        taken_at=T1,
        scheduled_for=T0,
    ),
    DoseSkipped(
        event_id="evt-skipped", **ENVELOPE, medication_id="med-1", scheduled_for=T1, reason="ill"
    ),
    RefillDispensed(
        event_id="evt-refill", **ENVELOPE, medication_id="med-1", quantity=60.0, refills_remaining=1
    ),
    ScheduleSet(
        event_id="evt-schedule",
        **ENVELOPE,
        medication_id="med-1",
        timezone="America/New_York",
        times_of_day=["08:00", "20:00:30"],
        days_of_week=[Weekday.MON, Weekday.THU, Weekday.SUN],
        start_date=date(2026, 3, 1),
        end_date=date(2026, 12, 31),
    ),
    ScheduleCleared(event_id="evt-cleared", **ENVELOPE, medication_id="med-1"),
    ContactPreferencesSet(
        event_id="evt-contact",
        **ENVELOPE,
        channels=[
            ContactChannel(kind=ChannelKind.WEBHOOK, target="https://hooks.example.org/p1"),
            ContactChannel(kind=ChannelKind.EMAIL, target="patient@example.org"),
        ],
        timezone="Europe/Berlin",
        quiet_hours=QuietHours(start="22:00", end="07:00"),
        caregiver_channels=[ContactChannel(kind=ChannelKind.CONSOLE, target="stdout")],
    ),
    ReminderDue(
        event_id="evt-reminder",
        **ENVELOPE,
        reminder_id="rem-1",
        medication_id="med-1",
        medication_name="Warfarin",
        dose_quantity=1.0,
        dose_unit="tablet",
        scheduled_for=T1,
    ),
    DoseMissed(
        event_id="evt-missed",
        **ENVELOPE,
        reminder_id="rem-1",
        medication_id="med-1",
        scheduled_for=T1,
        grace_minutes=30,
        medication_name="Warfarin",
    ),
    RefillAlert(
        event_id="evt-refill-alert",
        **ENVELOPE,
        alert_id="alert-1",
        medication_id="med-1",
        medication_name="Warfarin",
        reason=RefillReason.LOW_SUPPLY,
        supply_quantity=4.0,
        days_of_supply_remaining=2.5,
        refills_remaining=0,
    ),
    InteractionWarning(
        event_id="evt-warning",
        **ENVELOPE,
        warning_id="warn-1",
        medication_ids=["med-1", "med-2"],
        medication_names=["Warfarin", "Aspirin"],
        severity=Severity.MAJOR,
        description="Increased bleeding risk.",
        source="ONC high-priority list",
    ),
    NotificationOutcome(
        event_id="evt-outcome",
        **ENVELOPE,
        notification_id="note-1",
        source_event_id="evt-reminder",
        source_event_type="ReminderDue",
        channel="webhook#0",
        status=DeliveryStatus.FAILED,
        attempts=3,
        error="HTTP 503",
    ),
    DeadLetter(
        event_id="dead-letter:medication-events:0:42",
        **ENVELOPE,
        original_topic="medication-events",
        partition=0,
        offset=42,
        key="cGF0aWVudC0x",
        value="e30=",
        headers=[RecordHeader(key="trace", value="AAE="), RecordHeader(key="empty")],
        error_type="DecodeError",
        error_message="empty record value",
        failed_at=T1,
        truncated=True,
        value_length=900_000,
        value_sha256="ab" * 32,
    ),
    AdminAlert(
        event_id="evt-admin",
        patient_id="",
        occurred_at=T0,
        alert_id="alert-2",
        alert_type="DELIVERY_FAILED",
        message="Delivery kept failing.",
        source_event_id="evt-reminder",
        details={"channel": "webhook#0", "attempts": "3"},
    ),
    AuditRecord(
        event_id="evt-audit",
        occurred_at=T0,
        audit_id="audit-1",
        actor="operator",
        action="replay",
        target="dead-letters",
        parameters={"from_offset": "0"},
        outcome="ok",
    ),
]
BY_TYPE = {sample.EVENT_TYPE: sample for sample in SAMPLES}


def _minimal(event: Event) -> Event:
    """The same event with every optional field left out."""
    model = type(event)
    required = {name for name, info in model.model_fields.items() if info.is_required()}
    return model.model_validate(event.model_dump(include=required | {"event_type"}))


ALL_SAMPLES = SAMPLES + [_minimal(sample) for sample in SAMPLES]
SAMPLE_IDS = [
    f"{s.EVENT_TYPE}-{'full' if i < len(SAMPLES) else 'minimal'}" for i, s in enumerate(ALL_SAMPLES)
]


def _schema(event: Event) -> EventSchema:
    schema = CATALOG.by_name(event.EVENT_TYPE)
    assert schema is not None
    return schema


class StubRegistry:
    """A WriterSchemaSource holding a fixed set of parsed schemas by id."""

    def __init__(self, schemas: dict[int, dict[str, Any]]) -> None:
        self.schemas = schemas
        self.asked: list[int] = []

    def cached(self, schema_id: int) -> dict[str, Any] | None:
        self.asked.append(schema_id)
        return self.schemas.get(schema_id)


REGISTRY_IDS = {schema.name: number for number, schema in enumerate(CATALOG, start=1)}
REGISTRY = StubRegistry({REGISTRY_IDS[schema.name]: schema.parsed for schema in CATALOG})
DECODER = EventDecoder(CATALOG)
REGISTRY_DECODER = EventDecoder(CATALOG, REGISTRY)


def _encodings(event: Event) -> dict[str, bytes]:
    schema = _schema(event)
    return {
        "json": encode_json(event),
        "avro": encode_avro(schema, event),
        "confluent": encode_confluent(REGISTRY_IDS[schema.name], schema, event),
    }


def _message(data: bytes | None, decoder: EventDecoder = DECODER, **kwargs: Any) -> str:
    with pytest.raises(ContractError) as caught:
        decoder.decode(data, **kwargs)
    return caught.value.message


# --- round trips ----------------------------------------------------------------------------


def test_there_is_a_sample_of_every_event() -> None:
    assert set(BY_TYPE) == set(EVENT_MODELS)
    assert len(SAMPLES) == len(EVENT_MODELS)


def test_samples_use_every_optional_field() -> None:
    # The full samples exercise the non-null branch of every union and every default override.
    for sample in SAMPLES:
        for name, info in type(sample).model_fields.items():
            if name not in ("event_type", "patient_id") and not info.is_required():
                assert getattr(sample, name) != info.default, f"{sample.EVENT_TYPE}.{name}"


@pytest.mark.parametrize("event", ALL_SAMPLES, ids=SAMPLE_IDS)
def test_json_round_trip(event: Event) -> None:
    decoded = DECODER.decode(encode_json(event))
    assert type(decoded) is type(event)
    assert decoded == event


@pytest.mark.parametrize("event", ALL_SAMPLES, ids=SAMPLE_IDS)
def test_avro_single_object_round_trip(event: Event) -> None:
    data = encode_avro(_schema(event), event)
    assert data[:2] == AVRO_SINGLE_OBJECT_MARKER
    assert data[2:10] == _schema(event).fingerprint
    assert DECODER.decode(data) == event


@pytest.mark.parametrize("event", ALL_SAMPLES, ids=SAMPLE_IDS)
def test_confluent_round_trip_with_a_registry(event: Event) -> None:
    registry = StubRegistry({7: _schema(event).parsed})
    data = encode_confluent(7, _schema(event), event)
    assert data[:5] == b"\x00\x00\x00\x00\x07"
    assert EventDecoder(CATALOG, registry).decode(data) == event
    assert registry.asked == [7]


def test_timestamps_are_normalised_to_utc_milliseconds() -> None:
    event = BY_TYPE["DoseTaken"]
    assert event.occurred_at == datetime(2026, 3, 29, 0, 30, 15, 123000, tzinfo=UTC)
    assert event.occurred_at.utcoffset() == timedelta(0)
    assert DECODER.decode(encode_json(event)).occurred_at.microsecond == 123000


def test_confluent_reader_resolves_an_older_writer_schema() -> None:
    # A writer that did not know refill_threshold_days yet: the reader's default fills it.
    schema = _schema(BY_TYPE["MedicationPrescribed"])
    older = json.loads(json.dumps(schema.source))
    older["fields"] = [f for f in older["fields"] if f["name"] != "refill_threshold_days"]
    body = io.BytesIO()
    schemaless_writer(body, older, BY_TYPE["MedicationPrescribed"].model_dump(mode="python"))
    decoder = EventDecoder(CATALOG, StubRegistry({11: older}))
    event = decoder.decode(b"\x00\x00\x00\x00\x0b" + body.getvalue())
    assert isinstance(event, MedicationPrescribed)
    assert event.refill_threshold_days == 7
    assert event == BY_TYPE["MedicationPrescribed"].model_copy(update={"refill_threshold_days": 7})


def test_a_writer_without_route_reads_as_no_route() -> None:
    # Schemas before issue 13 had no route: the reader's default (null) fills it.
    schema = _schema(BY_TYPE["MedicationPrescribed"])
    older = json.loads(json.dumps(schema.source))
    older["fields"] = [f for f in older["fields"] if f["name"] != "route"]
    body = io.BytesIO()
    schemaless_writer(body, older, BY_TYPE["MedicationPrescribed"].model_dump(mode="python"))
    decoder = EventDecoder(CATALOG, StubRegistry({12: older}))
    event = decoder.decode(b"\x00\x00\x00\x00\x0c" + body.getvalue())
    assert isinstance(event, MedicationPrescribed)
    assert event.route is None


# --- fingerprints ---------------------------------------------------------------------------


def _crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO exactly as the Avro specification spells it (Schema Fingerprints)."""
    empty = 0xC15D213AA4D7A795
    table = []
    for index in range(256):
        value = index
        for _ in range(8):
            value = (value >> 1) ^ (empty & -(value & 1))
        table.append(value)
    result = empty
    for byte in data:
        result = (result >> 8) ^ table[(result ^ byte) & 0xFF]
    return result


@pytest.mark.parametrize(
    ("schema", "number"), [("int", 0x7275D51A3F395C8F), ("string", 0x8F014872634503C7)]
)
def test_rabin_fingerprint_matches_the_published_test_vectors(schema: str, number: int) -> None:
    canonical = to_parsing_canonical_form(schema)
    assert _crc64_avro(canonical.encode()) == number
    # fastavro spells the fingerprint as the hex of its little-endian bytes.
    assert fingerprint(canonical, "CRC-64-AVRO") == number.to_bytes(8, "little").hex()
    # Single-object encoding puts the 64-bit number on the wire least significant byte first.
    assert rabin_fingerprint(schema) == number.to_bytes(8, "little")  # type: ignore[arg-type]


def test_int_fingerprint_bytes_as_other_implementations_write_them() -> None:
    assert rabin_fingerprint("int") == bytes.fromhex("8f5c393f1ad57572")  # type: ignore[arg-type]


@pytest.mark.parametrize("schema", list(CATALOG), ids=CATALOG.names())
def test_catalog_fingerprints_follow_the_specification(schema: EventSchema) -> None:
    canonical = to_parsing_canonical_form(schema.source).encode()
    assert schema.fingerprint == _crc64_avro(canonical).to_bytes(8, "little")
    assert CATALOG.by_fingerprint(schema.fingerprint) is schema


# --- precise validation messages ------------------------------------------------------------

SCHEDULE: dict[str, Any] = {
    "event_id": "evt-1",
    "event_type": "ScheduleSet",
    "patient_id": "patient-1",
    "occurred_at": "2026-01-01T08:00:00+01:00",
    "medication_id": "med-1",
    "timezone": "Europe/Berlin",
    "times_of_day": ["08:00"],
}
PRESCRIBED: dict[str, Any] = {
    "event_id": "evt-2",
    "event_type": "MedicationPrescribed",
    "patient_id": "patient-1",
    "occurred_at": "2026-01-01T08:00:00Z",
    "medication_id": "med-1",
    "name": "Warfarin",
    "dose_quantity": 5.0,
    "dose_unit": "mg",
    "supply_quantity": 30.0,
    "refills_remaining": 2,
}
TIME_FORMAT = "must be a 24-hour local time 'HH:MM' or 'HH:MM:SS'"


def _json(payload: dict[str, Any], **changes: Any) -> bytes:
    merged = {**payload, **changes}
    return json.dumps({k: v for k, v in merged.items() if v is not ...}).encode()


def test_the_base_payloads_are_valid() -> None:
    assert isinstance(DECODER.decode(_json(SCHEDULE)), ScheduleSet)
    assert isinstance(DECODER.decode(_json(PRESCRIBED)), MedicationPrescribed)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (_json(SCHEDULE, event_type="Nope"), "event_type: not an event type of the contract"),
        (_json(SCHEDULE, event_id=...), "event_id: Field required"),
        (_json(SCHEDULE, event_type=...), "event_type: Field required"),
        (_json(SCHEDULE, event_type=5), "event_type: must be a string"),
        (
            _json(PRESCRIBED, dose_quantity=0),
            "MedicationPrescribed: dose_quantity: Input should be greater than 0",
        ),
        (
            _json(PRESCRIBED, dose_quantity=-2.5),
            "MedicationPrescribed: dose_quantity: Input should be greater than 0",
        ),
        (_json(SCHEDULE, timezone="Mars/Olympus"), "ScheduleSet: timezone: unknown IANA time zone"),
        (_json(SCHEDULE, times_of_day=["8:00"]), f"ScheduleSet: times_of_day.0: {TIME_FORMAT}"),
        (
            _json(SCHEDULE, times_of_day=["07:00", "25:00"]),
            f"ScheduleSet: times_of_day.1: {TIME_FORMAT}",
        ),
        (_json(SCHEDULE, times_of_day=["08:60"]), f"ScheduleSet: times_of_day.0: {TIME_FORMAT}"),
        (_json(SCHEDULE, times_of_day=["08:00:60"]), f"ScheduleSet: times_of_day.0: {TIME_FORMAT}"),
        (
            _json(SCHEDULE, times_of_day=["08:00", "08:00:00"]),
            "ScheduleSet: times_of_day: times must not repeat",
        ),
        (
            _json(SCHEDULE, times_of_day=[]),
            "ScheduleSet: times_of_day: List should have at least 1 item after validation, not 0",
        ),
        (
            _json(SCHEDULE, start_date="2026-02-01", end_date="2026-01-31"),
            "ScheduleSet: event: end_date is before start_date",
        ),
        (
            _json(PRESCRIBED, supply_quantity=-1.0),
            "MedicationPrescribed: supply_quantity: Input should be greater than or equal to 0",
        ),
        (
            _json(PRESCRIBED, refills_remaining="2"),
            "MedicationPrescribed: refills_remaining: Input should be a valid integer",
        ),
        (
            _json(SCHEDULE, occurred_at="2026-01-01T08:00:00"),
            "ScheduleSet: occurred_at: Input should have timezone info",
        ),
        (
            _json(SCHEDULE, days_of_week=["mon", "tue", "mon"]),
            "ScheduleSet: days_of_week: days must not repeat",
        ),
        (
            _json(SCHEDULE, days_of_week=["mon", "funday"]),
            "ScheduleSet: days_of_week.1: Input should be "
            "'mon', 'tue', 'wed', 'thu', 'fri', 'sat' or 'sun'",
        ),
    ],
    ids=lambda value: None if isinstance(value, bytes) else value[:60],
)
def test_validation_messages(data: bytes, expected: str) -> None:
    with pytest.raises(EventValidationError) as caught:
        DECODER.decode(data)
    assert caught.value.message == expected
    assert str(caught.value) == expected
    assert caught.value.error_type == "ValidationError"


def test_every_broken_rule_is_reported_up_to_five() -> None:
    message = _message(
        _json(PRESCRIBED, dose_quantity=0, supply_quantity=-1.0, refills_remaining="2")
    )
    assert message == (
        "MedicationPrescribed: dose_quantity: Input should be greater than 0; "
        "supply_quantity: Input should be greater than or equal to 0; "
        "refills_remaining: Input should be a valid integer"
    )
    many = _message(_json({"event_type": "MedicationPrescribed", "event_id": "e"}))
    assert many.startswith("MedicationPrescribed: patient_id: Field required; ")
    # MedicationPrescribed has eight required fields besides event_id and event_type.
    assert many.endswith("; and 3 more")
    assert many.count("Field required") == 5


def test_an_event_of_another_topic_is_refused() -> None:
    data = _json(PRESCRIBED)
    assert (
        _message(data, allowed_types=SCHEDULE_EVENTS.event_types, topic="schedule-events")
        == "event_type: MedicationPrescribed does not belong on topic 'schedule-events'"
    )
    assert (
        _message(data, allowed_types=SCHEDULE_EVENTS.event_types)
        == "event_type: MedicationPrescribed does not belong here"
    )
    assert isinstance(DECODER.decode(data, allowed_types=MEDICATION_EVENTS.event_types), Event)


def test_an_avro_body_must_carry_its_schemas_event_type() -> None:
    # Written with the MedicationPrescribed schema but claiming to be a DoseTaken: refused
    # (it would otherwise validate as a DoseTaken, whose fields it happens to have).
    schema = _schema(BY_TYPE["MedicationPrescribed"])
    for claimed, shown in (
        ("DoseTaken", "DoseTaken"),
        ("John Smith", "<not an event type>"),
        ("JohnSmith", "<not an event type>"),
    ):
        body = BY_TYPE["MedicationPrescribed"].model_dump(mode="python")
        body["event_type"] = claimed
        buffer = io.BytesIO(AVRO_SINGLE_OBJECT_MARKER + schema.fingerprint)
        buffer.seek(0, io.SEEK_END)
        schemaless_writer(buffer, schema.parsed, body)
        expected = f"event_type: {shown} does not match the Avro schema MedicationPrescribed"
        assert _message(buffer.getvalue()) == expected
        confluent = b"\x00" + REGISTRY_IDS[schema.name].to_bytes(4, "big")
        assert _message(confluent + buffer.getvalue()[10:], REGISTRY_DECODER) == expected


# --- no patient data in messages ------------------------------------------------------------

NAME = "John Smith"
EMAIL = "john.smith@example.org"
PHONE = "+1 555 0100 4242"
SECRETS = (NAME, EMAIL, PHONE, "John", "Smith", "john.smith", "0100 4242")


def _leaky_payloads() -> list[dict[str, Any]]:
    long_text = f"{NAME} {EMAIL} {PHONE} " * 40  # over 1000 characters
    return [
        {**PRESCRIBED, "patient_id": EMAIL, "name": NAME, "dose_unit": PHONE, "dose_quantity": 0},
        {**PRESCRIBED, "name": long_text, "dose_unit": [PHONE], "refills_remaining": NAME},
        {**PRESCRIBED, "patient_id": EMAIL * 10, "rxnorm_code": PHONE},
        {
            "event_id": EMAIL,
            "event_type": "MedicationDiscontinued",
            "patient_id": PHONE,
            "occurred_at": NAME,
            "medication_id": "med-1",
            "reason": long_text,
        },
        {
            "event_id": "evt-3",
            "event_type": "ContactPreferencesSet",
            "patient_id": NAME,
            "occurred_at": "2026-01-01T08:00:00Z",
            "channels": [
                {"kind": NAME, "target": f"mailto:{EMAIL}"},
                {"kind": "email", "target": EMAIL * 50},
            ],
            "caregiver_channels": [{"kind": "sms", "target": PHONE}],
            "timezone": f"{NAME}/{EMAIL}",
            "quiet_hours": {"start": PHONE, "end": NAME},
        },
        {**SCHEDULE, "patient_id": EMAIL, "times_of_day": [NAME, PHONE], "timezone": EMAIL},
        {**SCHEDULE, "days_of_week": [NAME, EMAIL], "start_date": PHONE, "end_date": EMAIL},
        {
            "event_id": "evt-4",
            "event_type": "DoseSkipped",
            "patient_id": NAME,
            "occurred_at": "2026-01-01T08:00:00Z",
            "medication_id": EMAIL,
            "scheduled_for": PHONE,
            "reason": {"who": NAME},
        },
    ]


@pytest.mark.parametrize("payload", _leaky_payloads(), ids=lambda p: p["event_type"])
def test_messages_never_carry_patient_data(payload: dict[str, Any]) -> None:
    message = _message(json.dumps(payload).encode())
    assert message.startswith(f"{payload['event_type']}: ")
    for secret in SECRETS:
        assert secret not in message


def test_patient_data_is_absent_even_where_the_rules_name_the_field() -> None:
    message = _message(_json(SCHEDULE, timezone=EMAIL, times_of_day=[NAME]))
    assert message == (
        f"ScheduleSet: timezone: unknown IANA time zone; times_of_day.0: {TIME_FORMAT}"
    )


@pytest.mark.parametrize(
    "event_type",
    ["John Smith <john@x.org>", EMAIL, PHONE, "Dose Taken", "x" * 65, "ünïcode", "JohnSmith1942"],
)
def test_an_unknown_event_type_is_never_echoed(event_type: str) -> None:
    # Not even an identifier-shaped one: "JohnSmith1942" is a name as much as a type.
    message = _message(_json(SCHEDULE, event_type=event_type, patient_id=NAME))
    assert message == "event_type: not an event type of the contract"
    topic_message = _message(
        _json(SCHEDULE, event_type=event_type), allowed_types=("ScheduleSet",), topic="t"
    )
    assert event_type not in topic_message


def test_malformed_json_with_patient_data_is_not_echoed() -> None:
    message = _message(f'{{"name": "{NAME}", "email": "{EMAIL}" "phone": 1'.encode())
    assert message.startswith("not valid JSON: ")
    for secret in SECRETS:
        assert secret not in message


# --- decode errors --------------------------------------------------------------------------

PRESCRIBED_AVRO = encode_avro(
    _schema(BY_TYPE["MedicationPrescribed"]), BY_TYPE["MedicationPrescribed"]
)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "empty record value"),
        (None, "empty record value"),
        (b'{"event_type": "\xff"}', "not valid UTF-8 (at byte 16)"),
        (b'{"event_id": ', "not valid JSON: Expecting value (line 1, column 14)"),
        (b'{"a": 1} {"b": 2}', "not valid JSON: Extra data (line 1, column 10)"),
        (b'{"a": ' + b"7" * 5000 + b"}", "not valid JSON: a number has too many digits"),
        (b'{"a": ' + b"[" * 50000 + b"]" * 50000 + b"}", "not valid JSON: nested too deeply"),
        (
            b'[{"event_type": "DoseTaken"}]',
            "unrecognised encoding: first byte 0x5b is none of '{' (JSON), "
            "C3 01 (Avro single-object) or 00 (Confluent schema registry)",
        ),
        (
            b"\x07\x01\x02",
            "unrecognised encoding: first byte 0x07 is none of '{' (JSON), "
            "C3 01 (Avro single-object) or 00 (Confluent schema registry)",
        ),
        (b"\xc3\x01\x81\x20", "truncated Avro single-object header (needs 10 bytes)"),
        (
            b"\xc3\x01\x01\x02\x03\x04\x05\x06\x07\x08\x00",
            "unknown Avro schema fingerprint 0807060504030201",
        ),
        (PRESCRIBED_AVRO[:-3], "malformed or truncated Avro body (EOFError)"),
        (PRESCRIBED_AVRO + b"\x00\x01\x02", "3 unexpected bytes after the Avro body"),
        (
            b"\x00\x00\x00\x00\x07" + PRESCRIBED_AVRO[10:],
            "Confluent schema-registry framing (schema id 7) but no schema registry is "
            "configured (MEDSTREAM_SCHEMA_REGISTRY_URL)",
        ),
        (b"\x00\x00\x01", "truncated Confluent header (needs 5 bytes)"),
    ],
    ids=lambda value: None if isinstance(value, bytes | None) else value[:50],
)
def test_decode_errors(data: bytes | None, expected: str) -> None:
    with pytest.raises(DecodeError) as caught:
        DECODER.decode(data)
    assert caught.value.message == expected
    assert caught.value.error_type == "DecodeError"


def test_a_json_value_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(EventValidationError, match=r"^the event is not an object$"):
        validate_event([{"event_type": "DoseTaken"}])
    with pytest.raises(EventValidationError, match=r"^the event is not an object$"):
        validate_event("DoseTaken")


def test_unknown_fingerprint_is_shown_as_the_64_bit_number() -> None:
    number = 0x0123456789ABCDEF
    message = _message(b"\xc3\x01" + number.to_bytes(8, "little") + b"\x00")
    assert message == "unknown Avro schema fingerprint 0123456789abcdef"


def test_confluent_schema_id_missing_from_the_cache() -> None:
    registry = StubRegistry({})
    with pytest.raises(SchemaNotCachedError) as caught:
        EventDecoder(CATALOG, registry).decode(b"\x00\x00\x00\x01\x2c" + PRESCRIBED_AVRO[10:])
    assert caught.value.schema_id == 300
    assert caught.value.message == "schema id 300 is not in the local cache"
    assert isinstance(caught.value, DecodeError)
    assert registry.asked == [300]


def test_confluent_schema_that_is_no_event_of_the_contract() -> None:
    foreign = {"type": "record", "name": "com.example.Other", "fields": []}
    decoder = EventDecoder(CATALOG, StubRegistry({3: foreign}))
    message = _message(b"\x00\x00\x00\x00\x03", decoder)
    assert message == "registry schema id 3 is not an event of this contract"


def test_confluent_writer_schema_that_cannot_be_resolved() -> None:
    incompatible = {
        "type": "record",
        "name": "io.medstream.events.ScheduleCleared",
        "fields": [{"name": "event_id", "type": "int"}],
    }
    decoder = EventDecoder(CATALOG, StubRegistry({4: incompatible}))
    message = _message(b"\x00\x00\x00\x00\x04\x02", decoder)
    assert message.startswith("malformed or truncated Avro body (")


# --- robustness: arbitrary and corrupted bytes ----------------------------------------------


def _check_outcome(data: bytes, decoder: EventDecoder = REGISTRY_DECODER) -> Event | None:
    """decode gives an Event or a ContractError with a message; never anything else."""
    refused: ContractError | None = None
    try:
        event = decoder.decode(data)
    except ContractError as error:  # anything else escapes and fails the test
        refused = error
    if refused is not None:
        assert isinstance(refused, DecodeError | EventValidationError)
        assert refused.message.strip()
        assert str(refused) == refused.message
        return None
    assert isinstance(event, Event)
    # Whatever is accepted can be published again in either encoding, unchanged.
    assert decoder.decode(encode_json(event)) == event
    assert decoder.decode(encode_avro(_schema(event), event)) == event
    return event


FINGERPRINTS = st.sampled_from([schema.fingerprint for schema in CATALOG])
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes(data: bytes) -> None:
    _check_outcome(data)
    _check_outcome(data, DECODER)


@FUZZ
@given(FINGERPRINTS, st.binary(max_size=200))
def test_arbitrary_avro_bodies_behind_a_real_fingerprint(fp: bytes, body: bytes) -> None:
    _check_outcome(AVRO_SINGLE_OBJECT_MARKER + fp + body)


@FUZZ
@given(
    st.one_of(
        st.binary(min_size=4, max_size=4), st.integers(0, 20).map(lambda n: n.to_bytes(4, "big"))
    ),
    st.binary(max_size=200),
)
def test_arbitrary_confluent_records(schema_id: bytes, body: bytes) -> None:
    _check_outcome(b"\x00" + schema_id + body)
    _check_outcome(b"\x00" + schema_id + body, DECODER)


@FUZZ
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_arbitrary_bytes_after_a_brace(rest: bytes) -> None:
    _check_outcome(b"{" + rest)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@FUZZ
@given(st.sampled_from(SAMPLES), st.dictionaries(st.text(max_size=25), JSON_VALUES, max_size=4))
def test_json_objects_with_arbitrary_fields(sample: Event, changes: dict[str, Any]) -> None:
    payload = {**json.loads(encode_json(sample)), **changes}
    _check_outcome(json.dumps(payload).encode())


@pytest.mark.parametrize("event", ALL_SAMPLES, ids=SAMPLE_IDS)
def test_every_truncation_of_every_encoding(event: Event) -> None:
    for name, data in _encodings(event).items():
        for end in range(len(data)):
            assert _check_outcome(data[:end]) is None, f"{name} cut at {end} was accepted"


@FUZZ
@given(
    st.sampled_from(ALL_SAMPLES),
    st.sampled_from(["json", "avro", "confluent"]),
    st.integers(min_value=0),
    st.integers(min_value=0, max_value=255),
)
def test_single_byte_corruption(event: Event, encoding: str, position: int, byte: int) -> None:
    data = bytearray(_encodings(event)[encoding])
    data[position % len(data)] = byte
    _check_outcome(bytes(data))


def _long(value: int) -> bytes:
    """Avro's zig-zag varint encoding of a long."""
    zigzag = (value << 1) ^ (value >> 63)
    out = bytearray()
    while zigzag > 0x7F:
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    out.append(zigzag)
    return bytes(out)


def _envelope(event_type: str) -> bytes:
    return (
        _long(2)
        + b"e1"
        + _long(len(event_type))
        + event_type.encode()
        + _long(2)
        + b"p1"
        + _long(1_700_000_000_000)
    )


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("event_type", "tail"),
    [
        # An array claiming 2**62 items, then nothing.
        ("InteractionWarning", _long(2) + b"w1" + _long(2**62)),
        # A negative block count (with a block size) claiming 2**62 items.
        ("InteractionWarning", _long(2) + b"w1" + _long(-(2**62)) + _long(2**40)),
        # A map with 2**62 entries.
        ("AuditRecord", b"".join(_long(2) + b"xx" for _ in range(4)) + _long(2**62)),
        # A string claiming 2**62 bytes.
        ("ScheduleCleared", _long(2**62)),
        ("ScheduleCleared", _long(-5)),
        # A timestamp out of range.
        ("DoseMissed", _long(2) + b"r1" + _long(2) + b"m1" + _long(2**62)),
    ],
)
def test_absurd_lengths_fail_fast_without_allocating(event_type: str, tail: bytes) -> None:
    data = AVRO_SINGLE_OBJECT_MARKER + _schema(BY_TYPE[event_type]).fingerprint
    tracemalloc.start()
    try:
        message = _message(data + _envelope(event_type) + tail)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert message.startswith("malformed or truncated Avro body (")
    assert peak < 10_000_000


# --- scrub ----------------------------------------------------------------------------------


def test_scrub_removes_payload_strings_and_keeps_the_event_type() -> None:
    payload = {
        "event_type": "DoseTaken",
        "name": NAME,
        "nested": {"contacts": [EMAIL, {"phone": PHONE}]},
        "short": "ab",
        "number": 12345,
    }
    message = f"DoseTaken: {NAME} / {EMAIL} / {PHONE} / ab / 12345 / John"
    assert scrub(message, payload) == (
        "DoseTaken: <redacted> / <redacted> / <redacted> / ab / 12345 / John"
    )


def test_scrub_replaces_the_longest_strings_first() -> None:
    assert scrub("x John Smith y John", {"a": "John", "b": NAME}) == "x <redacted> y <redacted>"


def test_scrub_keeps_the_contracts_own_words() -> None:
    # Field names and vocabulary are fixed texts of the contract, not data a producer sent.
    payload = {"event_type": "ScheduleSet", "days_of_week": ["mon"], "reason": "timezone"}
    message = "timezone: bad; days_of_week.1: Input should be 'mon' or 'tue'"
    assert scrub(message, payload) == message


def test_scrub_of_a_payload_without_strings_changes_nothing() -> None:
    assert scrub("dose_quantity: bad", {"dose_quantity": -1}) == "dose_quantity: bad"
    assert scrub("the event is not an object", [1, 2]) == "the event is not an object"


# --- output encoders ------------------------------------------------------------------------


@pytest.mark.parametrize("event", SAMPLES, ids=[s.EVENT_TYPE for s in SAMPLES])
def test_json_output_carries_offsets_on_every_timestamp(event: Event) -> None:
    data = EventEncoder(CATALOG, OutputEncoding.JSON).encode(event)
    payload = json.loads(data)
    assert payload["event_type"] == event.EVENT_TYPE
    assert payload["occurred_at"].endswith("Z")
    for name in ("taken_at", "scheduled_for", "failed_at"):
        if payload.get(name) is not None:
            assert payload[name].endswith("Z")
            assert datetime.fromisoformat(payload[name]) == getattr(event, name)
    assert datetime.fromisoformat(payload["occurred_at"]) == event.occurred_at
    assert data == encode_json(event)


@pytest.mark.parametrize("event", SAMPLES, ids=[s.EVENT_TYPE for s in SAMPLES])
def test_avro_output_is_single_object_encoding(event: Event) -> None:
    data = EventEncoder(CATALOG, OutputEncoding.AVRO).encode(event)
    assert data.startswith(b"\xc3\x01" + _schema(event).fingerprint)
    assert data == encode_avro(_schema(event), event)
    assert DECODER.decode(data) == event


def test_avro_output_for_an_event_without_a_schema_fails_loudly() -> None:
    encoder = EventEncoder(SchemaCatalog({}), OutputEncoding.AVRO)
    with pytest.raises(LookupError, match=r"^no schema for DoseTaken$"):
        encoder.encode(BY_TYPE["DoseTaken"])
