"""The handbook in docs/ names only what exists: settings, metrics, commands, error types,
alert kinds, topics and fields; its Python examples compile and encode what the workers read.
"""

from __future__ import annotations

import argparse
import ast
import re
import shlex
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from streams import client
from streams.agents import intake
from streams.cli import build_parser
from streams.contracts.codecs import ContractError, EventDecoder
from streams.contracts.models import EVENT_MODELS, ContactChannel, QuietHours, RecordHeader
from streams.contracts.schemas import SCHEMAS_DIR, default_catalog
from streams.contracts.vocabulary import RefillReason
from streams.domain import limits
from streams.observability.metrics import Metrics
from streams.settings import REPOSITORY_ROOT, Settings
from streams.topics import EVERY_TOPIC
from streams.topology import AGENTS, DELIVERY_LEDGER_TABLE, PATIENT_STATE_TABLE, TIMERS
from tests.unit.test_readme import setting_variables

DOCS = REPOSITORY_ROOT / "docs"
HANDBOOK = (
    "publishing.md",
    "consuming.md",
    "client.md",
    "fhir.md",
    "errors.md",
    "troubleshooting.md",
    "runbook.md",
)
# events.md is generated (test_docs.py), but names settings, commands and topics too.
PAGES = (*HANDBOOK, "events.md")

