"""The integrators' page docs/events.md: generated from the schemas, committed, never stale."""

from __future__ import annotations

import re
from typing import Any

import pytest

from streams.contracts.docs import render_events_markdown
from streams.contracts.schemas import SchemaCatalog, default_catalog
from streams.settings import REPOSITORY_ROOT
from streams.topics import ALL_TOPICS

EVENTS_PAGE = REPOSITORY_ROOT / "docs" / "events.md"


@pytest.fixture(scope="module")
def page() -> str:
    return render_events_markdown(default_catalog())


def test_committed_page_is_up_to_date(page: str) -> None:
    committed = EVENTS_PAGE.read_text() if EVENTS_PAGE.exists() else ""
    assert committed == page, (
        "docs/events.md is out of date with schemas/*.avsc; "
        "regenerate it with `medstream schemas docs` and commit it"
    )


def _field_names(schema: Any) -> list[str]:
    """Every field name of a schema, nested records included."""
    if isinstance(schema, list):
        return [name for branch in schema for name in _field_names(branch)]
    if not isinstance(schema, dict):
        return []
    names = []
    for item in schema.get("fields", []):
        names.append(item["name"])
        names += _field_names(item["type"])
    for key in ("items", "values"):
        if key in schema:
            names += _field_names(schema[key])
    return names


def test_every_event_and_field_is_documented(page: str) -> None:
    for event in default_catalog():
        assert f"\n## {event.name}\n" in page
        number = int.from_bytes(event.fingerprint, "little")
        assert f"`{number:016x}`" in page
        for name in _field_names(event.source):
            assert f"| `{name}` |" in page, f"{event.name}.{name} is missing"


def test_nested_records_get_their_own_table(page: str) -> None:
    for record in ("ContactChannel", "QuietHours", "RecordHeader"):
        assert f"\n### {record}\n" in page


def test_every_topic_is_listed_with_its_direction_and_events(page: str) -> None:
    for spec in ALL_TOPICS:
        row = next(line for line in page.splitlines() if line.startswith(f"| `{spec.base_name}` |"))
        assert f"| {spec.direction.value} |" in row
        for event in spec.event_types:
            assert f"[{event}](#{event.lower()})" in row


@pytest.mark.parametrize(
    ("field_type", "shown"),
    [
        ("string", "`string`"),
        ("double", "`double`"),
        ({"type": "long", "logicalType": "timestamp-millis"}, "`timestamp-millis`"),
        (["null", {"type": "int", "logicalType": "date"}], "`date?`"),
        ({"type": "array", "items": "string"}, "`array<string>`"),
        ({"type": "map", "values": "long"}, "`map<string, long>`"),
        (
            {"type": "enum", "name": "Severity", "symbols": ["contraindicated", "major"]},
            "`enum Severity {contraindicated, major}`",
        ),
        (["null", "string", "int"], r"`(string \| int)?`"),
        ({"type": "fixed", "name": "Digest", "size": 32}, "`fixed Digest(32)`"),
        (
            {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2},
            "`decimal(9, 2)`",
        ),
    ],
)
def test_types_are_rendered_readably(field_type: Any, shown: str) -> None:
    schema = {
        "type": "record",
        "name": "Sample",
        "namespace": "io.medstream.events",
        "doc": "A sample.",
        "fields": [{"name": "value", "type": field_type, "doc": "The value."}],
    }
    page = render_events_markdown(SchemaCatalog({"Sample": schema}))
    assert f"| `value` | {shown} |" in page


def test_a_referenced_record_and_a_self_reference_are_shown_by_name() -> None:
    schema = {
        "type": "record",
        "name": "Tree",
        "doc": "A tree.",
        "fields": [
            {"name": "label", "type": "string", "doc": "Its label."},
            {
                "name": "first",
                "type": {
                    "type": "record",
                    "name": "Leaf",
                    "doc": "A leaf.",
                    "fields": [{"name": "weight", "type": "int", "doc": "Weight | grams."}],
                },
                "doc": "The first leaf.",
            },
            {"name": "others", "type": {"type": "array", "items": "Leaf"}, "doc": "More."},
            {"name": "children", "type": {"type": "array", "items": "Tree"}, "doc": "Subtrees."},
        ],
    }
    page = render_events_markdown(SchemaCatalog({"Tree": schema}))
    assert "| `first` | `record Leaf` | required |" in page
    assert "| `others` | `array<record Leaf>` | required |" in page
    assert "| `children` | `array<record Tree>` | required |" in page
    assert len(re.findall(r"^### Leaf$", page, flags=re.MULTILINE)) == 1
    assert r"| Weight \| grams. |" in page
    assert "- Topic: none" in page
