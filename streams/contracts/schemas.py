"""The Avro schemas under `schemas/`: loaded once, parsed, and indexed by name and fingerprint."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, cast

from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

# The package's link to the repository's schemas/, or in an installed wheel their copy.
SCHEMAS_DIR = Path(__file__).parent.parent / "schemas"
RELEASED_DIR = SCHEMAS_DIR / "released"
NAMESPACE = "io.medstream.events"


def rabin_fingerprint(schema: dict[str, Any]) -> bytes:
    """The 8-byte little-endian CRC-64-AVRO fingerprint of a schema's Parsing Canonical Form.

    This is the fingerprint that Avro single-object encoding puts after the C3 01 marker.
    """
    canonical = to_parsing_canonical_form(schema)
    # fastavro spells the fingerprint as the hex of its little-endian bytes ("int" gives
    # 8f5c393f1ad57572 for the number 0x7275d51a3f395c8f): those are the bytes, as they are.
    return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))


@dataclass(frozen=True)
class EventSchema:
    """One event's schema: its source, its fastavro parsed form and its fingerprint."""

    name: str
    source: dict[str, Any]
    parsed: dict[str, Any]
    fingerprint: bytes

    @property
    def full_name(self) -> str:
        return f"{self.source.get('namespace', NAMESPACE)}.{self.name}"


def load_schema_file(path: Path) -> dict[str, Any]:
    """A schema file's JSON, with a clear error for a broken one."""
    try:
        schema = json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path}: not valid JSON: {error}") from None
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise ValueError(f"{path}: an event schema must be an Avro record")
    return schema


class SchemaCatalog:
    """Every event schema of a folder, by event name and by fingerprint."""

    def __init__(self, schemas: dict[str, dict[str, Any]]) -> None:
        self._by_name: dict[str, EventSchema] = {}
        self._by_fingerprint: dict[bytes, EventSchema] = {}
        for name, source in schemas.items():
            event_schema = EventSchema(
                name=name,
                source=source,
                parsed=cast(dict[str, Any], parse_schema(source, _write_hint=False)),
                fingerprint=rabin_fingerprint(source),
            )
            self._by_name[name] = event_schema
            self._by_fingerprint[event_schema.fingerprint] = event_schema

    @classmethod
    def from_directory(cls, directory: Path) -> SchemaCatalog:
        schemas = {}
        for path in sorted(directory.glob("*.avsc")):
            schema = load_schema_file(path)
            if schema["name"] != path.stem:
                raise ValueError(f"{path}: record name {schema['name']!r} differs from file name")
            schemas[schema["name"]] = schema
        return cls(schemas)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def by_name(self, name: str) -> EventSchema | None:
        """The schema of an event, by its short or full name."""
        return self._by_name.get(name.rsplit(".", 1)[-1])

    def by_fingerprint(self, value: bytes) -> EventSchema | None:
        return self._by_fingerprint.get(value)

    def __iter__(self) -> Iterator[EventSchema]:
        return iter([self._by_name[name] for name in self.names()])


@cache
def default_catalog() -> SchemaCatalog:
    """The catalog of the project's `schemas/` folder (loaded once per process)."""
    return SchemaCatalog.from_directory(SCHEMAS_DIR)
