"""Backward compatibility of event schemas: can the new schema read what the released one wrote?"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.contracts.schemas import load_schema_file

PRIMITIVE_TYPES = frozenset(
    {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
)
_NAMED_TYPES = frozenset({"record", "error", "enum", "fixed"})

# Avro 1.11 "Schema Resolution": the writer's type (key) may be read as these reader types.
_PROMOTIONS: dict[str, frozenset[str]] = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}

# How well a reader union branch fits the writer's type: Avro readers prefer an exact match
# to a promotion, so a branch that matches exactly is tried first.
_EXACT, _BY_ALIAS, _PROMOTED = 0, 1, 2


def _qualify(name: str, namespace: str) -> tuple[str, str]:
    """The full name of a name used in a namespace, and the namespace that full name lies in."""
    if "." in name:
        return name, name.rpartition(".")[0]
    return (f"{namespace}.{name}" if namespace else name), namespace


def _short(full_name: str) -> str:
    return full_name.rpartition(".")[2]


@dataclass(frozen=True)
class _Named:
    definition: dict[str, Any]
    full_name: str
    namespace: str


@dataclass(frozen=True)
class _Node:
    """One type of a schema with references resolved: its kind and the namespace in force."""

    kind: str
    schema: Any
    namespace: str
    full_name: str = ""

    @property
    def logical_type(self) -> Any:
        return self.schema.get("logicalType") if isinstance(self.schema, dict) else None

    def describe(self) -> str:
        if self.kind in PRIMITIVE_TYPES:
            logical = self.logical_type
            return f"{self.kind} ({logical})" if logical else self.kind
        if self.full_name:
            return f"{self.kind} {_short(self.full_name)}"
        return self.kind


class _Schema:
    """One side's schema: its named types by full name, checked in document order."""

    def __init__(self, schema: Any, side: str) -> None:
        self.side = side
        self.names: dict[str, _Named] = {}
        self._walk(schema, "", _root_label(schema))

    def _invalid(self, path: str, problem: str) -> ValueError:
        return ValueError(f"invalid {self.side} schema at {path}: {problem}")

    def _lookup(self, name: str, namespace: str) -> _Named | None:
        # No fallback to the null namespace (Avro's Java parser has one): the specification
        # and fastavro, which reads our data, resolve an unqualified name in the enclosing one.
        return self.names.get(_qualify(name, namespace)[0])

    def _define(self, definition: dict[str, Any], namespace: str, path: str) -> _Named:
        name = definition.get("name")
        if not isinstance(name, str) or not name:
            raise self._invalid(path, f"a {definition['type']} needs a name")
        own_namespace = definition.get("namespace")
        if "." not in name and own_namespace is not None:
            if not isinstance(own_namespace, str):
                raise self._invalid(path, "namespace must be a string")
            namespace = own_namespace
        full_name, namespace = _qualify(name, namespace)
        return _Named(definition, full_name, namespace)

    def _walk(self, schema: Any, namespace: str, path: str) -> None:
        # References may only name types defined earlier, so the walk follows document order.
        if isinstance(schema, str):
            if schema not in PRIMITIVE_TYPES and self._lookup(schema, namespace) is None:
                raise self._invalid(path, f"unknown type {schema!r}")
            return
        if isinstance(schema, list):
            if not schema:
                raise self._invalid(path, "a union needs at least one branch")
            for branch in schema:
                if isinstance(branch, list):
                    raise self._invalid(path, "a union may not contain a union")
                self._walk(branch, namespace, _branch_path(path))
            return
        if not isinstance(schema, dict):
            raise self._invalid(path, f"{schema!r} is not a schema")
        kind = schema.get("type")
        if isinstance(kind, dict | list):
            self._walk(kind, namespace, path)
            return
        if not isinstance(kind, str):
            raise self._invalid(path, "'type' must be a string, an object or a list")
        if kind in PRIMITIVE_TYPES:
            return
        if kind in _NAMED_TYPES:
            self._walk_named(schema, namespace, path)
        elif kind in ("array", "map"):
            child = "items" if kind == "array" else "values"
            if child not in schema:
                raise self._invalid(path, f"an {kind} needs {child!r}")
            self._walk(schema[child], namespace, f"{path}.{child}")
        elif self._lookup(kind, namespace) is None:
            raise self._invalid(path, f"unknown type {kind!r}")

    def _walk_named(self, schema: dict[str, Any], namespace: str, path: str) -> None:
        named = self._define(schema, namespace, path)
        if named.full_name in self.names:
            raise self._invalid(path, f"{named.full_name} is defined twice")
        # Registered before its fields are walked: a record may refer to itself.
        self.names[named.full_name] = named
        kind = schema["type"]
        if kind == "enum":
            symbols = schema.get("symbols")
            if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
                raise self._invalid(path, "an enum needs a list of symbols")
        elif kind == "fixed":
            if not isinstance(schema.get("size"), int):
                raise self._invalid(path, "a fixed needs an integer size")
        else:
            fields = schema.get("fields")
            if not isinstance(fields, list):
                raise self._invalid(path, "a record needs a list of fields")
            for field in fields:
                if not isinstance(field, dict) or not isinstance(field.get("name"), str):
                    raise self._invalid(path, "every field needs a name")
                if "type" not in field:
                    raise self._invalid(f"{path}.{field['name']}", "a field needs a type")
                self._walk(field["type"], named.namespace, f"{path}.{field['name']}")

    def node(self, schema: Any, namespace: str) -> _Node:
        if isinstance(schema, list):
            return _Node("union", schema, namespace)
        if isinstance(schema, str):
            if schema in PRIMITIVE_TYPES:
                return _Node(schema, {"type": schema}, namespace)
            return self._reference(schema, namespace)
        kind = schema["type"]
        if isinstance(kind, dict | list):
            return self.node(kind, namespace)
        if kind in PRIMITIVE_TYPES or kind in ("array", "map"):
            return _Node(kind, schema, namespace)
        if kind in _NAMED_TYPES:
            named = self._define(schema, namespace, "")
            return _Node(_kind_of(schema), schema, named.namespace, named.full_name)
        return self._reference(kind, namespace)

    def _reference(self, name: str, namespace: str) -> _Node:
        named = self._lookup(name, namespace)
        if named is None:  # the walk in __init__ has ruled this out
            raise self._invalid(name, f"unknown type {name!r}")
        definition = named.definition
        return _Node(_kind_of(definition), definition, named.namespace, named.full_name)

    def branches(self, union: _Node) -> list[_Node]:
        return [self.node(branch, union.namespace) for branch in union.schema]

    def child(self, node: _Node, attribute: str) -> _Node:
        return self.node(node.schema[attribute], node.namespace)


