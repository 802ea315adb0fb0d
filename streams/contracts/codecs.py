"""Bytes to validated events and back: JSON, Avro single-object and Confluent framing."""

from __future__ import annotations

import io
import json
from collections.abc import Collection, Iterator, Mapping
from typing import Any, ClassVar, Protocol

from fastavro import schemaless_reader, schemaless_writer
from pydantic import BaseModel, ValidationError

from streams.contracts.models import (
    EVENT_MODELS,
    ContactChannel,
    Event,
    QuietHours,
    RecordHeader,
)
from streams.contracts.schemas import EventSchema, SchemaCatalog
from streams.contracts.vocabulary import (
    ChannelKind,
    DeliveryStatus,
    RefillReason,
    Severity,
    Weekday,
)
from streams.settings import OutputEncoding

AVRO_SINGLE_OBJECT_MARKER = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"
_MAX_REPORTED_ERRORS = 5
# Words of the contract itself (event types, field names, vocabularies): messages are built from
# them, so they are never redacted (else "should be 'mon', 'tue'" would lose 'mon' whenever a
# payload also says "mon"). Showing one of them reveals nothing a producer sent.
_CONTRACT_MODELS: tuple[type[BaseModel], ...] = (
    *EVENT_MODELS.values(),
    ContactChannel,
    QuietHours,
    RecordHeader,
)
_CONTRACT_WORDS = frozenset(
    {
        *EVENT_MODELS,
        *(name for model in _CONTRACT_MODELS for name in model.model_fields),
        *(
            member.value
            for vocabulary in (ChannelKind, DeliveryStatus, RefillReason, Severity, Weekday)
            for member in vocabulary
        ),
    }
)


class ContractError(Exception):
    """An input that does not meet the contract. Its message never contains payload data."""

    error_type: ClassVar[str] = "ContractError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class DecodeError(ContractError):
    """The bytes could not be turned into an event (framing, UTF-8, JSON, Avro)."""

    error_type: ClassVar[str] = "DecodeError"


class SchemaNotCachedError(DecodeError):
    """A Confluent-framed record names a schema id this process has not fetched yet."""

    def __init__(self, schema_id: int) -> None:
        super().__init__(f"schema id {schema_id} is not in the local cache")
        self.schema_id = schema_id


class EventValidationError(ContractError):
    """The event decoded but breaks the contract's rules."""

    error_type: ClassVar[str] = "ValidationError"


class WriterSchemaSource(Protocol):
    """Where Confluent-framed records find their writer schemas (a schema registry)."""

    def cached(self, schema_id: int) -> dict[str, Any] | None:
        """The parsed schema of an id already fetched, else None."""


