"""Backward compatibility of the event schemas: the released baseline, breaking and safe changes."""

from __future__ import annotations

import copy
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.utils import generate_many
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from streams.contracts.compatibility import (
    PRIMITIVE_TYPES,
    check_against_released,
    incompatibilities,
    release,
)
from streams.contracts.schemas import RELEASED_DIR, SCHEMAS_DIR, SchemaCatalog

Schema = dict[str, Any]


# --- the project's schemas against the released baseline -------------------------------------


def test_current_schemas_are_backward_compatible_with_the_released_baseline() -> None:
    assert sorted(RELEASED_DIR.glob("*.avsc")), "schemas/released/ holds the released baseline"
    assert check_against_released(SCHEMAS_DIR, RELEASED_DIR) == []


def test_every_current_event_has_a_released_baseline() -> None:
    released = {path.stem for path in RELEASED_DIR.glob("*.avsc")}
    current = {path.stem for path in SCHEMAS_DIR.glob("*.avsc")}
    assert current <= released, "new events need `release` once they are published"


def test_the_released_folder_does_not_leak_into_the_catalog() -> None:
    catalog = SchemaCatalog.from_directory(SCHEMAS_DIR)
    assert catalog.names() == sorted(path.stem for path in SCHEMAS_DIR.glob("*.avsc"))


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """Copies of the current schemas and of a baseline released from them."""
    current = tmp_path / "current"
    shutil.copytree(SCHEMAS_DIR, current, ignore=shutil.ignore_patterns("released"))
    released = tmp_path / "released"
    release(current, released)
    return current, released


def edit(directory: Path, name: str, change: Callable[[Schema], None]) -> None:
    path = directory / f"{name}.avsc"
    schema = json.loads(path.read_text())
    change(schema)
    path.write_text(json.dumps(schema, indent=2))


def field(schema: Schema, name: str) -> Schema:
    return next(item for item in schema["fields"] if item["name"] == name)


def test_release_copies_every_schema_exactly(dirs: tuple[Path, Path]) -> None:
    current, released = dirs
    names = release(current, released)
    assert names == sorted(path.stem for path in SCHEMAS_DIR.glob("*.avsc"))
    for name in names:
        assert (released / f"{name}.avsc").read_bytes() == (current / f"{name}.avsc").read_bytes()
    assert check_against_released(current, released) == []


def test_release_refuses_a_broken_schema_and_writes_nothing(tmp_path: Path) -> None:
    current = tmp_path / "current"
    current.mkdir()
    (current / "Good.avsc").write_text('{"type": "record", "name": "Good", "fields": []}')
    (current / "Broken.avsc").write_text("{not json")
    with pytest.raises(ValueError, match=r"Broken\.avsc"):
        release(current, tmp_path / "released")
    assert not (tmp_path / "released").exists()


def _add_required_field(schema: Schema) -> None:
    schema["fields"].append({"name": "site", "type": "string"})


def _set_type(name: str, new_type: Any) -> Callable[[Schema], None]:
    def change(schema: Schema) -> None:
        field(schema, name)["type"] = new_type

    return change


def _remove_severity_minor(schema: Schema) -> None:
    field(schema, "severity")["type"]["symbols"].remove("minor")


def _remove_weekday_sun(schema: Schema) -> None:
    field(schema, "days_of_week")["type"][1]["items"]["symbols"].remove("sun")


def _require_channel_label(schema: Schema) -> None:
    field(schema, "channels")["type"]["items"]["fields"].append({"name": "label", "type": "string"})