def _kind_of(definition: dict[str, Any]) -> str:
    kind = str(definition["type"])
    return "record" if kind == "error" else kind


def _root_label(schema: Any) -> str:
    if isinstance(schema, dict) and isinstance(schema.get("name"), str):
        return _short(schema["name"])
    if isinstance(schema, dict) and isinstance(schema.get("type"), str):
        return str(schema["type"])
    if isinstance(schema, list):
        return "union"
    return str(schema)


def _branch_path(path: str) -> str:
    # A writer union read by a reader union is one step of the path, not two.
    return path if path.endswith("[]") else f"{path}[]"


def _names_match(reader: _Node, writer: _Node) -> bool:
    """Avro matches named types by unqualified name, or by one of the reader's aliases."""
    wanted = _short(writer.full_name)
    aliases = reader.schema.get("aliases") or []
    return wanted == _short(reader.full_name) or any(
        isinstance(alias, str) and _short(alias) == wanted for alias in aliases
    )


class _Checker:
    def __init__(self, reader: _Schema, writer: _Schema) -> None:
        self.reader = reader
        self.writer = writer
        # Record pairs being compared further up: a recursive type meets itself again here.
        self._in_progress: set[tuple[str, str]] = set()

    def compare(self, reader: _Node, writer: _Node, path: str) -> list[str]:
        if writer.kind == "union":
            reasons: list[str] = []
            for branch in self.writer.branches(writer):
                reasons += self.compare(reader, branch, _branch_path(path))
            return reasons
        if reader.kind == "union":
            return self._against_union(reader, writer, path)
        if reader.kind in PRIMITIVE_TYPES and writer.kind in PRIMITIVE_TYPES:
            if reader.kind != writer.kind and reader.kind not in _PROMOTIONS.get(
                writer.kind, frozenset()
            ):
                return [f"{path}: writer type {writer.kind} cannot be read as {reader.kind}"]
            return self._logical_types(reader, writer, path)
        if reader.kind != writer.kind:
            return [
                f"{path}: writer type {writer.describe()} cannot be read as {reader.describe()}"
            ]
        if reader.kind in ("array", "map"):
            child = "items" if reader.kind == "array" else "values"
            return self.compare(
                self.reader.child(reader, child),
                self.writer.child(writer, child),
                f"{path}.{child}",
            )
        if not _names_match(reader, writer):
            return [
                f"{path}: writer {writer.describe()} does not match reader {reader.describe()} "
                "(neither its name nor an alias)"
            ]
        if reader.kind == "enum":
            return self._enums(reader, writer, path)
        if reader.kind == "fixed":
            return self._fixed(reader, writer, path)
        return self._records(reader, writer, path)

    def _against_union(self, reader: _Node, writer: _Node, path: str) -> list[str]:
        branches = self.reader.branches(reader)
        candidates = sorted(
            (rank, index)
            for index, branch in enumerate(branches)
            if (rank := _fit(branch, writer)) is not None
        )
        first_reasons: list[str] | None = None
        for _, index in candidates:
            reasons = self.compare(branches[index], writer, _branch_path(path))
            if not reasons:
                return []
            if first_reasons is None:
                first_reasons = reasons
        if first_reasons is not None:
            return first_reasons
        shown = ", ".join(branch.describe() for branch in branches)
        return [f"{path}: writer type {writer.describe()} matches no branch of [{shown}]"]

    def _logical_types(self, reader: _Node, writer: _Node, path: str) -> list[str]:
        # Avro itself ignores logical types when resolving; medstream does not, because the
        # same long read as timestamp-micros instead of timestamp-millis is a different instant.
        read_as, written_as = reader.logical_type, writer.logical_type
        if read_as != written_as:
            return [
                f"{path}: logical type changed from {written_as or 'none'} to "
                f"{read_as or 'none'}; the values would change meaning"
            ]
        if read_as == "decimal":
            read_shape = (reader.schema.get("precision"), reader.schema.get("scale", 0))
            written_shape = (writer.schema.get("precision"), writer.schema.get("scale", 0))
            if read_shape != written_shape:
                return [
                    f"{path}: decimal (precision, scale) changed from {written_shape} to "
                    f"{read_shape}"
                ]
        return []

    def _enums(self, reader: _Node, writer: _Node, path: str) -> list[str]:
        if "default" in reader.schema:
            return []
        known = set(reader.schema["symbols"])
        return [
            f"{path}: symbol {symbol!r} removed without an enum default"
            for symbol in writer.schema["symbols"]
            if symbol not in known
        ]

    def _fixed(self, reader: _Node, writer: _Node, path: str) -> list[str]:
        if reader.schema["size"] != writer.schema["size"]:
            return [
                f"{path}: fixed size changed from {writer.schema['size']} "
                f"to {reader.schema['size']}"
            ]
        return self._logical_types(reader, writer, path)

    def _records(self, reader: _Node, writer: _Node, path: str) -> list[str]:
        pair = (reader.full_name, writer.full_name)
        if pair in self._in_progress:
            return []
        self._in_progress.add(pair)
        try:
            writer_fields = {field["name"]: field for field in writer.schema["fields"]}
            reasons: list[str] = []
            for field in reader.schema["fields"]:
                field_path = f"{path}.{field['name']}"
                written = _writer_field(field, writer_fields)
                if written is None:
                    if "default" not in field:
                        reasons.append(
                            f"{field_path}: reader field has no default and is missing "
                            "from the writer"
                        )
                    continue
                reasons += self.compare(
                    self.reader.node(field["type"], reader.namespace),
                    self.writer.node(written["type"], writer.namespace),
                    field_path,
                )
            return reasons
        finally:
            self._in_progress.discard(pair)


