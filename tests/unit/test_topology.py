"""The topology as data matches the app's wiring, the README, and spares the CLI the app."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Any

import faust
import pytest

from streams.app import create_app
from streams.ops.control import agent_topics
from streams.settings import REPOSITORY_ROOT, Settings
from streams.topics import EVERY_TOPIC, Direction
from streams.topology import (
    AGENTS,
    TIMERS,
    consumed_topics,
    pausable_topics,
    pause_targets,
    render_markdown,
)


def _settings() -> Settings:
    return Settings(
        store_url="memory://", web_enabled=False, app_id=f"topology-{uuid.uuid4().hex[:10]}"
    )


def test_the_topology_is_the_apps_wiring(monkeypatch: pytest.MonkeyPatch) -> None:
    timers: list[str | None] = []
    timer = faust.App.timer

    def recording_timer(self: faust.App, *args: Any, **kwargs: Any) -> Any:
        timers.append(kwargs.get("name"))
        return timer(self, *args, **kwargs)

    monkeypatch.setattr(faust.App, "timer", recording_timer)
    settings = _settings()
    medstream = create_app(settings)

    assert agent_topics(medstream.app, settings) == {spec.name: spec.read_names for spec in AGENTS}
    assert {table.name for table in medstream.restorer.tables} == {
        table for spec in (*AGENTS, *TIMERS) for table in spec.tables
    }
    assert sorted(timers, key=str) == sorted(spec.name for spec in TIMERS)
    # Liveness watches (and /metrics labels) exactly these agents.
    assert set(medstream.liveness.agents) == {spec.name for spec in AGENTS}


def test_the_topology_holds_together() -> None:
    names = [spec.name for spec in (*AGENTS, *TIMERS)]
    assert len(names) == len(set(names))
    written = {topic for spec in (*AGENTS, *TIMERS) for topic in spec.writes}
    for spec in AGENTS:
        assert spec.reads, spec.name
        for topic in spec.reads:
            # Every topic an agent reads comes from upstream or from medstream itself.
            assert topic.direction is Direction.IN or topic in written, (spec.name, topic)
    # Every output of the contract has a writer; audit-log's is the admin tooling.
    outputs = {spec for spec in EVERY_TOPIC if spec.direction is Direction.OUT}
    assert {spec.base_name for spec in outputs - written} == {"audit-log"}
    assert set(consumed_topics()) >= set(pausable_topics())


def test_pause_targets_by_topic_and_agent() -> None:
    assert pause_targets(["refill-alerts"], ["apply-patient-events"]) == [
        "refill-alerts",
        "medication-events",
        "schedule-events",
        "patient-events",
    ]
    with pytest.raises(ValueError, match="no agent 'nobody'"):
        pause_targets([], ["nobody"])
    with pytest.raises(ValueError, match="no agent consumes 'audit-log'"):
        pause_targets(["audit-log"], [])


# Runs the command line's pause and status with the broker calls replaced, then reports which
# modules it imported: a fresh interpreter, since this one has imported the app already.
_CLI_WITHOUT_THE_APP = """
import json, sys
import streams.ops.commands as commands
from streams.cli import main
from streams.ops.status import Status

sent = []
async def nothing(*args, **kwargs):
    return []
async def send(settings, topics, *, paused, actor):
    sent.append(list(topics))
    return []
async def status(settings, consumed, every_topic, stall_sample):
    sent.append(list(consumed))
    return Status()
commands.ensure_topics = nothing
commands.send_pause_commands = send
commands.gather_status = status
for argv in (["pause", "--agent", "apply-patient-events"], ["status", "--json"]):
    try:
        main(argv)
    except SystemExit as exit:
        assert exit.code == 0, exit.code
print(json.dumps({"sent": sent, "app_imported": "streams.app" in sys.modules}))
"""


def test_pause_and_status_do_not_build_the_app() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CLI_WITHOUT_THE_APP],
        capture_output=True,
        text=True,
        cwd=REPOSITORY_ROOT,
        timeout=60,
        check=True,
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["app_imported"] is False
    assert report["sent"] == [
        ["medication-events", "schedule-events", "patient-events"],
        list(consumed_topics()),
    ]


def test_the_readme_shows_the_topology() -> None:
    readme = (REPOSITORY_ROOT / "README.md").read_text()
    assert render_markdown() in readme, (
        "the README's table of agents is out of date with streams/topology.py; "
        "paste streams.topology.render_markdown() into it"
    )
