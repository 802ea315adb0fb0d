"""The integrators' page of the event contract, generated from the schemas: docs/events.md."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from streams.contracts.schemas import EventSchema, SchemaCatalog
from streams.topics import ALL_TOPICS, TopicSpec

TITLE = "medstream events"
REGENERATE_COMMAND = "medstream schemas docs"

_PRIMITIVE_TYPES = frozenset(
    {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
)

_ENCODINGS = [
    ("`{`", "JSON: one UTF-8 object; leading whitespace is allowed."),
    (
        "`C3 01`",
        "Avro single-object encoding: `C3 01`, then the 8-byte little-endian CRC-64-AVRO "
        "fingerprint of the schema's Parsing Canonical Form, then the Avro binary body.",
    ),
    (
        "`00`",
        "Confluent schema-registry framing: `00`, then the 4-byte big-endian schema id, "
        "then the Avro binary body.",
    ),
]

_INTRO = f"""\
# {TITLE}

<!-- Generated from schemas/*.avsc by `{REGENERATE_COMMAND}`. Do not edit by hand. -->

This page is for the teams that publish events to medstream or consume what it publishes. It is
generated from the Avro schemas under `schemas/`, which are the source of truth of the contract:
one record schema per event, namespace `io.medstream.events`.

## Records on the wire

- **Key**: every topic is keyed by the event's `patient_id`, encoded in UTF-8, so that one
  patient's events stay in order on one partition.
- **Topic names**: the names below are the defaults. A deployment may prepend a prefix to every
  topic (`MEDSTREAM_TOPIC_PREFIX`; with `prod.`, `medication-events` is
  `prod.medication-events`).
- **Value**: one event, in one of three encodings, told apart by its first bytes:

{{encodings}}

Input topics accept all three; the Confluent framing needs a schema registry
(`MEDSTREAM_SCHEMA_REGISTRY_URL`). medstream publishes JSON by default and Avro single-object
encoding with `MEDSTREAM_OUTPUT_ENCODING=avro`.

Each event below shows its fingerprint as a 64-bit number in hexadecimal; on the wire its bytes
come least significant first, as the single-object header shown beside it spells out.

In JSON, `timestamp-millis` values are ISO-8601 strings with an offset (any offset is read,
e.g. `2025-03-01T09:00:00+01:00`; medstream writes UTC, `2025-03-01T08:00:00Z`), `date` values
are `YYYY-MM-DD`, and enum values are their symbol.
`event_type` names the event and is required. An optional field may be left out; fields the
schema does not know are ignored, so that producers can add optional fields ahead of consumers.
A type ending in `?` may be null.
"""


@dataclass
class _Section:
    """What one event's section needs: its nested records, in the order they are defined."""

    records: list[dict[str, Any]] = field(default_factory=list)
    named: dict[str, dict[str, Any]] = field(default_factory=dict)


def _short(full_name: str) -> str:
    return full_name.rpartition(".")[2]


def _code(text: str) -> str:
    # GitHub tables end a cell at any "|", even inside a code span, unless it is escaped.
    return "`" + text.replace("|", "\\|") + "`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading made of letters, digits, spaces and hyphens."""
    return "".join(c for c in heading.lower().replace(" ", "-") if c.isalnum() or c in "-_")


def _named_type(definition: dict[str, Any]) -> str:
    name = _short(definition["name"])
    kind = definition["type"]
    if kind == "enum":
        return f"enum {name} {{{', '.join(definition['symbols'])}}}"
    if kind == "fixed":
        return f"fixed {name}({definition['size']})"
    return f"record {name}"


def _render_type(schema: Any, section: _Section) -> str:
    """A readable type, from a fastavro-parsed schema (full names, references as strings)."""
    if isinstance(schema, str):
        if schema in _PRIMITIVE_TYPES:
            return schema
        return _named_type(section.named[schema])
    if isinstance(schema, list):
        branches = [branch for branch in schema if branch != "null"]
        shown = " | ".join(_render_type(branch, section) for branch in branches)
        if len(branches) == len(schema):
            return shown
        return f"{shown}?" if len(branches) == 1 else f"({shown})?"
    kind = schema["type"]
    logical = schema.get("logicalType")
    if logical == "decimal":
        return f"decimal({schema.get('precision')}, {schema.get('scale', 0)})"
    if logical:
        return str(logical)
    if kind == "array":
        return f"array<{_render_type(schema['items'], section)}>"
    if kind == "map":
        return f"map<string, {_render_type(schema['values'], section)}>"
    if kind in ("record", "error", "enum", "fixed"):
        if schema["name"] in section.named:  # a nested record's table renders it again
            return _named_type(schema)
        # Defined before its fields are rendered: a record may refer to itself.
        section.named[schema["name"]] = schema
        if kind in ("record", "error"):
            section.records.append(schema)
            for item in schema["fields"]:
                _render_type(item["type"], section)
        return _named_type(schema)
    return _render_type(kind, section)


def _presence(item: dict[str, Any], event_name: str) -> str:
    if item["name"] == "event_type" and item.get("default") == event_name:
        return f"required, always {_code(json.dumps(event_name))}"
    if "default" in item:
        return f"optional, default {_code(json.dumps(item['default']))}"
    if isinstance(item["type"], list) and "null" in item["type"]:
        return "required, may be null"
    return "required"


def _fields_table(record: dict[str, Any], section: _Section, event_name: str) -> list[str]:
    lines = ["| field | type | required | description |", "|---|---|---|---|"]
    for item in record["fields"]:
        lines.append(
            f"| {_code(item['name'])} | {_code(_render_type(item['type'], section))} "
            f"| {_presence(item, event_name)} | {_cell(item.get('doc', ''))} |"
        )
    return lines


def _topics_of(name: str) -> list[TopicSpec]:
    return [spec for spec in ALL_TOPICS if name in spec.event_types]


def _event_order(catalog: SchemaCatalog) -> list[EventSchema]:
    """Events in the order of the topics table, then any event that is on no topic."""
    ordered: list[EventSchema] = []
    for spec in ALL_TOPICS:
        for name in spec.event_types:
            event = catalog.by_name(name)
            if event is not None and event not in ordered:
                ordered.append(event)
    return ordered + [event for event in catalog if event not in ordered]


def _topics_table(catalog: SchemaCatalog) -> list[str]:
    lines = ["## Topics", "", "| topic | direction | events |", "|---|---|---|"]
    for spec in ALL_TOPICS:
        events = ", ".join(
            f"[{name}](#{_anchor(name)})" if catalog.by_name(name) else name
            for name in spec.event_types
        )
        if spec.carries is not None:
            events = spec.carries
        lines.append(f"| `{spec.base_name}` | {spec.direction.value} | {events} |")
    return [*lines, ""]


def _event_section(event: EventSchema) -> list[str]:
    schema = event.parsed
    section = _Section()
    section.named[schema["name"]] = schema
    topics = ", ".join(
        f"`{spec.base_name}` ({spec.direction.value})" for spec in _topics_of(event.name)
    )
    number = int.from_bytes(event.fingerprint, "little")
    header = " ".join(f"{byte:02X}" for byte in b"\xc3\x01" + event.fingerprint)
    lines = [
        f"## {event.name}",
        "",
        _cell(schema.get("doc", "")),
        "",
        f"- Topic: {topics or 'none'}",
        f"- Schema: `schemas/{event.name}.avsc`, full name `{event.full_name}`",
        f"- Fingerprint (CRC-64-AVRO): `{number:016x}`; single-object header `{header}`",
        "",
        *_fields_table(schema, section, event.name),
        "",
    ]
    # Nested records are found while the tables are rendered, so the list grows as it is read.
    index = 0
    while index < len(section.records):
        record = section.records[index]
        index += 1
        lines += [
            f"### {_short(record['name'])}",
            "",
            f"{_cell(record.get('doc', ''))} Defined in {event.name}.".strip(),
            "",
            *_fields_table(record, section, event.name),
            "",
        ]
    return lines


def render_events_markdown(catalog: SchemaCatalog) -> str:
    """The Markdown page "medstream events": encodings, topics and every event's fields."""
    encodings = "\n".join(
        ["| first bytes | encoding |", "|---|---|"]
        + [f"| {first} | {encoding} |" for first, encoding in _ENCODINGS]
    )
    lines = [_INTRO.replace("{encodings}", encodings), *_topics_table(catalog)]
    for event in _event_order(catalog):
        lines += _event_section(event)
    return "\n".join(lines).rstrip("\n") + "\n"
