"""Unit tests for notification messages: wording per event type, local times, the JSON body."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from streams.contracts.models import DoseMissed, InteractionWarning, RefillAlert, ReminderDue
from streams.notify.messages import Message, NotifiableEvent, render

NEW_YORK = "America/New_York"


def reminder(**changes: Any) -> ReminderDue:
    fields: dict[str, Any] = {
        "event_id": "rem-1",
        "patient_id": "patient-1",
        "occurred_at": "2026-03-03T13:00:00Z",
        "reminder_id": "rem-1",
        "medication_id": "med-warfarin",
        "medication_name": "Warfarin sodium",
        "dose_quantity": 5.0,
        "dose_unit": "mg",
        "scheduled_for": "2026-03-03T13:00:00Z",
    }
    return ReminderDue.model_validate({**fields, **changes})


def missed(**changes: Any) -> DoseMissed:
    fields: dict[str, Any] = {
        "event_id": "missed-1",
        "patient_id": "patient-1",
        "occurred_at": "2026-03-03T13:30:00Z",
        "reminder_id": "rem-1",
        "medication_id": "med-warfarin",
        "medication_name": "Warfarin sodium",
        "scheduled_for": "2026-03-03T13:00:00Z",
        "grace_minutes": 30,
    }
    return DoseMissed.model_validate({**fields, **changes})


def refill(**changes: Any) -> RefillAlert:
    fields: dict[str, Any] = {
        "event_id": "refill-1",
        "patient_id": "patient-1",
        "occurred_at": "2026-03-03T13:00:00Z",
        "alert_id": "refill-1",
        "medication_id": "med-atorvastatin",
        "medication_name": "Atorvastatin",
        "reason": "LOW_SUPPLY",
        "supply_quantity": 11.0,
        "days_of_supply_remaining": 5.5,
        "refills_remaining": 2,
    }
    return RefillAlert.model_validate({**fields, **changes})


def warning(**changes: Any) -> InteractionWarning:
    fields: dict[str, Any] = {
        "event_id": "ddi-1",
        "patient_id": "patient-1",
        "occurred_at": "2026-03-03T13:00:00Z",
        "warning_id": "ddi-1",
        "medication_ids": ["med-warfarin", "med-aspirin"],
        "medication_names": ["Warfarin sodium", "Aspirin"],
        "severity": "major",
        "description": "Increased risk of bleeding",
        "source": "DDInter 2.0",
    }
    return InteractionWarning.model_validate({**fields, **changes})


# --- ReminderDue ----------------------------------------------------------------------------


def test_reminder_names_the_drug_dose_and_local_time() -> None:
    message = render(reminder(), NEW_YORK, "ntf-1")
    assert message.subject == "Medication reminder: Warfarin sodium"
    assert message.text == (
        "Time for your Warfarin sodium: 5 mg, due at 08:00 (Tue 3 Mar, America/New_York)."
    )
    assert message.notification_id == "ntf-1"


def test_reminder_in_summer_time_uses_the_summer_offset() -> None:
    summer = reminder(scheduled_for="2026-07-14T12:00:00Z", occurred_at="2026-07-14T12:00:00Z")
    message = render(summer, NEW_YORK, "ntf-1")
    assert "due at 08:00 (Tue 14 Jul, America/New_York)" in message.text
    assert message.body["scheduled_for_local"] == "2026-07-14T08:00:00.000-04:00"
    assert message.body["scheduled_for"] == "2026-07-14T12:00:00.000+00:00"


def test_the_local_date_is_the_patients_not_utcs() -> None:
    # 03:30 UTC on the 4th is still the evening of the 3rd in New York.
    late = reminder(scheduled_for="2026-03-04T03:30:00Z")
    assert "due at 22:30 (Tue 3 Mar, America/New_York)" in render(late, NEW_YORK, "n").text
    # ... and already the afternoon of the 4th in Auckland.
    assert (
        "due at 16:30 (Wed 4 Mar, Pacific/Auckland)" in render(late, "Pacific/Auckland", "n").text
    )


def test_seconds_are_shown_only_when_the_schedule_has_them() -> None:
    odd = reminder(scheduled_for="2026-03-03T13:00:30Z")
    assert "due at 08:00:30 (" in render(odd, NEW_YORK, "n").text


@pytest.mark.parametrize(
    ("quantity", "shown"),
    [
        (5.0, "5 mg"),
        (2.5, "2.5 mg"),
        (0.125, "0.125 mg"),
        (1000.0, "1000 mg"),
        (1 / 3, "0.333333 mg"),
    ],
)
def test_dose_quantities_are_shown_without_float_noise(quantity: float, shown: str) -> None:
    assert f": {shown}, due" in render(reminder(dose_quantity=quantity), NEW_YORK, "n").text


def test_reminder_body_carries_ids_fields_and_both_times() -> None:
    body = render(reminder(), NEW_YORK, "ntf-1").body
    assert body == {
        "version": 1,
        "notification_id": "ntf-1",
        "event_type": "ReminderDue",
        "event_id": "rem-1",
        "patient_id": "patient-1",
        "timezone": NEW_YORK,
        "occurred_at": "2026-03-03T13:00:00.000+00:00",
        "occurred_at_local": "2026-03-03T08:00:00.000-05:00",
        "reminder_id": "rem-1",
        "medication_id": "med-warfarin",
        "medication_name": "Warfarin sodium",
        "dose_quantity": 5.0,
        "dose_unit": "mg",
        "scheduled_for": "2026-03-03T13:00:00.000+00:00",
        "scheduled_for_local": "2026-03-03T08:00:00.000-05:00",
        "subject": "Medication reminder: Warfarin sodium",
        "text": "Time for your Warfarin sodium: 5 mg, due at 08:00 (Tue 3 Mar, America/New_York).",
    }


# --- DoseMissed -----------------------------------------------------------------------------


def test_missed_dose_tells_the_caregiver_what_was_not_confirmed() -> None:
    message = render(missed(), NEW_YORK, "ntf-2")
    assert message.subject == "Missed dose: Warfarin sodium"
    assert message.text.startswith(
        "A dose of Warfarin sodium due at 08:00 (Tue 3 Mar, America/New_York) "
        "was not confirmed within 30 minutes of 08:00."
    )
    body = message.body
    assert body["event_type"] == "DoseMissed"
    assert body["grace_minutes"] == 30
    assert body["reminder_id"] == "rem-1"
    assert body["scheduled_for_local"] == "2026-03-03T08:00:00.000-05:00"
    assert body["occurred_at_local"] == "2026-03-03T08:30:00.000-05:00"


@pytest.mark.parametrize(
    ("grace", "phrase"),
    [
        (1, "within 1 minute of 08:00"),
        (60, "within 1 hour of 08:00"),
        (90, "within 1 hour 30 minutes of 08:00"),
        (150, "within 2 hours 30 minutes of 08:00"),
        (0, "not confirmed by 08:00"),
    ],
)
def test_grace_windows_read_naturally(grace: int, phrase: str) -> None:
    assert phrase in render(missed(grace_minutes=grace), NEW_YORK, "n").text


def test_missed_dose_without_a_name_still_reads() -> None:
    message = render(missed(medication_name=None), NEW_YORK, "n")
    assert message.subject == "Missed dose"
    assert message.text.startswith("A dose of a scheduled medication due at 08:00")
    assert message.body["medication_name"] is None


# --- RefillAlert ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "phrase"),
    [
        (5.5, "about 5 days left"),
        (5.99, "about 5 days left"),
        (1.0, "about 1 day left"),
        (1.9, "about 1 day left"),
        (0.4, "less than a day left"),
        (0.0, "less than a day left"),
        (30.0, "about 30 days left"),
    ],
)
def test_days_left_round_down(days: float, phrase: str) -> None:
    text = render(refill(days_of_supply_remaining=days), NEW_YORK, "n").text
    assert f"Your Atorvastatin is running low: {phrase}." in text


def test_low_supply_with_refills_points_to_the_pharmacy() -> None:
    message = render(refill(), NEW_YORK, "n")
    assert message.subject == "Refill soon: Atorvastatin"
    assert message.text == (
        "Your Atorvastatin is running low: about 5 days left. "
        "You have 2 refills left; please ask your pharmacy for one soon."
    )


def test_low_supply_without_a_schedule_says_no_number() -> None:
    text = render(refill(days_of_supply_remaining=None, refills_remaining=1), NEW_YORK, "n").text
    assert text == (
        "Your Atorvastatin is running low. "
        "You have 1 refill left; please ask your pharmacy for one soon."
    )


def test_out_of_supply_is_urgent_in_tone() -> None:
    message = render(
        refill(reason="OUT_OF_SUPPLY", days_of_supply_remaining=0.0, refills_remaining=0),
        NEW_YORK,
        "n",
    )
    assert message.subject == "Out of Atorvastatin"
    assert "You have run out of Atorvastatin" in message.text
    assert "ask your prescriber for a new prescription as soon as you can" in message.text


def test_no_refills_remaining_points_to_the_prescriber() -> None:
    message = render(
        refill(reason="NO_REFILLS_REMAINING", days_of_supply_remaining=3.2, refills_remaining=0),
        NEW_YORK,
        "n",
    )
    assert message.subject == "No refills left: Atorvastatin"
    assert message.text == (
        "Your Atorvastatin is running low (about 3 days left) and no refills remain on the "
        "prescription. Please ask your prescriber for a new prescription soon."
    )


def test_refill_body_keeps_the_exact_numbers() -> None:
    body = render(refill(days_of_supply_remaining=5.5), NEW_YORK, "n").body
    assert body["reason"] == "LOW_SUPPLY"
    assert body["days_of_supply_remaining"] == 5.5
    assert body["supply_quantity"] == 11.0
    assert body["refills_remaining"] == 2
    assert body["alert_id"] == "refill-1"
    assert body["occurred_at_local"] == "2026-03-03T08:00:00.000-05:00"


# --- InteractionWarning ---------------------------------------------------------------------


def test_interaction_warning_names_both_drugs_severity_source_and_advice() -> None:
    message = render(warning(), NEW_YORK, "n")
    assert message.subject == "Interaction warning (major): Warfarin sodium + Aspirin"
    assert message.text == (
        "Warfarin sodium and Aspirin have a major interaction. Increased risk of bleeding. "
        "Source: DDInter 2.0. Please contact your prescriber or pharmacist today, before your "
        "next dose if you can. Do not stop or change a medication without their advice."
    )


@pytest.mark.parametrize(
    ("severity", "lead", "advice"),
    [
        ("contraindicated", "should not normally be taken together", "today"),
        ("major", "have a major interaction", "today"),
        ("moderate", "have a moderate interaction", "mention it to your prescriber"),
        ("minor", "have a minor interaction", "next time you speak to them"),
    ],
)
def test_every_severity_has_its_own_wording(severity: str, lead: str, advice: str) -> None:
    message = render(warning(severity=severity), NEW_YORK, "n")
    assert f"({severity})" in message.subject
    assert lead in message.text
    assert advice in message.text
    assert "pharmacist" in message.text
    assert message.body["severity"] == severity


def test_interaction_body_lists_both_drugs() -> None:
    body = render(warning(description="Bleeding risk."), NEW_YORK, "n").body
    assert body["medication_ids"] == ["med-warfarin", "med-aspirin"]
    assert body["medication_names"] == ["Warfarin sodium", "Aspirin"]
    assert body["description"] == "Bleeding risk."
    assert body["source"] == "DDInter 2.0"
    assert body["warning_id"] == "ddi-1"


def test_a_description_ending_in_a_full_stop_gets_no_second_one() -> None:
    text = render(warning(description="Bleeding risk."), NEW_YORK, "n").text
    assert "Bleeding risk. Source:" in text


# --- Every type -----------------------------------------------------------------------------

ALL_EVENTS: list[NotifiableEvent] = [
    reminder(),
    missed(),
    refill(),
    refill(reason="OUT_OF_SUPPLY"),
    refill(reason="NO_REFILLS_REMAINING"),
    warning(),
]


@pytest.mark.parametrize("event", ALL_EVENTS, ids=lambda e: f"{e.event_type}")
def test_bodies_are_plain_json_with_the_common_fields(event: NotifiableEvent) -> None:
    message = render(event, "Europe/Berlin", "ntf-x")
    assert json.loads(json.dumps(message.body, allow_nan=False)) == message.body
    assert message.body["event_type"] == event.event_type
    assert message.body["event_id"] == event.event_id
    assert message.body["patient_id"] == event.patient_id
    assert message.body["notification_id"] == "ntf-x"
    assert message.body["timezone"] == "Europe/Berlin"
    assert message.body["subject"] == message.subject
    assert message.body["text"] == message.text
    local = datetime.fromisoformat(message.body["occurred_at_local"])
    utc = datetime.fromisoformat(message.body["occurred_at"])
    assert local == utc
    assert local.utcoffset() != utc.utcoffset()


@pytest.mark.parametrize(
    "event",
    [
        reminder(medication_name="Warfarin\nsodium", dose_unit="mg\r\n"),
        missed(medication_name="Warfarin\n\nsodium"),
        refill(medication_name="Atorva\nstatin"),
        warning(medication_names=["Warfarin\nsodium", "Asp\nirin"], description="a\nb"),
    ],
    ids=lambda e: f"{e.event_type}",
)
def test_upstream_line_breaks_never_reach_subject_or_text(event: NotifiableEvent) -> None:
    message = render(event, NEW_YORK, "n")
    for line in (message.subject, message.text):
        assert "\n" not in line
        assert "\r" not in line


def test_message_is_immutable() -> None:
    message = render(reminder(), NEW_YORK, "n")
    assert isinstance(message, Message)
    with pytest.raises(AttributeError):
        message.subject = "changed"  # type: ignore[misc]
