"""The demo scenario tells the story the README promises, with unique ids and proper times."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from streams.demo import build_scenario, console_deliveries, describe
from streams.publish import check_events


def test_the_story() -> None:
    now = datetime(2026, 1, 15, 6, 59, 30, tzinfo=UTC)
    scenario = build_scenario(now, "run1")
    types = [item["event_type"] for item in scenario]
    assert types[0] == "ContactPreferencesSet"
    assert Counter(types)["MedicationPrescribed"] == 3
    assert Counter(types)["ScheduleSet"] == 2
    assert Counter(types)["DoseTaken"] == 7
    assert types[-1] == "MedicationPrescribed"
    assert scenario[-1]["rxnorm_code"] == "1191"  # aspirin, which meets warfarin

    ids = [item["event_id"] for item in scenario]
    assert len(set(ids)) == len(ids)
    checked = check_events("\n".join(json.dumps(item) for item in scenario))
    assert checked.invalid == []
    assert len(checked.valid) == len(scenario)
    assert len({item["patient_id"] for item in scenario}) == 1

    # One minute ahead, in the patient's zone (UTC-5 in January in New York).
    schedule = next(item for item in scenario if item["event_type"] == "ScheduleSet")
    assert schedule["times_of_day"] == ["02:00:30"]
    for item in scenario:
        occurred = datetime.fromisoformat(item["occurred_at"])
        assert occurred.tzinfo is not None
        assert now - timedelta(minutes=1) <= occurred <= now


def test_supply_runs_low_after_the_doses() -> None:
    scenario = build_scenario(datetime.now(UTC), "run2")
    metformin = next(item for item in scenario if item.get("medication_id") == "med-metformin")
    doses = sum(
        1
        for item in scenario
        if item["event_type"] == "DoseTaken" and item["medication_id"] == "med-metformin"
    )
    remaining = metformin["supply_quantity"] - doses * metformin["dose_quantity"]
    days_left = remaining / (2 * metformin["dose_quantity"])
    assert days_left < metformin["refill_threshold_days"] < metformin["supply_quantity"] / 2


def test_describe_is_readable_for_any_bytes() -> None:
    assert "not JSON" in describe("dead-letters", b"\xc3\x01\x00")
    line = describe("refill-alerts", b'{"event_type": "RefillAlert", "reason": "LOW_SUPPLY"}')
    assert "RefillAlert" in line
    assert "LOW_SUPPLY" in line


def test_console_deliveries_are_read_from_the_worker_log(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_text(
        "[2026] [1] [WARNING] [medstream → patient] Medication reminder: Time for it.\n"
        "[2026] [1] [INFO] something else\n"
        "[2026] [1] [WARNING] [medstream → caregiver] Missed dose: half a li"
    )
    lines, offset = console_deliveries(log, 0)
    assert lines == ["[medstream → patient] Medication reminder: Time for it."]
    with log.open("a") as handle:
        handle.write("ne\n")
    more, _ = console_deliveries(log, offset)
    assert more == ["[medstream → caregiver] Missed dose: half a line"]