# Where ContractError's subclasses outside streams.contracts are declared (imported, so that
# __subclasses__ finds them): ProcessingError, RejectedEventError; LimitExceededError,
# ClockSkewError.
ERROR_MODULES = (intake, limits)
# Hyphenated words a page may quote that are no Kafka topic, agent, timer or table.
NOT_KAFKA_NAMES = frozenset(
    {
        "timestamp-millis",
        # docs/fhir.md: FHIR status codes and extension names, the roles an event_id is derived
        # with (streams/fhir/ids.py), and its examples' logical ids.
        "entered-in-error",
        "in-progress",
        "not-done",
        "not-taken",
        "on-hold",
        "tz-offset",
        "dose-skipped",
        "dose-taken",
        "schedule-cleared",
        "rx-1",
        "rx-1001",
        # docs/client.md: a downstream service's own consumer group.
        "medstream-downstream-billing",
    }
)
# Suffixes of the samples of each metric type (prometheus_client's exposition).
SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("", "_bucket", "_count", "_sum", "_created"),
}
# A line of a shell block that runs medstream (after an optional prompt or venv path).
COMMAND_LINE = re.compile(r"^\s*(?:\$\s+)?(?:\S*/)?medstream\s+(.*)$")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`([^`\n]+)`")
KAFKA_NAME = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)+$")
ERROR_TYPE_NAME = re.compile(r"^[A-Z][A-Za-z]*(?:Error|Exceeded)$")


# --- what exists -------------------------------------------------------------------------


@cache
def metric_samples() -> frozenset[str]:
    """Every sample name the workers' /metrics can show."""
    names: set[str] = set()
    for family in text_string_to_metric_families(Metrics().render().decode()):
        names.update(family.name + suffix for suffix in SAMPLE_SUFFIXES[family.type])
    return frozenset(names)


def _subclasses(cls: type[ContractError]) -> Iterator[type[ContractError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


@cache
def error_types() -> frozenset[str]:
    """Every error_type a dead letter can carry: those of ContractError's subclasses (the
    intake's judge dead-letters any other exception as DecodeError or ProcessingError). The
    base class's own is raised only by `medstream publish`, which dead-letters nothing."""
    return frozenset(sub.error_type for sub in _subclasses(ContractError))


@cache
def admin_alert_kinds() -> frozenset[str]:
    """Every alert_type the code gives an AdminAlert."""
    found: set[str] = set()
    for path in (REPOSITORY_ROOT / "streams").rglob("*.py"):
        found.update(re.findall(r"alert_type=\"([A-Z_]+)\"", path.read_text()))
    return frozenset(found)


@cache
def kafka_names() -> frozenset[str]:
    """Topics (with the changelogs of the default app id), agents, timers and tables."""
    tables = (PATIENT_STATE_TABLE, DELIVERY_LEDGER_TABLE)
    app_id = Settings.model_fields["app_id"].default
    return frozenset(
        {
            *(spec.base_name for spec in EVERY_TOPIC),
            *(spec.name for spec in AGENTS),
            *(spec.name for spec in TIMERS),
            *tables,
            *(f"{app_id}-{table}-changelog" for table in tables),
        }
    )


@cache
def field_names() -> frozenset[str]:
    """Every field of every event and nested record of the contract."""
    models: tuple[type[BaseModel], ...] = (
        *EVENT_MODELS.values(),
        ContactChannel,
        QuietHours,
        RecordHeader,
    )
    return frozenset(name for model in models for name in model.model_fields)


# --- what a page says --------------------------------------------------------------------


@cache
def page_text(page: str) -> str:
    return (DOCS / page).read_text()


def code_blocks(page: str, *languages: str) -> list[str]:
    return [
        body
        for language, body in FENCE.findall(page_text(page))
        if not languages or language in languages
    ]


def inline_code(page: str) -> list[str]:
    """The `inline code` spans outside fenced blocks."""
    return INLINE.findall(FENCE.sub("", page_text(page)))


def command_lines(page: str) -> list[str]:
    """The medstream commands of a page: in shell blocks, and inline code spans."""
    lines = []
    for block in code_blocks(page, "sh", "shell", "bash", "console", ""):
        lines += [match.group(0) for match in map(COMMAND_LINE.match, block.splitlines()) if match]
    lines += [span for span in inline_code(page) if COMMAND_LINE.match(span)]
    return lines


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def _positionals(parser: argparse.ArgumentParser) -> list[str]:
    return [
        action.dest
        for action in parser._actions
        if not action.option_strings and not isinstance(action, argparse._SubParsersAction)
    ]


def command_problems(line: str) -> list[str]:
    """What in one `medstream ...` line is no command, option, topic or agent of the CLI."""
    match = COMMAND_LINE.match(line)
    assert match is not None
    words = shlex.split(match.group(1), comments=True)
    parser, path = build_parser(), ["medstream"]
    while words and (choices := _subcommands(parser)):
        word = words.pop(0)
        if word not in choices:
            return [f"`{' '.join(path)} {word}` is no command (known: {', '.join(choices)})"]
        parser, path = choices[word], [*path, word]
    problems = []
    known = _options(parser)
    positionals = _positionals(parser)
    previous = None
    for word in words:
        if word.startswith("-"):
            option = word.split("=", 1)[0]
            if option not in known:
                problems.append(f"`{' '.join(path)}` has no option {option}")
        elif previous in ("--topic",) or (previous is None and positionals == ["topic"]):
            if word.isupper() or word == "...":  # a placeholder: BASE, TOPIC, ...
                pass
            elif word not in {spec.base_name for spec in EVERY_TOPIC}:
                problems.append(f"`{' '.join(path)}`: no topic {word!r}")
        elif previous == "--agent" and word not in {spec.name for spec in AGENTS}:
            problems.append(f"`{' '.join(path)}`: no agent {word!r}")
        previous = word if word.startswith("-") else None
    return problems


# --- the checks --------------------------------------------------------------------------


@pytest.mark.parametrize("page", HANDBOOK)
def test_the_page_exists_and_is_linked_from_the_readme(page: str) -> None:
    assert (DOCS / page).exists(), f"docs/{page} is missing"
    assert f"(docs/{page})" in (REPOSITORY_ROOT / "README.md").read_text(), (
        f"the README does not link docs/{page}"
    )


@pytest.mark.parametrize("page", PAGES)
def test_every_setting_named_exists(page: str) -> None:
    known = setting_variables()
    named = set(re.findall(r"MEDSTREAM_[A-Z0-9_]*[A-Z0-9]", page_text(page)))
    unknown = sorted(named - set(known))
    assert not unknown, f"docs/{page} names settings that do not exist: {unknown}"


@pytest.mark.parametrize("page", PAGES)
def test_every_metric_named_exists(page: str) -> None:
    named = set(re.findall(r"\bmedstream_[a-z_]*[a-z]", page_text(page)))
    unknown = sorted(named - metric_samples())
    assert not unknown, f"docs/{page} names metrics that do not exist: {unknown}"


@pytest.mark.parametrize("page", PAGES)
def test_every_command_named_exists(page: str) -> None:
    problems = [problem for line in command_lines(page) for problem in command_problems(line)]
    assert not problems, f"docs/{page}: " + "; ".join(problems)


@pytest.mark.parametrize("page", PAGES)
def test_every_error_type_named_exists(page: str) -> None:
    named = {span for span in inline_code(page) if ERROR_TYPE_NAME.match(span)}
    named |= set(re.findall(r"reason=\"([A-Za-z]+)\"", page_text(page)))
    named |= {
        word
        for line in command_lines(page)
        for word in re.findall(r"--reason\s+([A-Z][A-Za-z]+)\b", line)
    }
    # The typed client's own exceptions are no dead letter's error_type, but may be named.
    client_exceptions = {name for name in client.__all__ if name.endswith("Error")}
    unknown = sorted(named - error_types() - client_exceptions)
    assert not unknown, f"docs/{page} names error types that do not exist: {unknown}"


def _string(node: ast.AST) -> str | None:
    """The string a topic argument spells: a literal, or a literal after a prefix."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        node = node.right
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def python_topics(block: str) -> set[str]:
    """The topic names a Python example sends to or subscribes to."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(block)):
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
        if name in ("send", "send_and_wait") and node.args:
            arguments = node.args[:1]
        elif name in ("AIOKafkaConsumer", "subscribe"):
            arguments = node.args
        else:
            continue
        found |= {text for text in map(_string, arguments) if text is not None}
    return found


@pytest.mark.parametrize("page", PAGES)
def test_every_topic_named_exists(page: str) -> None:
    spans = [span for span in inline_code(page) if KAFKA_NAME.match(span)]
    for block in code_blocks(page, "python"):
        spans += python_topics(block)
    unknown = sorted(set(spans) - kafka_names() - NOT_KAFKA_NAMES)
    assert not unknown, (
        f"docs/{page} names topics (or agents, timers, tables) that do not exist: {unknown}"
    )


def test_errors_page_covers_every_error_type_and_alert_kind() -> None:
    text = page_text("errors.md")
    headings = set(re.findall(r"^### `([A-Za-z_]+)`$", text, flags=re.MULTILINE))
    missing = sorted((error_types() | admin_alert_kinds()) - headings)
    assert not missing, f"docs/errors.md has no section for: {missing}"
    unknown = sorted(headings - error_types() - admin_alert_kinds())
    assert not unknown, f"docs/errors.md has sections for what does not exist: {unknown}"


# --- the Python examples -----------------------------------------------------------------


def python_blocks() -> list[tuple[str, int, str]]:
    return [
        (page, number, block)
        for page in PAGES
        for number, block in enumerate(code_blocks(page, "python"), 1)
    ]


@pytest.mark.parametrize(
    ("page", "number", "block"), python_blocks(), ids=lambda value: str(value)[:20]
)
def test_python_examples_compile_and_use_contract_fields(
    page: str, number: int, block: str
) -> None:
    where = f"docs/{page}, Python block {number}"
    try:
        tree = ast.parse(compile(block, where, "exec", flags=ast.PyCF_ONLY_AST))
    except SyntaxError as error:
        pytest.fail(f"{where} does not compile: {error}")
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            used |= {
                key.value
                for key in node.keys
                if isinstance(key, ast.Constant) and isinstance(key.value, str)
            }
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)
        ):
            used.add(node.slice.value)
    unknown = sorted(used - field_names())
    assert not unknown, f"{where} uses fields the contract does not have: {unknown}"


def _example(page: str, function: str) -> Any:
    """A function defined by one of a page's Python blocks, run as a module (not __main__)."""
    for block in code_blocks(page, "python"):
        namespace: dict[str, Any] = {"__name__": "handbook_example"}
        exec(compile(block, f"docs/{page}", "exec"), namespace)  # noqa: S102
        if function in namespace:
            return namespace[function]
    raise AssertionError(f"docs/{page} defines no {function}()")


def test_the_publishing_examples_encode_what_the_workers_decode() -> None:
    decoder = EventDecoder(default_catalog())
    now = datetime.now(UTC)
    event = {
        "event_id": "handbook-1",
        "event_type": "RefillDispensed",
        "patient_id": "p1",
        "occurred_at": now,
        "medication_id": "m1",
        "quantity": 30.0,
    }
    single_object = _example("publishing.md", "single_object")
    decoded = decoder.decode(single_object(SCHEMAS_DIR / "RefillDispensed.avsc", event))
    assert decoded.event_id == "handbook-1"

    dose_taken = _example("publishing.md", "dose_taken")
    encode_json = _example("publishing.md", "encode_json")
    decoded = decoder.decode(encode_json(dose_taken("p1", "m1", "c1")))
    assert decoded.event_type == "DoseTaken"
    assert decoded.event_id == "dose-confirmation:c1"


def test_the_consuming_example_decodes_both_output_encodings() -> None:
    catalog = default_catalog()
    from streams.contracts.codecs import encode_avro, encode_json
    from streams.contracts.models import RefillAlert

    alert = RefillAlert(
        event_id="refill-1",
        patient_id="p1",
        occurred_at=datetime.now(UTC),
        alert_id="refill-1",
        medication_id="m1",
        medication_name="Warfarin",
        reason=RefillReason.LOW_SUPPLY,
        supply_quantity=3.0,
        days_of_supply_remaining=3.0,
        refills_remaining=0,
    )
    load_schemas = _example("consuming.md", "load_schemas")
    decode = _example("consuming.md", "decode")
    schemas = load_schemas(Path(SCHEMAS_DIR))
    schema = catalog.by_name("RefillAlert")
    assert schema is not None
    for value in (encode_json(alert), encode_avro(schema, alert)):
        assert decode(value, schemas)["event_id"] == "refill-1"