BREAKING: list[tuple[str, str, Callable[[Schema], None], list[str]]] = [
    (
        "field added without a default",
        "DoseTaken",
        _add_required_field,
        ["DoseTaken.site: reader field has no default and is missing from the writer"],
    ),
    (
        "string to int",
        "DoseTaken",
        _set_type("medication_id", "int"),
        ["DoseTaken.medication_id: writer type string cannot be read as int"],
    ),
    (
        "long narrowed to int",
        "DeadLetter",
        _set_type("offset", "int"),
        ["DeadLetter.offset: writer type long cannot be read as int"],
    ),
    (
        "enum symbol removed",
        "InteractionWarning",
        _remove_severity_minor,
        ["InteractionWarning.severity: symbol 'minor' removed without an enum default"],
    ),
    (
        "enum symbol removed inside an optional array",
        "ScheduleSet",
        _remove_weekday_sun,
        ["ScheduleSet.days_of_week[].items: symbol 'sun' removed without an enum default"],
    ),
    (
        "timestamp-millis to timestamp-micros",
        "DoseTaken",
        _set_type("occurred_at", {"type": "long", "logicalType": "timestamp-micros"}),
        [
            "DoseTaken.occurred_at: logical type changed from timestamp-millis to "
            "timestamp-micros; the values would change meaning"
        ],
    ),
    (
        "optional field made required",
        "DoseTaken",
        _set_type("quantity", "double"),
        ["DoseTaken.quantity[]: writer type null cannot be read as double"],
    ),
    (
        "field added without a default to a record defined once and referenced later",
        "ContactPreferencesSet",
        _require_channel_label,
        [
            "ContactPreferencesSet.channels.items.label: "
            "reader field has no default and is missing from the writer",
            "ContactPreferencesSet.caregiver_channels.items.label: "
            "reader field has no default and is missing from the writer",
        ],
    ),
]


@pytest.mark.parametrize(
    ("event", "change", "expected"),
    [case[1:] for case in BREAKING],
    ids=[case[0] for case in BREAKING],
)
def test_breaking_change_is_reported(
    dirs: tuple[Path, Path], event: str, change: Callable[[Schema], None], expected: list[str]
) -> None:
    current, released = dirs
    edit(current, event, change)
    assert check_against_released(current, released) == expected


def test_removing_an_event_schema_is_reported(dirs: tuple[Path, Path]) -> None:
    current, released = dirs
    (current / "RefillAlert.avsc").unlink()
    assert check_against_released(current, released) == [
        "RefillAlert: the released event schema was removed from current/"
    ]


def test_a_broken_current_schema_is_reported_not_raised(dirs: tuple[Path, Path]) -> None:
    current, released = dirs
    edit(current, "DoseTaken", _set_type("quantity", ["null", "Quantity"]))
    [problem] = check_against_released(current, released)
    assert problem.startswith("DoseTaken: invalid reader schema at DoseTaken.quantity[]")
    assert "unknown type 'Quantity'" in problem


def _add_optional_field(schema: Schema) -> None:
    schema["fields"].append(
        {"name": "site", "type": ["null", "string"], "default": None, "doc": "Body site."}
    )


def _remove_field(name: str) -> Callable[[Schema], None]:
    def change(schema: Schema) -> None:
        schema["fields"].remove(field(schema, name))

    return change


def _add_severity_trivial(schema: Schema) -> None:
    field(schema, "severity")["type"]["symbols"].append("trivial")


def _remove_severity_minor_with_default(schema: Schema) -> None:
    enum = field(schema, "severity")["type"]
    enum["symbols"].remove("minor")
    enum["default"] = "moderate"


def _rename_field_with_alias(schema: Schema) -> None:
    renamed = field(schema, "quantity")
    renamed["name"] = "amount"
    renamed["aliases"] = ["quantity"]


SAFE: list[tuple[str, str, Callable[[Schema], None]]] = [
    ("optional field with a default null added", "DoseTaken", _add_optional_field),
    ("field removed", "DoseTaken", _remove_field("scheduled_for")),
    ("int promoted to long", "DeadLetter", _set_type("partition", "long")),
    ("int promoted to double", "DoseMissed", _set_type("grace_minutes", "double")),
    ("string read as bytes", "DoseTaken", _set_type("medication_id", "bytes")),
    ("enum symbol added", "InteractionWarning", _add_severity_trivial),
    (
        "enum symbol removed with a default",
        "InteractionWarning",
        _remove_severity_minor_with_default,
    ),
    ("required field made optional", "DoseTaken", _set_type("medication_id", ["null", "string"])),
    ("field renamed with an alias", "DoseTaken", _rename_field_with_alias),
]


@pytest.mark.parametrize(
    ("event", "change"), [case[1:] for case in SAFE], ids=[case[0] for case in SAFE]
)
def test_safe_change_passes(
    dirs: tuple[Path, Path], event: str, change: Callable[[Schema], None]
) -> None:
    current, released = dirs
    edit(current, event, change)
    assert check_against_released(current, released) == []


def test_adding_an_event_schema_passes(dirs: tuple[Path, Path]) -> None:
    current, released = dirs
    new_event = json.loads((current / "ScheduleCleared.avsc").read_text())
    new_event["name"] = "ScheduleSuspended"
    (current / "ScheduleSuspended.avsc").write_text(json.dumps(new_event))
    assert check_against_released(current, released) == []


