"""Files of events are validated line by line, with the line number and reason of each problem."""

from __future__ import annotations

import json
from typing import Any

from streams.publish import check_events


def event(event_id: str, **overrides: Any) -> dict[str, Any]:
    payload = {
        "event_id": event_id,
        "event_type": "ScheduleCleared",
        "patient_id": "p1",
        "occurred_at": "2026-11-29T08:00:00Z",
        "medication_id": "m1",
    }
    payload.update(overrides)
    return payload


def test_json_lines_with_blank_and_comment_lines() -> None:
    text = "\n".join(
        [
            "# a comment",
            json.dumps(event("e1")),
            "",
            json.dumps(event("e2", event_type="MedicationTeleported")),
            json.dumps(event("e3", event_type="ScheduleSet", timezone="Nowhere/Special")),
            "{not json",
            json.dumps(event("e4", event_type="RefillAlert")),
            json.dumps(event("e5", event_type="DoseSkipped")),
        ]
    )
    checked = check_events(text)
    assert [(v.line, v.event.event_id) for v in checked.valid] == [(2, "e1"), (8, "e5")]
    assert [v.topic.base_name for v in checked.valid] == ["schedule-events", "medication-events"]
    reasons = {invalid.line: invalid.reason for invalid in checked.invalid}
    assert set(reasons) == {4, 5, 6, 7}
    assert "event_type: not an event type of the contract" in reasons[4]
    assert "timezone: unknown IANA time zone" in reasons[5]
    assert "times_of_day: Field required" in reasons[5]
    assert "not valid JSON" in reasons[6]
    assert "output of medstream" in reasons[7]


def test_a_json_array_reports_positions() -> None:
    checked = check_events(json.dumps([event("e1"), event("e2", patient_id="")]))
    assert [v.line for v in checked.valid] == [1]
    assert [i.line for i in checked.invalid] == [2]
    assert "patient_id" in checked.invalid[0].reason


def test_a_single_pretty_printed_object() -> None:
    checked = check_events("\n\n" + json.dumps(event("e1"), indent=2))
    assert [(v.line, v.event.event_id) for v in checked.valid] == [(3, "e1")]
    assert checked.invalid == []


def test_contact_details_never_reach_the_reasons() -> None:
    contact = "jane.doe@example.org"
    text = json.dumps(
        {
            **event("e1", event_type="ContactPreferencesSet"),
            "channels": [{"kind": "carrier-pigeon", "target": contact}],
            "timezone": "Europe/Berlin",
        }
    )
    checked = check_events(text)
    assert len(checked.invalid) == 1
    assert "channels.0.kind" in checked.invalid[0].reason
    assert contact not in checked.invalid[0].reason