def string_leaves(value: Any) -> Iterator[str]:
    """Every string inside a decoded JSON value (at any depth)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from string_leaves(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from string_leaves(item)


def scrub(message: str, payload: Any) -> str:
    """Remove from a message any string value the payload carried.

    Messages are built from field names and fixed texts only; this is the second line of defence
    should a library ever echo an input value into its text.
    """
    # Event types are contract words: a message shows one only when it is the contract's own.
    leaves = set(string_leaves(payload)) - _CONTRACT_WORDS
    for leaf in sorted(leaves, key=len, reverse=True):
        if len(leaf) >= 3 and leaf in message:
            message = message.replace(leaf, "<redacted>")
    return message


def describe_validation_error(error: ValidationError) -> str:
    """The pydantic errors as 'field: problem' lines, without any input value."""
    parts = []
    for item in error.errors(include_input=False, include_url=False, include_context=False):
        location = ".".join(str(part) for part in item["loc"]) or "event"
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{location}: {message}")
    extra = len(parts) - _MAX_REPORTED_ERRORS
    text = "; ".join(parts[:_MAX_REPORTED_ERRORS])
    return f"{text}; and {extra} more" if extra > 0 else text


def validate_event(
    payload: Any, allowed_types: Collection[str] | None = None, topic: str | None = None
) -> Event:
    """Validate a decoded payload against the model of its event_type."""
    if not isinstance(payload, dict):
        raise EventValidationError("the event is not an object")
    event_type = payload.get("event_type")
    if event_type is None:
        raise EventValidationError("event_type: Field required")
    if not isinstance(event_type, str):
        raise EventValidationError("event_type: must be a string")
    if "event_id" not in payload:
        raise EventValidationError("event_id: Field required")
    model = EVENT_MODELS.get(event_type)
    if model is None:
        # Never the value itself: an identifier-shaped string may still be a name or an id.
        raise EventValidationError("event_type: not an event type of the contract")
    shown = event_type
    if allowed_types is not None and event_type not in allowed_types:
        where = f"on topic {topic!r}" if topic else "here"
        raise EventValidationError(f"event_type: {shown} does not belong {where}")
    try:
        return model.model_validate(payload)
    except ValidationError as error:
        raise EventValidationError(
            scrub(f"{shown}: {describe_validation_error(error)}", payload)
        ) from None


def _read_avro(data: bytes, writer: dict[str, Any], reader: dict[str, Any] | None) -> Any:
    buffer = io.BytesIO(data)
    try:
        record = schemaless_reader(buffer, writer, reader, return_record_name=False)
    except Exception as error:  # fastavro raises many types on corrupt input
        raise DecodeError(f"malformed or truncated Avro body ({type(error).__name__})") from None
    if buffer.tell() != len(data):
        raise DecodeError(f"{len(data) - buffer.tell()} unexpected bytes after the Avro body")
    return record


def _check_avro_event_type(record: Any, schema_name: str) -> Any:
    # The schema names the event: a body claiming another event_type must not be validated as
    # that other event (a MedicationPrescribed body would otherwise pass as a DoseTaken).
    event_type = record.get("event_type") if isinstance(record, dict) else None
    if event_type != schema_name:
        shown = event_type if event_type in EVENT_MODELS else "<not an event type>"
        raise EventValidationError(
            f"event_type: {shown} does not match the Avro schema {schema_name}"
        )
    return record


class EventDecoder:
    """Decodes records into validated events, telling the encoding from the first bytes."""

    def __init__(
        self, catalog: SchemaCatalog, writer_schemas: WriterSchemaSource | None = None
    ) -> None:
        self.catalog = catalog
        self.writer_schemas = writer_schemas

    def decode(
        self, data: bytes | None, allowed_types: Collection[str] | None = None, topic: str = ""
    ) -> Event:
        """The event in ``data``; raises DecodeError or EventValidationError."""
        return validate_event(self.decode_payload(data), allowed_types, topic or None)

    def decode_payload(self, data: bytes | None) -> Any:
        """The undecorated payload (a dict for well-formed input) before validation."""
        if not data:
            raise DecodeError("empty record value")
        if data[:2] == AVRO_SINGLE_OBJECT_MARKER:
            return self._decode_single_object(data)
        if data[:1] == CONFLUENT_MAGIC:
            return self._decode_confluent(data)
        if data.lstrip(b" \t\r\n")[:1] == b"{":
            return self._decode_json(data)
        raise DecodeError(
            f"unrecognised encoding: first byte 0x{data[0]:02x} is none of '{{' (JSON), "
            "C3 01 (Avro single-object) or 00 (Confluent schema registry)"
        )

    @staticmethod
    def _decode_json(data: bytes) -> Any:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DecodeError(f"not valid UTF-8 (at byte {error.start})") from None
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise DecodeError(
                f"not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
            ) from None
        except RecursionError:
            raise DecodeError("not valid JSON: nested too deeply") from None
        except ValueError:
            # Python refuses integers of more than 4300 digits (int_max_str_digits).
            raise DecodeError("not valid JSON: a number has too many digits") from None

    def _decode_single_object(self, data: bytes) -> Any:
        if len(data) < 10:
            raise DecodeError("truncated Avro single-object header (needs 10 bytes)")
        schema = self.catalog.by_fingerprint(data[2:10])
        if schema is None:
            raise DecodeError(f"unknown Avro schema fingerprint {data[2:10][::-1].hex()}")
        return _check_avro_event_type(_read_avro(data[10:], schema.parsed, None), schema.name)

    def _decode_confluent(self, data: bytes) -> Any:
        if len(data) < 5:
            raise DecodeError("truncated Confluent header (needs 5 bytes)")
        schema_id = int.from_bytes(data[1:5], "big")
        if self.writer_schemas is None:
            raise DecodeError(
                f"Confluent schema-registry framing (schema id {schema_id}) but no schema "
                "registry is configured (MEDSTREAM_SCHEMA_REGISTRY_URL)"
            )
        writer = self.writer_schemas.cached(schema_id)
        if writer is None:
            raise SchemaNotCachedError(schema_id)
        name = str(writer.get("name", ""))
        reader = self.catalog.by_name(name)
        if reader is None:
            raise DecodeError(f"registry schema id {schema_id} is not an event of this contract")
        return _check_avro_event_type(_read_avro(data[5:], writer, reader.parsed), reader.name)


class EventEncoder:
    """Encodes events as JSON or as Avro single-object encoding."""

    def __init__(self, catalog: SchemaCatalog, encoding: OutputEncoding) -> None:
        self.catalog = catalog
        self.encoding = encoding

    def encode(self, event: Event) -> bytes:
        if self.encoding is OutputEncoding.JSON:
            return encode_json(event)
        return encode_avro(self._schema(event), event)

    def _schema(self, event: Event) -> EventSchema:
        schema = self.catalog.by_name(event.EVENT_TYPE)
        if schema is None:
            raise LookupError(f"no schema for {event.EVENT_TYPE}")
        return schema


def encode_json(event: Event) -> bytes:
    """The event as a UTF-8 JSON object (timestamps ISO-8601 with offset)."""
    return event.model_dump_json().encode("utf-8")


def encode_avro(schema: EventSchema, event: Event) -> bytes:
    """The event in Avro single-object encoding: C3 01, fingerprint, body."""
    buffer = io.BytesIO()
    buffer.write(AVRO_SINGLE_OBJECT_MARKER)
    buffer.write(schema.fingerprint)
    schemaless_writer(buffer, schema.parsed, event.model_dump(mode="python"))
    return buffer.getvalue()


def encode_confluent(schema_id: int, schema: EventSchema, event: Event) -> bytes:
    """The event in Confluent framing (used by tests and by producers that need it)."""
    buffer = io.BytesIO()
    buffer.write(CONFLUENT_MAGIC + schema_id.to_bytes(4, "big"))
    schemaless_writer(buffer, schema.parsed, event.model_dump(mode="python"))
    return buffer.getvalue()
