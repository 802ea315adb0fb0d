"""examples/publish_with_client.py and examples/print_alerts.py, run as a user runs them (a
subprocess with the MEDSTREAM_* environment) against the real broker and a real worker."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime

import pytest

from streams.app import create_app
from streams.contracts.codecs import encode_avro, encode_json
from streams.contracts.models import InteractionWarning, RefillAlert
from streams.contracts.schemas import default_catalog
from streams.contracts.vocabulary import RefillReason, Severity
from streams.settings import REPOSITORY_ROOT, Settings
from streams.topics import ensure_topics
from tests.kafka_helpers import produce, running

pytestmark = pytest.mark.integration

EXAMPLES = REPOSITORY_ROOT / "examples"


async def run_example(settings: Settings, name: str, *args: str, timeout: float = 120) -> str:
    """The example's standard output; fails on a non-zero exit. Asynchronous, so that a worker
    running in this event loop keeps working meanwhile."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / name),
        *args,
        cwd=REPOSITORY_ROOT,
        env={**os.environ, **settings.environment()},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, stderr.decode(errors="replace")
    return stdout.decode()


async def test_print_alerts_prints_json_and_avro_alerts(settings: Settings) -> None:
    await ensure_topics(settings)
    now = datetime.now(UTC)
    refill = RefillAlert(
        event_id="refill-example",
        patient_id="p1",
        occurred_at=now,
        alert_id="refill-example",
        medication_id="m1",
        medication_name="Metformin",
        reason=RefillReason.OUT_OF_SUPPLY,
        supply_quantity=0,
        refills_remaining=0,
    )
    warning = InteractionWarning(
        event_id="ddi-example",
        patient_id="p1",
        occurred_at=now,
        warning_id="ddi-example",
        medication_ids=["warfarin", "aspirin"],
        medication_names=["Warfarin", "Aspirin"],
        severity=Severity.MAJOR,
        description="bleeding risk",
        source="test",
    )
    schema = default_catalog().by_name("InteractionWarning")
    assert schema is not None
    await produce(settings, settings.topic_name("refill-alerts"), [(b"p1", encode_json(refill))])
    await produce(
        settings,
        settings.topic_name("interaction-warnings"),
        [(b"p1", encode_avro(schema, warning))],
    )

    output = await run_example(settings, "print_alerts.py", "--max", "2", "--idle", "60")
    assert sorted(output.splitlines()) == [
        "InteractionWarning ddi-example major between warfarin and aspirin",
        "RefillAlert refill-example OUT_OF_SUPPLY supply=0",
    ]
    # Both offsets were committed: the group has nothing more to print.
    assert await run_example(settings, "print_alerts.py", "--idle", "5") == ""


async def test_the_published_story_comes_back_as_a_refill_alert(settings: Settings) -> None:
    await ensure_topics(settings)
    async with running(create_app(settings)):
        published = await run_example(settings, "publish_with_client.py", "example-patient")
        lines = published.splitlines()
        assert [line.split()[1] for line in lines] == [
            "ScheduleSet",
            "MedicationPrescribed",
            "DoseTaken",
            "DoseTaken",
            "DoseTaken",
        ]
        # Run again: the same event_ids, which the worker drops.
        assert await run_example(settings, "publish_with_client.py", "example-patient") == (
            published
        )
        alerts = await run_example(settings, "print_alerts.py", "--max", "1", "--idle", "90")
        # No second alert for the repeated story.
        assert await run_example(settings, "print_alerts.py", "--idle", "5") == ""
    [line] = alerts.splitlines()
    assert line.startswith("RefillAlert refill-")
    assert line.endswith("LOW_SUPPLY supply=9")


async def test_a_fhir_bundle_comes_back_as_its_reminder(settings: Settings) -> None:
    await ensure_topics(settings)
    async with running(create_app(settings)):
        output = await run_example(
            settings, "fhir_bundle_to_reminder.py", "fhir-example", "--lead", "25", timeout=240
        )
    lines = output.splitlines()
    assert [line.split()[3] for line in lines[:-1]] == ["MedicationPrescribed", "ScheduleSet"]
    assert all(line.split()[4].startswith("fhir-") for line in lines[:-1])
    assert lines[-1].startswith("ReminderDue ")
    assert " Metformin 500 mg tablet 1 tablet for " in lines[-1]
