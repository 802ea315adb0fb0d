"""Admin request bodies are strictly typed, the token is strong, only inputs can be replayed."""

from __future__ import annotations

import argparse
import json
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from streams.ops.admin_http import (
    ADMIN_BODY_MAX_BYTES,
    PauseRequest,
    ReplayRequest,
    bearer_matches,
    describe_errors,
)
from streams.ops.commands import check_replay, replay_arguments
from streams.settings import Settings

TOKEN = "t" * 32


@pytest.mark.parametrize("token", ["", " ", "short-token", "x" * 31, " " * 40])
def test_an_empty_or_short_admin_token_is_refused(token: str) -> None:
    with pytest.raises(ValidationError, match="at least 32 characters") as raised:
        Settings(admin_token=token)
    if token.strip():
        assert token not in str(raised.value)


def test_a_long_admin_token_is_taken_and_masked() -> None:
    settings = Settings(admin_token=TOKEN)
    assert settings.admin_token == SecretStr(TOKEN)
    assert TOKEN not in repr(settings)


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer {TOKEN}", True),
        ("Bearer ", False),
        ("Bearer", False),
        ("", False),
        (TOKEN, False),
        (f"Basic {TOKEN}", False),
        (f"Bearer {TOKEN}x", False),
        (f"Bearer {TOKEN[:-1]}", False),
        ("Bearer \u00e9\u00e9", False),
    ],
)
def test_bearer_tokens(header: str, ok: bool) -> None:
    assert bearer_matches(header, TOKEN.encode()) is ok


def refusal(body: bytes | str) -> str:
    with pytest.raises(ValidationError) as raised:
        ReplayRequest.model_validate_json(body)
    return describe_errors(raised.value)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('{"topic": "medication-events", "from_offset": "abc"}', "from_offset"),
        ('{"topic": "medication-events", "from_offset": "5"}', "from_offset"),
        ('{"topic": "medication-events", "from_offset": 1.5}', "from_offset"),
        ('{"topic": "medication-events", "from_offset": -1}', "greater than or equal to 0"),
        ('{"topic": "medication-events", "from_offset": 0, "to_offset": -3}', "to_offset"),
        ('{"topic": "medication-events", "from_offset": 0, "partition": -1}', "partition"),
        ('{"dead_letters": "false"}', "dead_letters"),
        ('{"dead_letters": 1}', "dead_letters"),
        ('{"topic": "medication-events", "from_offset": 0, "dry_run": "true"}', "dry_run"),
        ('{"topic": 7, "from_offset": 0}', "topic"),
        ('{"topic": "medication-events", "since": "yesterday-ish"}', "since"),
        ('{"topic": "medication-events", "since": 12}', "since"),
        ('{"topic": "medication-events", "since": "2026-13-45T00:00:00Z"}', "since"),
        ('{"topic": "medication-events", "from_offset": 0, "frm_offset": 1}', "unknown field"),
        ("not json at all", "not valid JSON"),
        ('{"topic": "medication-events"', "not valid JSON"),
        ('["topic", "medication-events"]', "not a JSON object"),
        ('"medication-events"', "not a JSON object"),
        ("null", "not a JSON object"),
    ],
)
def test_bad_replay_bodies_are_refused_with_the_field_and_never_the_value(
    body: str, expected: str
) -> None:
    message = refusal(body)
    assert expected in message
    for value in ("abc", "yesterday-ish", "2026-13-45", "not json at all"):
        assert value not in message


def test_an_unknown_field_with_a_strange_name_is_not_echoed() -> None:
    message = refusal('{"<script>alert(1)</script>": 1}')
    assert message == "?: unknown field"


def arguments(body: dict[str, Any]) -> argparse.Namespace:
    return ReplayRequest.model_validate_json(json.dumps(body)).arguments()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"topic": "medication-events"}, "either --since or --from-offset"),
        (
            {"topic": "medication-events", "since": "2026-11-28T00:00:00Z", "from_offset": 0},
            "either --since or --from-offset",
        ),
        ({"dead_letters": True, "from_offset": 0}, "--dead-letters selects by"),
        ({"topic": "medication-events", "from_offset": 5, "to_offset": 2}, "before"),
        (
            {"topic": "medication-events", "until": "2026-11-28T00:00:00Z", "from_offset": 0},
            "--until",
        ),
        ({}, "replay needs --topic"),
        ({"topic": "medstream-control", "from_offset": 0}, "only input topics"),
        ({"topic": "audit-log", "from_offset": 0}, "only input topics"),
        ({"topic": "refill-alerts", "from_offset": 0}, "only input topics"),
        ({"topic": "state-by-patient-changelog", "from_offset": 0}, "only input topics"),
    ],
)
def test_replay_options_that_do_not_fit_together_or_target_no_input_are_refused(
    body: dict[str, Any], expected: str
) -> None:
    problem = check_replay(arguments(body))
    assert problem is not None
    assert expected in problem


def test_good_replay_bodies_become_the_command_line_options() -> None:
    args = arguments({"topic": "medication-events", "since": "2026-11-28T00:00:00"})
    assert check_replay(args) is None
    assert args.since.tzinfo is not None  # no offset: UTC, as on the command line
    assert check_replay(arguments({"dead_letters": True, "dry_run": True})) is None
    assert check_replay(replay_arguments(topic="patient-events", from_offset=0)) is None


def test_the_command_line_refuses_the_same_topics() -> None:
    assert "only input topics" in (
        check_replay(replay_arguments(topic="medstream-control", from_offset=0)) or ""
    )


def test_pause_bodies() -> None:
    assert PauseRequest.model_validate_json('{"agents": "apply-patient-events"}').names(
        "agents"
    ) == ["apply-patient-events"]
    for body in ('{"topics": [1]}', '{"topics": true}', '{"topics": []  , "x": 1}', "[]", "{"):
        with pytest.raises(ValidationError):
            PauseRequest.model_validate_json(body)


def test_the_body_limit_is_small() -> None:
    assert ADMIN_BODY_MAX_BYTES <= 64 * 1024
