"""The medstream command line against the real broker: topics, publish and schemas."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streams.contracts.schemas import SCHEMAS_DIR
from streams.settings import REPOSITORY_ROOT, Settings
from streams.topics import ensure_topics
from tests import fhir_scenarios
from tests.kafka_helpers import consume

pytestmark = pytest.mark.integration


def medstream(settings: Settings | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if settings is not None:
        env["MEDSTREAM_BOOTSTRAP_SERVERS"] = settings.bootstrap_servers
        env["MEDSTREAM_TOPIC_PREFIX"] = settings.topic_prefix
        env["MEDSTREAM_APP_ID"] = settings.app_id
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def event(event_id: str, patient_id: str, **overrides: Any) -> dict[str, Any]:
    payload = {
        "event_id": event_id,
        "event_type": "DoseTaken",
        "patient_id": patient_id,
        "occurred_at": "2026-11-29T08:00:00Z",
        "medication_id": "m1",
    }
    payload.update(overrides)
    return payload


async def test_publish_sends_nothing_unless_every_line_is_valid(
    settings: Settings, tmp_path: Path
) -> None:
    await ensure_topics(settings)
    events = tmp_path / "events.jsonl"
    events.write_text(
        "\n".join(
            [
                json.dumps(event("e1", "p1")),
                json.dumps(event("e2", "p2", quantity=-1)),
                json.dumps(event("e3", "p2", event_type="ScheduleCleared", medication_id="m2")),
            ]
        )
    )
    refused = medstream(settings, "publish", str(events))
    assert refused.returncode == 1
    assert f"{events}:2: DoseTaken: quantity: Input should be greater than 0" in refused.stderr
    assert "nothing published" in refused.stderr
    assert await consume(settings, settings.topic_name("medication-events"), 1, 3.0) == []

    published = medstream(settings, "publish", "--skip-invalid", str(events))
    assert published.returncode == 0, published.stderr
    assert f"published 1 to {settings.topic_name('medication-events')}" in published.stdout
    assert f"published 1 to {settings.topic_name('schedule-events')}" in published.stdout
    doses = await consume(settings, settings.topic_name("medication-events"), 1)
    schedules = await consume(settings, settings.topic_name("schedule-events"), 1)
    assert [(r.key, json.loads(r.value)["event_id"]) for r in doses] == [(b"p1", "e1")]
    assert [(r.key, json.loads(r.value)["event_id"]) for r in schedules] == [(b"p2", "e3")]


async def test_publish_as_avro(settings: Settings, tmp_path: Path) -> None:
    await ensure_topics(settings)
    events = tmp_path / "events.json"
    events.write_text(json.dumps([event("e1", "p1")]))
    published = medstream(settings, "publish", "--avro", str(events))
    assert published.returncode == 0, published.stderr
    (record,) = await consume(settings, settings.topic_name("medication-events"), 1)
    assert record.value[:2] == b"\xc3\x01"


def test_schemas_check_passes_and_catches_a_breaking_change(tmp_path: Path) -> None:
    passed = medstream(None, "schemas", "check")
    assert passed.returncode == 0, passed.stderr
    assert "backward compatible" in passed.stdout

    broken = tmp_path / "schemas"
    shutil.copytree(SCHEMAS_DIR, broken, ignore=shutil.ignore_patterns("released"))
    dose = json.loads((broken / "DoseTaken.avsc").read_text())
    dose["fields"].append({"name": "site", "type": "string", "doc": "injection site"})
    (broken / "DoseTaken.avsc").write_text(json.dumps(dose))
    failed = medstream(None, "schemas", "check", "--schemas-dir", str(broken))
    assert failed.returncode == 1
    assert "DoseTaken.site" in failed.stderr
    assert "no default" in failed.stderr


def test_schemas_docs_regenerates_the_page(tmp_path: Path) -> None:
    target = tmp_path / "events.md"
    result = medstream(None, "schemas", "docs", "--output", str(target))
    assert result.returncode == 0, result.stderr
    assert target.read_text() == (REPOSITORY_ROOT / "docs" / "events.md").read_text()


async def test_topics_create_makes_the_missing_topics_once(settings: Settings) -> None:
    first = medstream(settings, "topics", "create")
    assert first.returncode == 0, first.stderr
    assert settings.topic_name("medication-events") in first.stdout
    assert settings.topic_name("medstream-control") in first.stdout
    second = medstream(settings, "topics", "create")
    assert second.returncode == 0, second.stderr
    assert "created: nothing (all exist)" in second.stdout


async def test_publish_fhir_maps_first_then_sends_the_file_unchanged_keyed_by_patient(
    settings: Settings, tmp_path: Path
) -> None:
    await ensure_topics(settings)
    topic = settings.topic_name("fhir-resources")
    bundle = tmp_path / "bundle.json"
    bundle.write_bytes(fhir_scenarios.bundle(fhir_scenarios.patient(), fhir_scenarios.warfarin()))
    dry = medstream(settings, "publish", "--fhir", "--dry-run", str(bundle))
    assert dry.returncode == 0, dry.stderr
    assert "1 FHIR record maps to 1 MedicationPrescribed, 1 ScheduleSet" in dry.stdout
    assert await consume(settings, topic, 1, 3.0) == []

    # What the worker would dead-letter is refused, naming the FHIR path and no patient data.
    prn_value, prn_path = fhir_scenarios.unmappable()["prn"]
    prn = tmp_path / "prn.json"
    prn.write_bytes(prn_value)
    refused = medstream(settings, "publish", "--fhir", str(prn))
    assert refused.returncode == 1
    assert f"{prn}: " in refused.stderr
    assert prn_path in refused.stderr
    assert "FhirUnmappable" in refused.stderr
    assert "nothing published" in refused.stderr
    assert fhir_scenarios.PATIENT not in refused.stderr
    assert await consume(settings, topic, 1, 3.0) == []

    published = medstream(settings, "publish", "--fhir", str(bundle))
    assert published.returncode == 0, published.stderr
    assert f"published 1 FHIR record to {topic}" in published.stdout
    [record] = await consume(settings, topic, 1)
    assert record.key == fhir_scenarios.PATIENT.encode()
    assert record.value == bundle.read_bytes()


async def test_publish_fhir_sends_a_bulk_data_ndjson_file_one_record_a_line(
    settings: Settings, tmp_path: Path
) -> None:
    await ensure_topics(settings)
    topic = settings.topic_name("fhir-resources")
    lines = [
        json.dumps(fhir_scenarios.warfarin()),
        json.dumps(fhir_scenarios.administration("ma-1", "mr-warfarin")),
        json.dumps(fhir_scenarios.administration("ma-2", "mr-warfarin", patient_id="fhir-p2")),
    ]
    export = tmp_path / "MedicationExport.ndjson"
    export.write_text("\n".join([*lines[:2], "", '{"resourceType": "MedicationRequest"}']) + "\n")
    refused = medstream(settings, "publish", "--fhir", str(export))
    assert refused.returncode == 1
    # The problem names its line (the blank one is skipped, not counted as a record).
    assert f"{export}:4: MedicationRequest" in refused.stderr
    assert await consume(settings, topic, 1, 3.0) == []

    export.write_text("\n".join(lines) + "\n")
    published = medstream(settings, "publish", "--fhir", str(export))
    assert published.returncode == 0, published.stderr
    assert f"published 3 FHIR records to {topic}: maps to 2 DoseTaken" in published.stdout
    records = sorted(await consume(settings, topic, 3), key=lambda r: (r.partition, r.offset))
    by_patient: dict[bytes, list[bytes]] = {}
    for record in records:
        by_patient.setdefault(record.key, []).append(record.value)
    # Each patient's records on one partition, in the file's order.
    assert by_patient == {
        b"fhir-p1": [lines[0].encode(), lines[1].encode()],
        b"fhir-p2": [lines[2].encode()],
    }
