"""The pydantic models and the `.avsc` files describe the same events, so they cannot drift.

The model side is derived by introspection (``model_fields``, annotations, ``Annotated``
metadata); the Avro side is read from ``schemas/``. Nothing here is a hand-written table of
fields or types.
"""

from __future__ import annotations

import json
import types
import typing
from datetime import date
from enum import StrEnum
from typing import Annotated, Any, Literal

import annotated_types
import pytest
from pydantic import AwareDatetime, BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from streams.contracts.models import EVENT_MODELS, Event
from streams.contracts.schemas import NAMESPACE, SCHEMAS_DIR, default_catalog
from streams.topics import ALL_TOPICS

ENVELOPE = list(Event.model_fields)
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
SCHEMA_FILES = sorted(SCHEMAS_DIR.glob("*.avsc"))


def _load(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS_DIR / f"{name}.avsc").read_text())
    return schema


# --- the model side -------------------------------------------------------------------------


def _strip(annotation: Any) -> tuple[Any, list[Any]]:
    """The type under any ``Annotated`` layers, and their metadata (FieldInfos flattened)."""
    metadata: list[Any] = []
    while typing.get_origin(annotation) is Annotated:
        annotation, *extra = typing.get_args(annotation)
        metadata.extend(extra)
    flat: list[Any] = []
    for item in metadata:
        flat.extend(item.metadata if isinstance(item, FieldInfo) else [item])
    return annotation, flat


def _optional_inner(annotation: Any) -> Any | None:
    """X for ``X | None`` (also ``Optional[Annotated[X, ...]]``), else None."""
    origin = typing.get_origin(annotation)
    if origin not in (typing.Union, types.UnionType):
        return None
    args = typing.get_args(annotation)
    others = [arg for arg in args if arg is not type(None)]
    assert len(args) == 2, f"only 'X | None' unions are used: {annotation}"
    assert len(others) == 1, f"only 'X | None' unions are used: {annotation}"
    return others[0]


def _bounds(metadata: list[Any]) -> tuple[Any, Any]:
    """The inclusive (low, high) bounds an integer field's constraints allow (None: unbounded)."""
    low: Any = None
    high: Any = None
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            low = item.ge
        elif isinstance(item, annotated_types.Gt):
            low = item.gt + 1  # type: ignore[operator]
        elif isinstance(item, annotated_types.Le):
            high = item.le
        elif isinstance(item, annotated_types.Lt):
            high = item.lt - 1  # type: ignore[operator]
    return low, high


# --- the Avro side --------------------------------------------------------------------------


class _AvroNames:
    """Named types of one schema file, registered in document order as Avro requires."""

    def __init__(self) -> None:
        self.defined: dict[str, dict[str, Any]] = {}

    def resolve(self, schema: Any) -> Any:
        if isinstance(schema, str) and schema in self.defined:
            return self.defined[schema]
        if isinstance(schema, dict) and schema.get("type") in ("record", "enum", "fixed"):
            self.defined.setdefault(schema["name"], schema)
        if isinstance(schema, dict) and isinstance(schema.get("type"), dict | list):
            return self.resolve(schema["type"])
        return schema