def _fit(branch: _Node, writer: _Node) -> int | None:
    """How a reader union branch fits the writer's type at first sight, or None."""
    if branch.kind == writer.kind:
        if not branch.full_name or branch.full_name == writer.full_name:
            return _EXACT
        return _BY_ALIAS if _names_match(branch, writer) else None
    if branch.kind in _PROMOTIONS.get(writer.kind, frozenset()):
        return _PROMOTED
    return None


def _writer_field(
    field: dict[str, Any], writer_fields: dict[str, dict[str, Any]]
) -> dict[str, Any] | None:
    """The writer's field a reader field reads: same name first, then the reader's aliases."""
    if field["name"] in writer_fields:
        return writer_fields[field["name"]]
    for alias in field.get("aliases") or []:
        if alias in writer_fields:
            return writer_fields[alias]
    return None


def incompatibilities(reader: dict[str, Any], writer: dict[str, Any]) -> list[str]:
    """Why data written with ``writer`` cannot be read with ``reader``; empty when it can.

    Follows the "Schema Resolution" rules of the Avro 1.11 specification, plus one rule of
    medstream's: a change of logical type (timestamp-millis to timestamp-micros, date to
    none, a decimal's precision or scale) is incompatible, since the values change meaning.
    Each reason starts with the path of the type in the reader's schema, e.g.
    ``DoseTaken.quantity`` (``[]`` steps into a union, ``.items`` and ``.values`` into an
    array or a map). Raises ValueError when either schema is not a valid Avro schema.
    """
    reader_schema = _Schema(reader, "reader")
    writer_schema = _Schema(writer, "writer")
    checker = _Checker(reader_schema, writer_schema)
    reasons = checker.compare(
        reader_schema.node(reader, ""), writer_schema.node(writer, ""), _root_label(reader)
    )
    return list(dict.fromkeys(reasons))


