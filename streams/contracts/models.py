"""Typed, validated models of every event of the contract (`.avsc` files are their wire form)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time
from typing import Annotated, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    model_validator,
)

from streams.contracts.vocabulary import (
    ChannelKind,
    DeliveryStatus,
    RefillReason,
    Severity,
    Weekday,
)

_TIME_OF_DAY = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")


def parse_time_of_day(text: str) -> time:
    """'HH:MM' or 'HH:MM:SS' (24-hour) as a time; ValueError otherwise."""
    match = _TIME_OF_DAY.match(text)
    if match is None:
        raise ValueError("must be a 24-hour local time 'HH:MM' or 'HH:MM:SS'")
    hours, minutes, seconds = match.groups()
    return time(int(hours), int(minutes), int(seconds or 0))


def _check_time_of_day(text: str) -> str:
    parse_time_of_day(text)
    return text


def _check_timezone(name: str) -> str:
    # Messages never echo the value: error texts must be free of anything a producer sent.
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("unknown IANA time zone") from None
    return name


# The range of every timestamp and date of the contract. Outside it, arithmetic on them (UTC
# conversion of year 1 or 9999, a slot plus the grace window, a retention horizon) overflows;
# inside it, every medication event that can really happen fits.
EARLIEST_INSTANT = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_INSTANT = datetime(2200, 1, 1, tzinfo=UTC)
_RANGE_TEXT = "must lie between 1970-01-01 and 2200-01-01 (UTC)"


def _to_utc_millis(value: datetime) -> datetime:
    # Avro's timestamp-millis keeps UTC milliseconds; normalising here makes JSON and Avro
    # decode to equal events and keeps ids derived from timestamps identical across encodings.
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00+01:00 is before year 1 in UTC: pydantic passes only ValueError on
        # as a validation error, anything else would escape the intake.
        raise ValueError(_RANGE_TEXT) from None
    if not EARLIEST_INSTANT <= utc < LATEST_INSTANT:
        raise ValueError(_RANGE_TEXT)
    return utc.replace(microsecond=value.microsecond // 1000 * 1000)


def _check_date_range(value: date) -> date:
    if not EARLIEST_INSTANT.date() <= value < LATEST_INSTANT.date():
        raise ValueError(_RANGE_TEXT)
    return value


def _check_times_of_day(times: list[str]) -> list[str]:
    if len({parse_time_of_day(t) for t in times}) != len(times):
        raise ValueError("times must not repeat")
    return times


def _check_weekdays(days: list[Weekday] | None) -> list[Weekday] | None:
    if days is not None and len(set(days)) != len(days):
        raise ValueError("days must not repeat")
    return days


# Field types. The model config is strict (no "5" for 5, no 1 for "1"); timestamps, dates and
# enumerations are the exception because JSON carries them as strings.
Text = Annotated[str, Field(min_length=1, max_length=1000)]
Identifier = Annotated[str, Field(min_length=1, max_length=200)]
Timestamp = Annotated[AwareDatetime, Strict(False), AfterValidator(_to_utc_millis)]
LocalDate = Annotated[date, Strict(False), AfterValidator(_check_date_range)]
TimeOfDay = Annotated[str, AfterValidator(_check_time_of_day)]
TimeZoneName = Annotated[str, AfterValidator(_check_timezone)]
PositiveQuantity = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeQuantity = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0, le=2**31 - 1)]


class ContractModel(BaseModel):
    """Base of every model of the contract: strict, immutable, tolerant of unknown fields."""

    # Unknown fields are ignored, not refused: upstream may add optional fields before every
    # consumer knows them (backward-compatible evolution).
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")


class Event(ContractModel):
    """The envelope every event carries."""

    EVENT_TYPE: ClassVar[str]

    event_id: Identifier
    event_type: str
    patient_id: Identifier
    occurred_at: Timestamp


class MedicationPrescribed(Event):
    """A medication was prescribed (or re-prescribed) for a patient."""

    EVENT_TYPE: ClassVar[str] = "MedicationPrescribed"
    event_type: Literal["MedicationPrescribed"] = "MedicationPrescribed"
    medication_id: Identifier
    name: Text
    rxnorm_code: Annotated[str, Field(pattern=r"^\d{1,10}$")] | None = None
    dose_quantity: PositiveQuantity
    dose_unit: Text
    supply_quantity: NonNegativeQuantity
    refills_remaining: Count
    refill_threshold_days: Annotated[int, Field(ge=0, le=365)] = 7
    # A SNOMED CT route code or a word; an unknown one is not an error (it reads as oral).
    route: Annotated[str, Field(min_length=1, max_length=100)] | None = None


class MedicationDiscontinued(Event):
    """A medication was stopped."""

    EVENT_TYPE: ClassVar[str] = "MedicationDiscontinued"
    event_type: Literal["MedicationDiscontinued"] = "MedicationDiscontinued"
    medication_id: Identifier
    reason: Text | None = None


class DoseTaken(Event):
    """The patient took a dose."""

    EVENT_TYPE: ClassVar[str] = "DoseTaken"
    event_type: Literal["DoseTaken"] = "DoseTaken"
    medication_id: Identifier
    quantity: PositiveQuantity | None = None
    taken_at: Timestamp | None = None
    scheduled_for: Timestamp | None = None


class DoseSkipped(Event):
    """The patient deliberately skipped a dose."""

    EVENT_TYPE: ClassVar[str] = "DoseSkipped"
    event_type: Literal["DoseSkipped"] = "DoseSkipped"
    medication_id: Identifier
    scheduled_for: Timestamp | None = None
    reason: Text | None = None


class RefillDispensed(Event):
    """A pharmacy dispensed a refill."""

    EVENT_TYPE: ClassVar[str] = "RefillDispensed"
    event_type: Literal["RefillDispensed"] = "RefillDispensed"
    medication_id: Identifier
    quantity: PositiveQuantity
    refills_remaining: Count | None = None


class ScheduleSet(Event):
    """The dosing schedule of one medication."""

    EVENT_TYPE: ClassVar[str] = "ScheduleSet"
    event_type: Literal["ScheduleSet"] = "ScheduleSet"
    medication_id: Identifier
    timezone: TimeZoneName
    times_of_day: Annotated[
        list[TimeOfDay], Field(min_length=1, max_length=48), AfterValidator(_check_times_of_day)
    ]
    days_of_week: (
        Annotated[
            list[Annotated[Weekday, Strict(False)]],
            Field(min_length=1, max_length=7),
            AfterValidator(_check_weekdays),
        ]
        | None
    ) = None
    start_date: LocalDate | None = None
    end_date: LocalDate | None = None

    @model_validator(mode="after")
    def _end_not_before_start(self) -> ScheduleSet:
        if self.start_date and self.end_date and self.end_date < self.start_date:
            raise ValueError("end_date is before start_date")
        return self


class ScheduleCleared(Event):
    """The medication's schedule was removed."""

    EVENT_TYPE: ClassVar[str] = "ScheduleCleared"
    event_type: Literal["ScheduleCleared"] = "ScheduleCleared"
    medication_id: Identifier