def _avro_kind(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return "union"
    return str(schema.get("logicalType") or schema["type"])


# --- matching one Avro type against one annotation ------------------------------------------


def _match(avro: Any, annotation: Any, names: _AvroNames, path: str) -> list[str]:
    """Problems found comparing an Avro type with a model annotation (empty if they agree)."""
    avro = names.resolve(avro)
    annotation, metadata = _strip(annotation)
    kind = _avro_kind(avro)
    if kind == "union":
        branches = [names.resolve(branch) for branch in avro]
        non_null = [branch for branch in branches if branch != "null"]
        inner = _optional_inner(annotation)
        if "null" not in branches or len(non_null) != 1:
            return [f"{path}: only [null, X] unions are expected, found {avro}"]
        if inner is None:
            return [f"{path}: Avro allows null but the model annotation {annotation} does not"]
        return _match(non_null[0], inner, names, path)
    if _optional_inner(annotation) is not None:
        return [f"{path}: the model allows None but the Avro type {kind} does not"]
    if kind in ("int", "long"):
        if annotation is not int:
            return [f"{path}: Avro {kind} but model {annotation}"]
        low, high = _bounds(metadata)
        limit = INT32_MAX if kind == "int" else INT64_MAX
        if high is None or high > limit or low is None or low < -limit - 1:
            return [f"{path}: model int bounds {low}..{high} do not fit Avro {kind}"]
        return []
    if isinstance(annotation, type) and issubclass(annotation, StrEnum):
        return _match_enum(avro, kind, annotation, path)
    simple: dict[str, tuple[Any, ...]] = {
        "string": (str,),
        "double": (float,),
        "boolean": (bool,),
        "timestamp-millis": (AwareDatetime,),
        "date": (date,),
    }
    if kind in simple:
        if annotation not in simple[kind]:
            return [f"{path}: Avro {kind} but model {annotation}"]
        return []
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if kind == "array":
        if origin is not list:
            return [f"{path}: Avro array but model {annotation}"]
        return _match(avro["items"], args[0], names, f"{path}[]")
    if kind == "map":
        if origin is not dict or args != (str, str) or names.resolve(avro["values"]) != "string":
            return [f"{path}: Avro map<{avro['values']}> but model {annotation}"]
        return []
    if kind == "record":
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return [f"{path}: Avro record {avro['name']} but model {annotation}"]
        if avro["name"] != annotation.__name__:
            return [f"{path}: Avro record {avro['name']} but model {annotation.__name__}"]
        return _match_record(avro, annotation, names, path)
    return [f"{path}: Avro type {kind} has no model counterpart (model {annotation})"]


def _match_enum(avro: Any, kind: str, enum: type[StrEnum], path: str) -> list[str]:
    values = [member.value for member in enum]
    if kind == "enum":
        problems = []
        if avro["name"] != enum.__name__:
            problems.append(f"{path}: Avro enum {avro['name']} but model {enum.__name__}")
        if avro["symbols"] != values:
            problems.append(f"{path}: symbols {avro['symbols']} but model values {values}")
        return problems
    if kind == "string":
        # An open Avro string the model narrows to a vocabulary (adding an Avro enum later
        # would not be backward compatible): the field's doc must then list every value.
        doc = avro.get("doc", "") if isinstance(avro, dict) else ""
        return [f"{path}: {value!r} missing from the doc" for value in values if value not in doc]
    return [f"{path}: Avro {kind} but model enum {enum.__name__}"]


def _match_record(
    record: dict[str, Any], model: type[BaseModel], names: _AvroNames, path: str
) -> list[str]:
    avro_fields = [field["name"] for field in record["fields"]]
    model_fields = list(model.model_fields)
    if avro_fields != model_fields:
        return [f"{path}: Avro fields {avro_fields} but model fields {model_fields}"]
    problems = []
    for field in record["fields"]:
        name = field["name"]
        info = model.model_fields[name]
        where = f"{path}.{name}"
        if name == "event_type" and issubclass(model, Event):
            problems += _match_event_type(field, info, model, where)
            continue
        field_type = field["type"]
        if isinstance(field_type, str) and _avro_kind(names.resolve(field_type)) == "string":
            # A plain string field: its doc travels with it (used for open vocabularies).
            field_type = {"type": "string", "doc": field.get("doc", "")}
        annotation: Any = info.annotation
        if info.metadata:
            annotation = Annotated[(annotation, *info.metadata)]
        problems += _match(field_type, annotation, names, where)
        problems += _match_default(field, info, where)
    return problems


def _match_event_type(
    field: dict[str, Any], info: FieldInfo, model: type[Event], where: str
) -> list[str]:
    name = model.__name__
    expected: tuple[Any, ...] = (field["type"], field.get("default"), info.annotation, info.default)
    if expected != ("string", name, Literal[name], name) or name != model.EVENT_TYPE:
        return [f"{where}: expected a string defaulting to {name!r} and Literal[{name!r}]"]
    return []


def _match_default(field: dict[str, Any], info: FieldInfo, where: str) -> list[str]:
    if "default" not in field:
        return [] if info.is_required() else [f"{where}: no Avro default but a model default"]
    if info.is_required():
        return [f"{where}: Avro default {field['default']!r} but the model field is required"]
    model_default = info.get_default(call_default_factory=True)
    if model_default is PydanticUndefined:
        return [f"{where}: model default missing"]
    if isinstance(model_default, BaseModel):
        model_default = model_default.model_dump()
    if model_default != field["default"] or type(model_default) is not type(field["default"]):
        return [f"{where}: Avro default {field['default']!r} but model {model_default!r}"]
    return []


# --- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", sorted(EVENT_MODELS))
def test_model_and_schema_agree(event_type: str) -> None:
    model = EVENT_MODELS[event_type]
    schema = _load(event_type)
    assert schema["type"] == "record"
    assert schema["name"] == event_type
    assert _match_record(schema, model, _AvroNames(), event_type) == []


@pytest.mark.parametrize("event_type", sorted(EVENT_MODELS))
def test_envelope_comes_first(event_type: str) -> None:
    assert ENVELOPE == ["event_id", "event_type", "patient_id", "occurred_at"]
    fields = [field["name"] for field in _load(event_type)["fields"]]
    assert fields[: len(ENVELOPE)] == ENVELOPE
    assert list(EVENT_MODELS[event_type].model_fields)[: len(ENVELOPE)] == ENVELOPE


def test_every_schema_file_has_a_model_and_every_model_a_schema_file() -> None:
    assert {path.stem for path in SCHEMA_FILES} == set(EVENT_MODELS)
    assert set(default_catalog().names()) == set(EVENT_MODELS)
    for event_type, model in EVENT_MODELS.items():
        assert model.__name__ == event_type == model.EVENT_TYPE


def _docless(schema: Any, path: str, names: set[str]) -> list[str]:
    """Every record (nested ones included) and field lacking a non-empty doc."""
    if isinstance(schema, list):
        return [hole for branch in schema for hole in _docless(branch, path, names)]
    if not isinstance(schema, dict):
        return []
    if isinstance(schema.get("type"), dict | list):
        return _docless(schema["type"], path, names)
    holes: list[str] = []
    if schema.get("type") in ("record", "enum"):
        if not schema.get("doc"):
            holes.append(f"{path} ({schema['name']})")
        names.add(schema["name"])
    for field in schema.get("fields", []):
        where = f"{path}.{field['name']}"
        if not field.get("doc"):
            holes.append(where)
        holes += _docless(field["type"], where, names)
    for key in ("items", "values"):
        if key in schema:
            holes += _docless(schema[key], f"{path}[]", names)
    return holes


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=[path.stem for path in SCHEMA_FILES])
def test_every_schema_has_a_namespace_and_docs_everywhere(path: Any) -> None:
    schema = json.loads(path.read_text())
    assert schema.get("namespace") == NAMESPACE
    assert schema.get("doc")
    nested: set[str] = set()
    assert _docless(schema, schema["name"], nested) == []
    assert schema["name"] in nested


