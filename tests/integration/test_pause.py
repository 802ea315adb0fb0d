"""Pause, resume and status on the real broker: nothing processed while paused, nothing lost."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from streams.app import Medstream, create_app
from streams.consumer_groups import wait_until_stable
from streams.ops.control import agent_topics, send_pause_commands
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.integration.test_cli import medstream
from tests.integration.test_patient_state import Events, publish
from tests.kafka_helpers import consume, produce, running
from tests.worker_process import WorkerProcess

pytestmark = pytest.mark.integration


def dose(n: int) -> tuple[bytes, bytes]:
    patient = f"pause-patient-{n % 50}"
    event = {
        "event_id": f"pause-{n}",
        "event_type": "DoseTaken",
        "patient_id": patient,
        "occurred_at": "2026-11-29T08:00:00Z",
        "medication_id": "m1",
    }
    return patient.encode(), json.dumps(event).encode()


async def settle(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.1)


def holding(app: Medstream, *topics: str) -> Callable[[], bool]:
    """Has this in-process worker applied exactly these paused topics (full names)?

    The control follower sets them when it holds their partitions: from then on nothing of
    theirs is handed to an agent, so a check that nothing is processed can start there.
    """
    return lambda: app.app.transport.held_topics == frozenset(topics)  # type: ignore[attr-defined]


def paused_in_log(worker: WorkerProcess) -> str | None:
    """The paused topics a worker process last logged it applied (None before the first)."""
    applied = None
    for line in worker.log_file.read_text(errors="replace").splitlines():
        try:
            message = json.loads(line).get("message")
        except (ValueError, AttributeError):
            continue
        if isinstance(message, str) and message.startswith("paused topics: "):
            applied = message.removeprefix("paused topics: ")
    return applied


async def test_pause_1000_events_then_resume_processes_every_one(settings: Settings) -> None:
    await ensure_topics(settings)
    app = create_app(settings)
    stats = app.stats
    async with running(app):
        await produce(settings, settings.topic_name("medication-events"), [dose(-1)])
        await settle(lambda: stats.total_settled == 1)

        paused = await asyncio.to_thread(
            medstream, settings, "pause", "--topic", "medication-events", "--actor", "night-op"
        )
        assert paused.returncode == 0, paused.stderr
        await settle(holding(app, settings.topic_name("medication-events")))
        await produce(settings, settings.topic_name("medication-events"), map(dose, range(1000)))
        await asyncio.sleep(3)
        assert stats.total_settled == 1, "events were processed while paused"

        status = await asyncio.to_thread(medstream, settings, "status", "--json")
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["paused_topics"] == ["medication-events"]
        lag = sum(
            row["lag"]
            for row in report["consumer_group"]
            if row["topic"] == settings.topic_name("medication-events")
        )
        assert lag >= 1000  # the paused events wait in Kafka
        assert report["records"]["medication-events"] == 1001

        resumed = await asyncio.to_thread(
            medstream, settings, "resume", "--agent", "apply-patient-events", "--actor", "night-op"
        )
        assert resumed.returncode == 0, resumed.stderr
        await settle(lambda: stats.total_settled == 1001, timeout=60)
        await asyncio.sleep(1)
    assert sum(stats.processed.values()) + sum(stats.duplicates.values()) == 1001
    assert sum(stats.dead_lettered.values()) == 0

    records = await consume(settings, settings.topic_name("audit-log"), 4, 5)
    # Keyed by target, so spread over partitions: their order is the time of the action.
    audit = sorted((json.loads(r.value) for r in records), key=lambda a: a["occurred_at"])
    assert [(a["actor"], a["action"], a["target"]) for a in audit] == [
        ("night-op", "pause", "topic:medication-events"),
        ("night-op", "resume", "topic:medication-events"),
        ("night-op", "resume", "topic:schedule-events"),
        ("night-op", "resume", "topic:patient-events"),
    ]


async def test_a_pause_survives_a_restart(settings: Settings) -> None:
    await ensure_topics(settings)
    await send_pause_commands(settings, ["medication-events"], paused=True, actor="test")
    first = create_app(settings)
    async with running(first):
        await produce(settings, settings.topic_name("medication-events"), [dose(1), dose(2)])
        # Every pausable topic is held until the control topic is read, then only the paused.
        await settle(holding(first, settings.topic_name("medication-events")))
        await asyncio.sleep(3)
        assert first.stats.total_settled == 0
    second = create_app(settings)  # a restarted worker reads the pause from the control topic
    async with running(second):
        await settle(holding(second, settings.topic_name("medication-events")))
        await asyncio.sleep(3)
        assert second.stats.total_settled == 0
        await send_pause_commands(settings, ["medication-events"], paused=False, actor="test")
        await settle(lambda: second.stats.total_settled == 2)


def test_pause_names_what_it_can_pause(settings: Settings) -> None:
    result = medstream(settings, "pause", "--topic", "refill-alertz")
    assert result.returncode == 2
    assert "no agent consumes 'refill-alertz'" in result.stderr
    result = medstream(settings, "resume")
    assert result.returncode == 2
    assert "--topic or --agent" in result.stderr


async def test_a_pause_reaches_every_worker(settings: Settings, tmp_path: Path) -> None:
    await ensure_topics(settings)
    agent = "apply-patient-events"
    held = ", ".join(
        sorted(
            settings.topic_name(t) for t in agent_topics(create_app(settings).app, settings)[agent]
        )
    )
    workers = [WorkerProcess(settings, tmp_path / f"w{n}", tmp_path / f"w{n}.log") for n in (1, 2)]
    patients = [Events(f"pause-two-{n}") for n in range(20)]  # surely on both partitions
    alerts_topic = settings.topic_name("refill-alerts")
    try:
        for worker in workers:
            worker.start()
        await wait_until_stable(settings, settings.app_id, timeout=120, members=2)
        paused = await asyncio.to_thread(medstream, settings, "pause", "--agent", agent)
        assert paused.returncode == 0, paused.stderr
        # Each worker logs the topics it holds once it has applied the pause (usually within
        # two seconds; however long a loaded machine takes, nothing is published before).
        await settle(lambda: all(paused_in_log(worker) == held for worker in workers), 60)
        await publish(
            settings,
            "medication-events",
            *(events.prescribed("m1", "Metformin", supply_quantity=0) for events in patients),
        )
        await asyncio.sleep(3)
        assert await consume(settings, alerts_topic, 1, timeout=1) == []
        resumed = await asyncio.to_thread(medstream, settings, "resume", "--agent", agent)
        assert resumed.returncode == 0, resumed.stderr
        alerts = await consume(settings, alerts_topic, len(patients), timeout=30)
    finally:
        for worker in workers:
            worker.stop()
    assert {json.loads(a.value)["patient_id"] for a in alerts} == {
        events.patient_id for events in patients
    }
    assert {a.partition for a in alerts} == set(range(settings.topic_partitions))