# --- hand-written pairs: unions ----------------------------------------------------------------


def record(name: str, *fields: Schema, **extra: Any) -> Schema:
    return {"type": "record", "name": name, "fields": list(fields), **extra}


def f(name: str, type_: Any, **extra: Any) -> Schema:
    return {"name": name, "type": type_, **extra}


@pytest.mark.parametrize(
    ("writer", "reader", "expected"),
    [
        (["null", "string"], ["null", "string", "int"], []),
        (["null", "string"], ["string", "null"], []),
        (
            ["null", "string", "int"],
            ["null", "string"],
            ["R.v[]: writer type int matches no branch of [null, string]"],
        ),
        ("int", ["null", "long"], []),
        ("string", ["null", "string"], []),
        ("int", ["null", "string"], ["R.v: writer type int matches no branch of [null, string]"]),
        (["int", "string"], "string", ["R.v[]: writer type int cannot be read as string"]),
        (["int", "long"], "double", []),
        # The exact branch is preferred to a promotion, so a date still reads as a date.
        (
            {"type": "int", "logicalType": "date"},
            ["long", {"type": "int", "logicalType": "date"}],
            [],
        ),
        (
            {"type": "int", "logicalType": "date"},
            ["null", "long"],
            ["R.v[]: logical type changed from date to none; the values would change meaning"],
        ),
        (
            ["null", record("A", f("x", "int"))],
            ["null", record("A", f("x", "int"), f("y", "string"))],
            ["R.v[].y: reader field has no default and is missing from the writer"],
        ),
        (
            ["null", record("A", f("x", "int"))],
            ["null", record("B", f("x", "int"))],
            ["R.v[]: writer type record A matches no branch of [null, record B]"],
        ),
        (
            ["null", {"type": "array", "items": "int"}],
            ["null", {"type": "array", "items": ["null", "long"]}],
            [],
        ),
    ],
)
def test_unions(writer: Any, reader: Any, expected: list[str]) -> None:
    assert incompatibilities(record("R", f("v", reader)), record("R", f("v", writer))) == expected


# --- hand-written pairs: named types, references, namespaces -------------------------------------


def _point(*extra_fields: Schema) -> Schema:
    return {
        "type": "record",
        "name": "Point",
        "namespace": "geo",
        "fields": [f("x", "double"), f("y", "double"), *extra_fields],
    }


def _shapes(point: Schema) -> Schema:
    return record(
        "Shapes",
        f("origin", point),
        # Shapes is in namespace app, so it names geo.Point in full; Path, in geo, needs not.
        f("points", {"type": "array", "items": "geo.Point"}),
        f(
            "path",
            {
                "type": "record",
                "name": "Path",
                "namespace": "geo",
                "fields": [f("points", {"type": "array", "items": "Point"})],
            },
        ),
        f("extent", {"type": "map", "values": {"type": "geo.Point"}}),
        namespace="app",
    )


def test_references_resolve_to_the_earlier_definition_in_every_namespace() -> None:
    writer = _shapes(_point())
    assert incompatibilities(writer, writer) == []
    assert incompatibilities(_shapes(_point(f("z", "double", default=0.0))), writer) == []
    assert incompatibilities(_shapes(_point(f("z", "double"))), writer) == [
        f"Shapes.{where}.z: reader field has no default and is missing from the writer"
        for where in ("origin", "points.items", "path.points.items", "extent.values")
    ]


def test_a_change_in_a_referenced_enum_is_found_through_the_reference() -> None:
    def schema(*symbols: str) -> Schema:
        enum = {"type": "enum", "name": "Colour", "symbols": list(symbols)}
        return record("R", f("fill", enum), f("stroke", ["null", "Colour"], default=None))

    assert incompatibilities(schema("red", "green"), schema("red", "green", "blue")) == [
        "R.fill: symbol 'blue' removed without an enum default",
        "R.stroke[]: symbol 'blue' removed without an enum default",
    ]


def test_an_unqualified_reference_is_resolved_in_the_enclosing_namespace() -> None:
    # "Point" inside namespace "app" means app.Point, which does not exist: the specification
    # (and fastavro) do not fall back to other namespaces.
    broken = record("Shapes", f("origin", _point()), f("other", "Point"), namespace="app")
    with pytest.raises(ValueError, match=r"reader schema at Shapes\.other: unknown type 'Point'"):
        incompatibilities(broken, _shapes(_point()))


