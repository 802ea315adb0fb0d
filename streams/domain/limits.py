"""The bounds one patient's input must keep, so that no event can make a record too large."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar

from streams.contracts.codecs import ContractError
from streams.contracts.models import DoseTaken, Event, MedicationPrescribed, ScheduleSet
from streams.domain.patient import PatientState


class LimitExceededError(ContractError):
    """A valid event that would break one of the caps; the message names the cap's setting."""

    error_type: ClassVar[str] = "LimitExceeded"


class ClockSkewError(ContractError):
    """An event dated further ahead of the worker's clock than the allowed skew."""

    error_type: ClassVar[str] = "ClockSkewError"


@dataclass(frozen=True)
class Limits:
    """The caps (each a setting, see streams/settings.py)."""

    max_active_medications: int = 200
    max_times_per_schedule: int = 24
    max_name_length: int = 200
    max_unit_length: int = 50
    max_clock_skew: timedelta = timedelta(minutes=5)


def check_clock_skew(event: Event, now: datetime, limits: Limits) -> None:
    """Refuse an event from the future: a clock far ahead (or a date typed as 2999) would move
    the patient's de-duplication horizon and lock every later event out."""
    latest = now + limits.max_clock_skew
    skew = f"{limits.max_clock_skew.total_seconds():g} s (MEDSTREAM_MAX_CLOCK_SKEW_SECONDS)"
    if event.occurred_at > latest:
        raise ClockSkewError(
            f"{event.event_type}: occurred_at is more than {skew} ahead of the worker's clock"
        )
    if isinstance(event, DoseTaken) and event.taken_at is not None and event.taken_at > latest:
        raise ClockSkewError(
            f"{event.event_type}: taken_at is more than {skew} ahead of the worker's clock"
        )


def check_limits(state: PatientState, event: Event, limits: Limits) -> None:
    """Refuse an event that would take the patient's state past a cap; the state is as it is
    before the event."""
    if isinstance(event, MedicationPrescribed):
        _at_most(event, "name", len(event.name), limits.max_name_length, "MAX_NAME_LENGTH")
        _at_most(
            event, "dose_unit", len(event.dose_unit), limits.max_unit_length, "MAX_UNIT_LENGTH"
        )
        if state.active_medication(event.medication_id) is None:
            active = sum(1 for record in state.medications.values() if record.active)
            _at_most(
                event,
                "active medications",
                active + 1,
                limits.max_active_medications,
                "MAX_ACTIVE_MEDICATIONS",
            )
    elif isinstance(event, ScheduleSet):
        _at_most(
            event,
            "times_of_day",
            len(event.times_of_day),
            limits.max_times_per_schedule,
            "MAX_TIMES_PER_SCHEDULE",
        )
        if event.medication_id not in state.schedules:
            # Schedules may come before their prescription, so they are counted on their own.
            _at_most(
                event,
                "schedules",
                len(state.schedules) + 1,
                limits.max_active_medications,
                "MAX_ACTIVE_MEDICATIONS",
            )


def _at_most(event: Event, what: str, value: int, cap: int, setting: str) -> None:
    if value > cap:
        raise LimitExceededError(
            f"{event.event_type}: {what} would exceed the cap of {cap} (MEDSTREAM_{setting})"
        )
