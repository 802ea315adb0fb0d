"""What a notification says: a plain-text rendering and a JSON body per event type (pure)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias
from zoneinfo import ZoneInfo

from streams.contracts.models import DoseMissed, InteractionWarning, RefillAlert, ReminderDue
from streams.contracts.vocabulary import RefillReason, Severity

NotifiableEvent: TypeAlias = ReminderDue | DoseMissed | RefillAlert | InteractionWarning

BODY_VERSION = 1
"""Bumped when a field of the JSON body changes meaning or disappears (additions do not)."""

# Fixed English names: strftime's %a and %b follow the process locale, which would make the
# wording depend on the host the worker happens to run on.
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class Message:
    """One notification, ready for any channel."""

    subject: str
    text: str
    body: dict[str, Any]
    notification_id: str


def render(event: NotifiableEvent, timezone: str, notification_id: str) -> Message:
    """The message for one event, with times in the patient's IANA time zone."""
    zone = ZoneInfo(timezone)
    if isinstance(event, ReminderDue):
        subject, text, fields = _reminder(event, zone, timezone)
    elif isinstance(event, DoseMissed):
        subject, text, fields = _missed(event, zone, timezone)
    elif isinstance(event, RefillAlert):
        subject, text, fields = _refill(event)
    elif isinstance(event, InteractionWarning):
        subject, text, fields = _interaction(event)
    else:
        raise TypeError(f"no message for {type(event).__name__}")
    body: dict[str, Any] = {
        "version": BODY_VERSION,
        "notification_id": notification_id,
        "event_type": event.event_type,
        "event_id": event.event_id,
        "patient_id": event.patient_id,
        "timezone": timezone,
        **_instant("occurred_at", event.occurred_at, zone),
        **fields,
        "subject": subject,
        "text": text,
    }
    return Message(subject=subject, text=text, body=body, notification_id=notification_id)


_Rendered: TypeAlias = tuple[str, str, dict[str, Any]]


def _reminder(event: ReminderDue, zone: ZoneInfo, timezone: str) -> _Rendered:
    name = _clean(event.medication_name)
    dose = f"{_number(event.dose_quantity)} {_clean(event.dose_unit)}"
    due = _when(event.scheduled_for, zone, timezone)
    subject = f"Medication reminder: {name}"
    text = f"Time for your {name}: {dose}, due at {due}."
    return (
        subject,
        text,
        {
            "reminder_id": event.reminder_id,
            "medication_id": event.medication_id,
            "medication_name": event.medication_name,
            "dose_quantity": event.dose_quantity,
            "dose_unit": event.dose_unit,
            **_instant("scheduled_for", event.scheduled_for, zone),
        },
    )


def _missed(event: DoseMissed, zone: ZoneInfo, timezone: str) -> _Rendered:
    # Written for the caregiver, who reads it about someone else.
    name = _clean(event.medication_name) if event.medication_name else None
    due = _when(event.scheduled_for, zone, timezone)
    clock = _clock(event.scheduled_for.astimezone(zone))
    window = (
        f"within {_minutes(event.grace_minutes)} of {clock}"
        if event.grace_minutes > 0
        else f"by {clock}"
    )
    subject = f"Missed dose: {name}" if name else "Missed dose"
    text = (
        f"A dose of {name or 'a scheduled medication'} due at {due} was not confirmed "
        f"{window}. Please check in; it may have been taken without being recorded."
    )
    return (
        subject,
        text,
        {
            "reminder_id": event.reminder_id,
            "medication_id": event.medication_id,
            "medication_name": event.medication_name,
            **_instant("scheduled_for", event.scheduled_for, zone),
            "grace_minutes": event.grace_minutes,
        },
    )


def _refill(event: RefillAlert) -> _Rendered:
    name = _clean(event.medication_name)
    days = event.days_of_supply_remaining
    if event.reason is RefillReason.OUT_OF_SUPPLY:
        subject = f"Out of {name}"
        text = (
            f"You have run out of {name}: what is left is not enough for a full dose. "
            + _refill_advice(event.refills_remaining, urgent=True)
        )
    elif event.reason is RefillReason.NO_REFILLS_REMAINING:
        subject = f"No refills left: {name}"
        left = f" ({_days_left(days)})" if days is not None else ""
        text = (
            f"Your {name} is running low{left} and no refills remain on the prescription. "
            "Please ask your prescriber for a new prescription soon."
        )
    else:
        subject = f"Refill soon: {name}"
        left = f": {_days_left(days)}" if days is not None else ""
        text = f"Your {name} is running low{left}. " + _refill_advice(
            event.refills_remaining, urgent=False
        )
    return (
        subject,
        text,
        {
            "alert_id": event.alert_id,
            "medication_id": event.medication_id,
            "medication_name": event.medication_name,
            "reason": event.reason.value,
            "supply_quantity": event.supply_quantity,
            "days_of_supply_remaining": days,
            "refills_remaining": event.refills_remaining,
        },
    )