def test_a_reference_must_follow_its_definition() -> None:
    forward = record("R", f("a", "Later"), f("b", record("Later")))
    with pytest.raises(ValueError, match=r"writer schema at R\.a: unknown type 'Later'"):
        incompatibilities(record("R"), forward)


def test_recursive_types_terminate_and_are_compared() -> None:
    def node(*extra: Schema) -> Schema:
        return record("Node", f("value", "int"), f("next", ["null", "Node"], default=None), *extra)

    assert incompatibilities(node(), node()) == []
    assert incompatibilities(node(f("label", ["null", "string"], default=None)), node()) == []
    assert incompatibilities(node(f("label", "string")), node()) == [
        "Node.label: reader field has no default and is missing from the writer"
    ]
    assert incompatibilities(node(), node(f("label", "string"))) == []


def test_named_types_match_by_unqualified_name_or_alias() -> None:
    writer = record("Medication", f("id", "string"), namespace="old")
    assert incompatibilities(record("Medication", f("id", "string"), namespace="new"), writer) == []
    renamed = record("Drug", f("id", "string"), aliases=["old.Medication"])
    assert incompatibilities(renamed, writer) == []
    assert incompatibilities(record("Drug", f("id", "string")), writer) == [
        "Drug: writer record Medication does not match reader record Drug "
        "(neither its name nor an alias)"
    ]


def test_enum_rename_without_alias_is_reported() -> None:
    writer = record("R", f("e", {"type": "enum", "name": "Old", "symbols": ["a"]}))
    reader = record("R", f("e", {"type": "enum", "name": "New", "symbols": ["a"]}))
    assert incompatibilities(reader, writer) == [
        "R.e: writer enum Old does not match reader enum New (neither its name nor an alias)"
    ]


@pytest.mark.parametrize(
    ("writer", "reader", "expected"),
    [
        (
            {"type": "fixed", "name": "Id", "size": 16},
            {"type": "fixed", "name": "Id", "size": 16},
            [],
        ),
        (
            {"type": "fixed", "name": "Id", "size": 16},
            {"type": "fixed", "name": "Id", "size": 8},
            ["R.v: fixed size changed from 16 to 8"],
        ),
        (
            {"type": "fixed", "name": "Id", "size": 16},
            {"type": "fixed", "name": "Key", "size": 16},
            [
                "R.v: writer fixed Id does not match reader fixed Key "
                "(neither its name nor an alias)"
            ],
        ),
        (
            {"type": "map", "values": "string"},
            {"type": "map", "values": "int"},
            ["R.v.values: writer type string cannot be read as int"],
        ),
        (
            {"type": "array", "items": "float"},
            {"type": "array", "items": "double"},
            [],
        ),
        (
            {"type": "array", "items": "string"},
            {"type": "map", "values": "string"},
            ["R.v: writer type array cannot be read as map"],
        ),
        ("bytes", "string", []),
        ("long", "float", []),
        ("double", "float", ["R.v: writer type double cannot be read as float"]),
        ("boolean", "int", ["R.v: writer type boolean cannot be read as int"]),
        (
            "long",
            {"type": "long", "logicalType": "timestamp-millis"},
            [
                "R.v: logical type changed from none to timestamp-millis; "
                "the values would change meaning"
            ],
        ),
        (
            {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2},
            {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 3},
            ["R.v: decimal (precision, scale) changed from (9, 2) to (9, 3)"],
        ),
    ],
)
def test_other_types(writer: Any, reader: Any, expected: list[str]) -> None:
    assert incompatibilities(record("R", f("v", reader)), record("R", f("v", writer))) == expected


def test_reader_field_aliases_find_the_writer_field() -> None:
    writer = record("R", f("quantity", "int"))
    assert incompatibilities(record("R", f("amount", "long", aliases=["quantity"])), writer) == []
    assert incompatibilities(record("R", f("amount", "string", aliases=["quantity"])), writer) == [
        "R.amount: writer type int cannot be read as string"
    ]


# --- generated schemas ---------------------------------------------------------------------------

_LOGICAL: list[Schema] = [
    {"type": "long", "logicalType": "timestamp-millis"},
    {"type": "long", "logicalType": "timestamp-micros"},
    {"type": "int", "logicalType": "date"},
]
_NAMESPACES = ["", "a", "a.b"]

