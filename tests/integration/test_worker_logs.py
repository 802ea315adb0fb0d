"""A real `medstream worker` writes each log line once, as redacted JSON."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from streams.consumer_groups import wait_until_stable
from streams.demo import console_deliveries
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.integration.test_patient_state import Events, publish
from tests.kafka_helpers import consume
from tests.worker_process import WorkerProcess

pytestmark = pytest.mark.integration

EMAIL = "jane.doe@example.org"
PHONE = "+44 20 7946 0958"


async def test_worker_logs_are_single_redacted_json_lines(
    settings: Settings, tmp_path: Path
) -> None:
    await ensure_topics(settings)
    settings = settings.model_copy(update={"notify_console_enabled": True})
    worker = WorkerProcess(settings, tmp_path / "worker", tmp_path / "worker.log")
    events = Events("p-logs")
    try:
        worker.start()
        await wait_until_stable(settings, settings.app_id, timeout=90)
        # Console targets are labels, but a patient app may put an address or a number there:
        # the console line goes through the log and must come out masked.
        await publish(
            settings,
            "patient-events",
            events.make(
                "ContactPreferencesSet",
                channels=[
                    {"kind": "console", "target": EMAIL},
                    {"kind": "console", "target": PHONE},
                ],
                timezone="UTC",
            ),
        )
        # The contact and the prescriptions travel on two topics with no order between them:
        # prescribe until a refill alert reaches the contact's channels.
        delivered: list[dict[str, Any]] = []
        for attempt in range(10):
            await publish(
                settings,
                "medication-events",
                events.prescribed(f"m{attempt}", "Metformin 500 mg", supply_quantity=0),
            )
            records = await consume(settings, settings.topic_name("notifications"), 50, 3)
            delivered = [
                outcome
                for outcome in (json.loads(record.value) for record in records)
                if outcome["status"] == "delivered"
            ]
            if len(delivered) >= 2:
                break
        assert len(delivered) >= 2, worker.log_tail()
    finally:
        worker.stop()

    text = worker.log_file.read_text(encoding="utf-8")
    lines = text.splitlines()
    entries = []
    for line in lines:
        entry = json.loads(line)  # every line is one JSON object
        assert isinstance(entry, dict), line
        assert {"time", "level", "logger", "message"} <= entry.keys()
        entries.append(entry)
    assert EMAIL not in text
    assert "7946" not in text
    messages = [entry["message"] for entry in entries]
    assert messages.count("[^BoundedWorker]: Ready") == 1
    duplicates = [line for line, count in Counter(lines).items() if count > 1]
    assert not duplicates
    console = [message for message in messages if message.startswith("[medstream → ")]
    assert any(message.startswith("[medstream → [EMAIL]]") for message in console), console
    assert any(message.startswith("[medstream → [PHONE]]") for message in console), console
    # The demo finds the console deliveries in the JSON log.
    shown, _offset = console_deliveries(worker.log_file, 0)
    assert shown
    assert all(line.startswith("[medstream → ") and not line.endswith("}") for line in shown)