class ContactChannel(ContractModel):
    """One way to reach a person."""

    kind: Annotated[ChannelKind, Strict(False)]
    target: Text


class QuietHours(ContractModel):
    """A local time range with no non-urgent notifications (may span midnight)."""

    start: TimeOfDay
    end: TimeOfDay


class ContactPreferencesSet(Event):
    """How and when to reach the patient and their caregivers."""

    EVENT_TYPE: ClassVar[str] = "ContactPreferencesSet"
    event_type: Literal["ContactPreferencesSet"] = "ContactPreferencesSet"
    channels: Annotated[list[ContactChannel], Field(max_length=20)]
    timezone: TimeZoneName
    quiet_hours: QuietHours | None = None
    caregiver_channels: Annotated[list[ContactChannel], Field(max_length=20)] = []


class ReminderDue(Event):
    """A scheduled dose is due now."""

    EVENT_TYPE: ClassVar[str] = "ReminderDue"
    event_type: Literal["ReminderDue"] = "ReminderDue"
    reminder_id: Identifier
    medication_id: Identifier
    medication_name: Text
    dose_quantity: PositiveQuantity
    dose_unit: Text
    scheduled_for: Timestamp


class DoseMissed(Event):
    """No DoseTaken or DoseSkipped arrived for a slot within the grace window."""

    EVENT_TYPE: ClassVar[str] = "DoseMissed"
    event_type: Literal["DoseMissed"] = "DoseMissed"
    reminder_id: Identifier
    medication_id: Identifier
    scheduled_for: Timestamp
    grace_minutes: Count
    medication_name: Text | None = None