leaves = st.one_of(
    st.tuples(st.just("primitive"), st.sampled_from([*sorted(PRIMITIVE_TYPES), *_LOGICAL])),
    st.tuples(
        st.just("enum"),
        st.lists(st.sampled_from("abcdef"), min_size=1, max_size=4, unique=True),
        st.sampled_from(_NAMESPACES),
    ),
    st.tuples(st.just("fixed"), st.integers(1, 16), st.sampled_from(_NAMESPACES)),
    st.tuples(st.just("ref"), st.integers(0, 20)),
)
shapes = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.tuples(st.just("array"), children),
        st.tuples(st.just("map"), children),
        st.tuples(st.just("union"), st.lists(children, min_size=1, max_size=3)),
        st.tuples(
            st.just("record"),
            st.lists(st.tuples(children, st.booleans()), max_size=4),
            st.sampled_from(_NAMESPACES),
        ),
    ),
    max_leaves=10,
)


class SchemaBuilder:
    """Turns a generated shape into a valid Avro schema with unique names and references."""

    def __init__(self) -> None:
        self.count = 0
        # Only complete definitions may be referenced: a required reference to a record from
        # inside itself would describe infinite data.
        self.defined: list[tuple[str, str]] = []  # (full name, namespace)

    def _name(self, namespace: str) -> tuple[str, str]:
        self.count += 1
        short = f"T{self.count}"
        return short, f"{namespace}.{short}" if namespace else short

    def build(self, shape: tuple[Any, ...], namespace: str) -> Any:
        kind = shape[0]
        if kind == "primitive":
            return copy.deepcopy(shape[1])
        if kind == "ref":
            if not self.defined:
                return "string"
            full_name, target_namespace = self.defined[shape[1] % len(self.defined)]
            if target_namespace == namespace:
                return full_name.rpartition(".")[2]
            if not target_namespace:
                # A type of the null namespace cannot be named from inside another namespace.
                return "string"
            return full_name
        if kind == "array":
            return {"type": "array", "items": self.build(shape[1], namespace)}
        if kind == "map":
            return {"type": "map", "values": self.build(shape[1], namespace)}
        if kind == "union":
            return self._union(shape[1], namespace)
        return self.named(shape, namespace)

    def named(self, shape: tuple[Any, ...], namespace: str) -> Schema:
        kind, own_namespace = shape[0], shape[-1]
        short, full_name = self._name(own_namespace)
        schema: Schema = {"type": kind, "name": short, "namespace": own_namespace}
        if kind == "enum":
            schema["symbols"] = shape[1]
        elif kind == "fixed":
            schema["size"] = shape[1]
        else:
            fields = []
            for index, (child, optional) in enumerate(shape[1]):
                type_ = self.build(child, own_namespace)
                if optional and not isinstance(type_, list):
                    fields.append(f(f"f{index}", ["null", type_], default=None))
                else:
                    fields.append(f(f"f{index}", type_))
            schema["fields"] = fields
        self.defined.append((full_name, own_namespace))
        return schema

    def _union(self, children: list[tuple[Any, ...]], namespace: str) -> list[Any]:
        # A union holds no union and at most one branch per unnamed type. Children are left out
        # before they are built, so that no type a later reference names is ever dropped.
        kept: dict[str, Any] = {}
        for child in children:
            if child[0] == "union":
                continue
            if child[0] == "primitive":
                type_ = child[1] if isinstance(child[1], str) else child[1]["type"]
                if type_ in kept:
                    continue
            elif child[0] in ("array", "map") and child[0] in kept:
                continue
            branch = self.build(child, namespace)
            if isinstance(branch, str):
                key = branch
            elif branch["type"] in ("enum", "fixed", "record"):
                key = branch["name"]
            else:
                key = branch["type"]
            kept.setdefault(key, branch)
        return list(kept.values()) or ["null"]


def build(shape: tuple[Any, ...]) -> Any:
    return SchemaBuilder().build(shape, "")


def build_record(fields: list[tuple[Any, ...]]) -> Schema:
    return SchemaBuilder().named(("record", [(shape, False) for shape in fields], "ev"), "")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shapes)
def test_any_schema_is_compatible_with_itself(shape: tuple[Any, ...]) -> None:
    schema = build(shape)
    parse_schema(schema)  # the generator makes only schemas that Avro accepts
    assert incompatibilities(schema, schema) == []


