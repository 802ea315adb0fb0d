"""Fixtures of the agent tests: the real app with in-memory tables, and what it publishes."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence

import faust
import pytest

from streams.agents.emitter import Encoded, Sent, SentBatch
from streams.app import Medstream, create_app
from streams.contracts.models import Event
from streams.settings import Settings
from streams.state.changelog import MemoryChangelog
from streams.state.stores import Changes
from streams.state.table import decode_key
from tests.agents.harness import NOW, Emitted


def agent_test_app(monkeypatch: pytest.MonkeyPatch, **settings: object) -> Medstream:
    """The real app with in-memory tables and changelogs and a fixed clock, as the agent tests
    need it."""
    app = create_app(
        Settings(
            store_url="memory://",
            web_enabled=False,
            app_id=f"agents-{uuid.uuid4().hex[:10]}",
            topic_partitions=4,
            # The agent tests deliver on the console channel, which is off by default.
            **{"notify_console_enabled": True, **settings},  # type: ignore[arg-type]
        )
    )
    monkeypatch.setattr(app.patients.processor, "clock", lambda: NOW)
    monkeypatch.setattr(app.notifier, "clock", lambda: NOW)

    # No broker in an agent test: the tables' changelogs are lists (streams.state).
    for table in app.restorer.tables:
        monkeypatch.setattr(table, "changelog", MemoryChangelog(f"{table.name}-changelog"))
    return app


def capture_emitted(medstream: Medstream, monkeypatch: pytest.MonkeyPatch) -> Emitted:
    """What the agents publish, as (topic name, event), in order."""
    sent: Emitted = []
    emitter = medstream.patients.store.emitter
    assert medstream.patients.timer.emitter is emitter

    async def emit(topic: faust.TopicT, event: Event, *, wait: bool = False) -> Sent:
        sent.append((topic.get_topic_name(), event))
        emitter.metrics.produced(topic.get_topic_name())
        acknowledged: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        acknowledged.set_result(None)
        return Sent(topic, event, acknowledged)

    async def emit_encoded_batch(
        topic: faust.TopicT, records: Sequence[Encoded]
    ) -> list[SentBatch]:
        for record in records:
            await emit(topic, record.event)
        acknowledged: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        acknowledged.set_result(None)
        return [SentBatch(topic, records, acknowledged)]

    monkeypatch.setattr(emitter, "emit", emit)
    monkeypatch.setattr(emitter, "emit_encoded_batch", emit_encoded_batch)
    return sent


@pytest.fixture
def medstream(monkeypatch: pytest.MonkeyPatch) -> Medstream:
    return agent_test_app(monkeypatch)


@pytest.fixture
def emitted(medstream: Medstream, monkeypatch: pytest.MonkeyPatch) -> Emitted:
    """What the agents publish, as (topic name, event), in order."""
    return capture_emitted(medstream, monkeypatch)


@pytest.fixture
def writes(medstream: Medstream, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Changelog writes of the patient table, by key."""
    changelog = medstream.patients.store.table.changelog
    counted: Counter[str] = Counter()
    append = changelog.append

    async def counting(changes: Mapping[int, Changes]) -> dict[int, int]:
        for partition_changes in changes.values():
            counted.update(decode_key(key) for key in partition_changes)
        return await append(changes)

    monkeypatch.setattr(changelog, "append", counting)
    return counted