def _refill_advice(refills: int, *, urgent: bool) -> str:
    when = "as soon as you can" if urgent else "soon"
    if refills > 0:
        plural = "refill" if refills == 1 else "refills"
        return f"You have {refills} {plural} left; please ask your pharmacy for one {when}."
    return f"No refills remain; please ask your prescriber for a new prescription {when}."


_SEVERITY_LEAD = {
    Severity.CONTRAINDICATED: "{a} and {b} should not normally be taken together "
    "(contraindicated).",
    Severity.MAJOR: "{a} and {b} have a major interaction.",
    Severity.MODERATE: "{a} and {b} have a moderate interaction.",
    Severity.MINOR: "{a} and {b} have a minor interaction.",
}
_SEVERITY_ADVICE = {
    Severity.CONTRAINDICATED: "Please contact your prescriber or pharmacist today, "
    "before your next dose if you can.",
    Severity.MAJOR: "Please contact your prescriber or pharmacist today, "
    "before your next dose if you can.",
    Severity.MODERATE: "Please mention it to your prescriber or pharmacist soon.",
    Severity.MINOR: "You may want to mention it to your prescriber or pharmacist "
    "next time you speak to them.",
}


def _interaction(event: InteractionWarning) -> _Rendered:
    first, second = (_clean(name) for name in event.medication_names)
    severity = event.severity
    subject = f"Interaction warning ({severity.value}): {first} + {second}"
    text = " ".join(
        (
            _SEVERITY_LEAD[severity].format(a=first, b=second),
            _sentence(_clean(event.description)),
            f"Source: {_sentence(_clean(event.source))}",
            _SEVERITY_ADVICE[severity],
            # Stopping some drugs abruptly (anticoagulants, antiepileptics) is itself dangerous.
            "Do not stop or change a medication without their advice.",
        )
    )
    return (
        subject,
        text,
        {
            "warning_id": event.warning_id,
            "medication_ids": list(event.medication_ids),
            "medication_names": list(event.medication_names),
            "severity": severity.value,
            "description": event.description,
            "source": event.source,
        },
    )


def _instant(key: str, value: datetime, zone: ZoneInfo) -> dict[str, str]:
    # Milliseconds always: the contract's precision, and one fixed shape for receivers.
    return {
        key: value.astimezone(UTC).isoformat(timespec="milliseconds"),
        f"{key}_local": value.astimezone(zone).isoformat(timespec="milliseconds"),
    }


def _when(instant: datetime, zone: ZoneInfo, timezone: str) -> str:
    local = instant.astimezone(zone)
    day = f"{_WEEKDAYS[local.weekday()]} {local.day} {_MONTHS[local.month - 1]}"
    return f"{_clock(local)} ({day}, {timezone})"


def _clock(local: datetime) -> str:
    return local.strftime("%H:%M:%S" if local.second else "%H:%M")


def _minutes(minutes: int) -> str:
    hours, rest = divmod(minutes, 60)
    parts = []
    if hours:
        parts.append(f"{hours} hour" + ("" if hours == 1 else "s"))
    if rest:
        parts.append(f"{rest} minute" + ("" if rest == 1 else "s"))
    return " ".join(parts)


def _days_left(days: float) -> str:
    if days < 1:
        return "less than a day left"
    # Rounded down: telling someone they have more medicine than they do is the worse error.
    whole = math.floor(days)
    return f"about {whole} day left" if whole == 1 else f"about {whole} days left"


def _number(value: float) -> str:
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    shown = f"{value:.6g}"
    return shown if "e" not in shown else f"{value:.2f}"


def _clean(text: str) -> str:
    # Names come from upstream systems: a stray newline must not break a one-line console
    # message or an e-mail header.
    return " ".join(text.split())


def _sentence(text: str) -> str:
    return text if text.endswith((".", "!", "?")) else f"{text}."