@settings(max_examples=100, deadline=None)
@given(st.lists(shapes, min_size=1, max_size=4), st.data())
def test_dropping_fields_or_adding_them_with_defaults_is_compatible(
    fields: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    writer = build_record(fields)
    reader = copy.deepcopy(writer)
    dropped = data.draw(st.sets(st.sampled_from(range(len(fields)))))
    reader["fields"] = [item for i, item in enumerate(reader["fields"]) if i not in dropped]
    assume(_is_valid(reader))  # a dropped field may have defined a type a later one names
    reader["fields"].append(f("added", ["null", "long"], default=None))
    assert incompatibilities(reader, writer) == []
    reader["fields"].append(f("required", "long"))
    assert incompatibilities(reader, writer) == [
        f"{writer['name']}.required: reader field has no default and is missing from the writer"
    ]


def _is_valid(schema: Any) -> bool:
    try:
        parse_schema(schema)
    except Exception:  # fastavro raises several types for an invalid schema
        return False
    return True


def _sites(schema: Any, found: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Every place of a schema a type can be replaced: (container, key or index)."""
    if isinstance(schema, list):
        for index, branch in enumerate(schema):
            found.append((schema, index))
            _sites(branch, found)
    elif isinstance(schema, dict):
        for key in ("items", "values"):
            if key in schema:
                found.append((schema, key))
                _sites(schema[key], found)
        for item in schema.get("fields", []):
            found.append((item, "type"))
            _sites(item["type"], found)
    return found


def _enums(schema: Any, found: list[Schema]) -> list[Schema]:
    if isinstance(schema, list):
        for branch in schema:
            _enums(branch, found)
    elif isinstance(schema, dict):
        if schema.get("type") == "enum":
            found.append(schema)
        for key in ("items", "values"):
            if key in schema:
                _enums(schema[key], found)
        for item in schema.get("fields", []):
            _enums(item["type"], found)
    return found


@st.composite
def evolutions(draw: st.DrawFn) -> tuple[Schema, Schema]:
    """A writer record and a reader made from it by one random change."""
    writer = build_record(draw(st.lists(shapes, min_size=1, max_size=4)))
    reader = copy.deepcopy(writer)
    change = draw(st.sampled_from(["retype", "drop", "add", "symbols"]))
    if change == "retype":
        container, key = draw(st.sampled_from(_sites(reader, [])))
        replacements: list[Any] = [*sorted(PRIMITIVE_TYPES), *_LOGICAL]
        if not isinstance(container, list):  # fastavro accepts a union in a union; Avro does not
            replacements.append(["null", "long"])
        container[key] = draw(st.sampled_from(replacements))
    elif change == "drop" and len(reader["fields"]) > 1:
        del reader["fields"][draw(st.integers(0, len(reader["fields"]) - 1))]
    elif change == "add":
        reader["fields"].append(
            draw(
                st.sampled_from(
                    [
                        f("new", "long"),
                        f("new", "long", default=0),
                        f("new", ["null", "long"], default=None),
                    ]
                )
            )
        )
    elif enums := _enums(reader, []):
        enum = draw(st.sampled_from(enums))
        enum["symbols"] = draw(
            st.lists(st.sampled_from("abcdefg"), min_size=1, max_size=5, unique=True)
        )
        if draw(st.booleans()):
            enum["default"] = enum["symbols"][0]
    return writer, reader


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(evolutions())
def test_a_change_found_compatible_really_reads_the_old_data(pair: tuple[Schema, Schema]) -> None:
    """Differential check against fastavro: whatever passes must read real data."""
    writer, reader = pair
    # The random change may break the schema (e.g. a union of two longs).
    assume(_is_valid(reader))
    parsed_reader, parsed_writer = parse_schema(reader), parse_schema(writer)
    if incompatibilities(reader, writer):
        return
    for datum in generate_many(parsed_writer, 5):
        buffer = io.BytesIO()
        try:
            schemaless_writer(buffer, parsed_writer, datum)
        except ValueError:
            # fastavro's writer tries a union's branches in order and gives up when a string
            # meant for an enum is no ISO date; such a datum never reaches the reader.
            continue
        buffer.seek(0)
        try:
            schemaless_reader(buffer, parsed_writer, parsed_reader)
        except UnicodeDecodeError:
            # Avro lets bytes be read as string; random bytes are rarely valid UTF-8.
            continue