def test_nested_records_are_checked_recursively() -> None:
    # The walk must reach records inside arrays and unions, and named references to them.
    schema = _load("ContactPreferencesSet")
    nested: set[str] = set()
    _docless(schema, "ContactPreferencesSet", nested)
    assert {"ContactChannel", "QuietHours"} <= nested
    broken = json.loads(json.dumps(schema))
    del broken["fields"][4]["type"]["items"]["fields"][1]["doc"]
    assert _docless(broken, "x", set()) == ["x.channels[].target"]


def test_every_topic_names_existing_models() -> None:
    carried = [event_type for spec in ALL_TOPICS for event_type in spec.event_types]
    assert set(carried) <= set(EVENT_MODELS)
    assert len(carried) == len(set(carried)), "an event type lives on exactly one topic"
    assert set(carried) == set(EVENT_MODELS), "every event has a topic"


# --- the matcher itself notices drift (so a green run means something) ----------------------


def _drifted(event_type: str, change: Any) -> list[str]:
    schema = json.loads(json.dumps(_load(event_type)))
    change(schema)
    return _match_record(schema, EVENT_MODELS[event_type], _AvroNames(), event_type)


def _field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(field for field in schema["fields"] if field["name"] == name)
    return found


def _set(name: str, key: str, value: Any) -> Any:
    return lambda schema: _field(schema, name).__setitem__(key, value)


@pytest.mark.parametrize(
    ("event_type", "change", "problem"),
    [
        ("ScheduleCleared", lambda s: s["fields"].append(s["fields"].pop(0)), "fields"),
        ("ScheduleCleared", lambda s: s["fields"].pop(), "fields"),
        ("MedicationPrescribed", _set("dose_quantity", "type", "float"), "dose_quantity"),
        ("MedicationPrescribed", _set("refills_remaining", "type", "string"), "refills"),
        ("MedicationPrescribed", _set("refill_threshold_days", "default", 8), "default"),
        ("MedicationPrescribed", _set("name", "default", "x"), "required"),
        ("MedicationPrescribed", lambda s: _field(s, "rxnorm_code").pop("default"), "model"),
        ("MedicationPrescribed", _set("rxnorm_code", "type", "string"), "allows None"),
        ("MedicationPrescribed", _set("event_type", "default", "Other"), "event_type"),
        ("RefillAlert", _set("days_of_supply_remaining", "type", "double"), "allows None"),
        ("DoseMissed", _set("scheduled_for", "type", "long"), "scheduled_for"),
        ("ScheduleSet", _set("start_date", "type", ["null", "string"]), "start_date"),
        (
            "InteractionWarning",
            lambda s: _field(s, "severity")["type"]["symbols"].reverse(),
            "symbols",
        ),
        ("InteractionWarning", _set("medication_ids", "type", "string"), "medication_ids"),
        (
            "ScheduleSet",
            lambda s: _field(s, "days_of_week")["type"][1]["items"]["symbols"].pop(),
            "symbols",
        ),
        ("AdminAlert", _set("details", "type", {"type": "map", "values": "long"}), "details"),
        ("DeadLetter", _set("partition", "type", "boolean"), "partition"),
        ("DeadLetter", _set("offset", "type", "int"), "offset"),
        (
            "DeadLetter",
            lambda s: _field(s, "headers")["type"]["items"]["fields"][1].pop("default"),
            "headers[].value",
        ),
        (
            "ContactPreferencesSet",
            lambda s: _field(s, "channels")["type"]["items"]["fields"].pop(),
            "channels[]",
        ),
        (
            "ContactPreferencesSet",
            lambda s: _field(s, "channels")["type"]["items"]["fields"][0].__setitem__("doc", "?"),
            "'webhook' missing",
        ),
        ("ContactPreferencesSet", _set("caregiver_channels", "default", None), "default"),
    ],
)
def test_the_comparison_detects_drift(event_type: str, change: Any, problem: str) -> None:
    problems = _drifted(event_type, change)
    assert problems, "the drift went unnoticed"
    assert any(problem in text for text in problems), problems