class RefillAlert(Event):
    """A medication's supply needs attention."""

    EVENT_TYPE: ClassVar[str] = "RefillAlert"
    event_type: Literal["RefillAlert"] = "RefillAlert"
    alert_id: Identifier
    medication_id: Identifier
    medication_name: Text
    reason: Annotated[RefillReason, Strict(False)]
    supply_quantity: NonNegativeQuantity
    days_of_supply_remaining: NonNegativeQuantity | None = None
    refills_remaining: Count


class InteractionWarning(Event):
    """Two of the patient's active medications interact."""

    EVENT_TYPE: ClassVar[str] = "InteractionWarning"
    event_type: Literal["InteractionWarning"] = "InteractionWarning"
    warning_id: Identifier
    medication_ids: Annotated[list[Identifier], Field(min_length=2, max_length=2)]
    medication_names: Annotated[list[Text], Field(min_length=2, max_length=2)]
    severity: Annotated[Severity, Strict(False)]
    description: Text
    source: Text


class NotificationOutcome(Event):
    """The outcome of delivering one event on one channel."""

    EVENT_TYPE: ClassVar[str] = "NotificationOutcome"
    event_type: Literal["NotificationOutcome"] = "NotificationOutcome"
    notification_id: Identifier
    source_event_id: Identifier
    source_event_type: Identifier
    channel: Identifier
    status: Annotated[DeliveryStatus, Strict(False)]
    attempts: Count
    error: Text | None = None


class RecordHeader(ContractModel):
    """One Kafka record header, its value base64-encoded."""

    key: str
    value: str | None = None


class DeadLetter(Event):
    """An input that could not be decoded, validated or processed."""

    EVENT_TYPE: ClassVar[str] = "DeadLetter"
    event_type: Literal["DeadLetter"] = "DeadLetter"
    # The key of an undecodable record may be missing or binary: the id may then be empty.
    patient_id: Annotated[str, Field(max_length=200)]
    original_topic: Annotated[str, Field(min_length=1, max_length=249)]  # Kafka's longest name
    partition: Count
    offset: Annotated[int, Field(ge=0, le=2**63 - 1)]  # Avro long
    key: str | None = None
    value: str | None = None
    headers: list[RecordHeader] = []
    error_type: Identifier
    error_message: Text
    failed_at: Timestamp
    # Set when the key, value or headers were cut to keep the dead letter under the broker's
    # record limit; the original stays at original_topic/partition/offset.
    truncated: bool = False
    value_length: Annotated[int, Field(ge=0, le=2**63 - 1)] | None = None
    value_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None


class AdminAlert(Event):
    """Something operators must look at."""

    EVENT_TYPE: ClassVar[str] = "AdminAlert"
    event_type: Literal["AdminAlert"] = "AdminAlert"
    patient_id: Annotated[str, Field(max_length=200)]
    alert_id: Identifier
    alert_type: Identifier
    message: Text
    source_event_id: Identifier | None = None
    details: dict[str, str] = {}


class AuditRecord(Event):
    """An administrative action."""

    EVENT_TYPE: ClassVar[str] = "AuditRecord"
    event_type: Literal["AuditRecord"] = "AuditRecord"
    patient_id: Annotated[str, Field(max_length=200)] = ""
    audit_id: Identifier
    actor: Identifier
    action: Identifier
    target: Text
    parameters: dict[str, str] = {}
    outcome: Text


InputEvent = (
    MedicationPrescribed
    | MedicationDiscontinued
    | DoseTaken
    | DoseSkipped
    | RefillDispensed
    | ScheduleSet
    | ScheduleCleared
    | ContactPreferencesSet
)
OutputEvent = (
    ReminderDue
    | DoseMissed
    | RefillAlert
    | InteractionWarning
    | NotificationOutcome
    | DeadLetter
    | AdminAlert
    | AuditRecord
)

INPUT_EVENT_TYPES: tuple[type[Event], ...] = (
    MedicationPrescribed,
    MedicationDiscontinued,
    DoseTaken,
    DoseSkipped,
    RefillDispensed,
    ScheduleSet,
    ScheduleCleared,
    ContactPreferencesSet,
)
OUTPUT_EVENT_TYPES: tuple[type[Event], ...] = (
    ReminderDue,
    DoseMissed,
    RefillAlert,
    InteractionWarning,
    NotificationOutcome,
    DeadLetter,
    AdminAlert,
    AuditRecord,
)
EVENT_MODELS: dict[str, type[Event]] = {
    model.EVENT_TYPE: model for model in (*INPUT_EVENT_TYPES, *OUTPUT_EVENT_TYPES)
}