def check_against_released(current_dir: Path, released_dir: Path) -> list[str]:
    """The problems of the current schemas against the released baseline; empty when none.

    Every released event must still exist and read what its released schema wrote. New events
    are fine. Each problem starts with the event's name.
    """
    problems: list[str] = []
    for released_path in sorted(released_dir.glob("*.avsc")):
        name = released_path.stem
        current_path = current_dir / released_path.name
        if not current_path.exists():
            problems.append(
                f"{name}: the released event schema was removed from {current_dir.name}/"
            )
            continue
        try:
            reasons = incompatibilities(
                load_schema_file(current_path), load_schema_file(released_path)
            )
        except ValueError as error:
            problems.append(f"{name}: {error}")
            continue
        problems += [
            reason if reason.startswith((f"{name}.", f"{name}:")) else f"{name}: {reason}"
            for reason in reasons
        ]
    return problems


def release(current_dir: Path, released_dir: Path) -> list[str]:
    """Copy the current schemas into the released baseline; the names of the schemas written.

    Every current schema is loaded first, so a broken file never becomes the baseline.
    Released schemas that no longer exist are kept: check_against_released keeps reporting
    their removal.
    """
    sources = sorted(current_dir.glob("*.avsc"))
    for path in sources:
        load_schema_file(path)
    released_dir.mkdir(parents=True, exist_ok=True)
    for path in sources:
        shutil.copyfile(path, released_dir / path.name)
    return [path.stem for path in sources]
