"""Dose schedules: local times as UTC instants (DST-correct), slot ids, and dose answers."""

from __future__ import annotations

import hashlib
import heapq
import json
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streams.contracts.models import ScheduleSet, parse_time_of_day

_ONE_DAY = timedelta(days=1)
# Days at the very edges of the calendar are never expanded: their instants may not be
# representable in UTC, and no prescription lives there.
_FIRST_DAY = date.min + 2 * _ONE_DAY
_LAST_DAY = date.max - 2 * _ONE_DAY
# How far next_slot_after looks. Local date D only yields instants in (D-1 00:00, D+2 00:00)
# UTC, so 10 days past an anchor A cover every instant of the 7 local dates A+2..A+8 (anchor
# = after) or A..A+6 (anchor = start_date): every weekday, so a schedule still running has a
# slot in the window.
_SEARCH_SPAN = timedelta(days=10)


@dataclass(frozen=True, slots=True)
class Schedule:
    """When one medication is due, in the patient's local time."""

    timezone: str
    times_of_day: tuple[time, ...]
    days_of_week: frozenset[int] | None
    start_date: date | None
    end_date: date | None

    def __post_init__(self) -> None:
        # Fail at construction, not at the first reminder.
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown IANA time zone") from None
        if not self.times_of_day:
            raise ValueError("a schedule needs at least one time of day")
        if any(t.tzinfo is not None for t in self.times_of_day):
            raise ValueError("times of day are local wall-clock times, without tzinfo")
        if list(self.times_of_day) != sorted(set(self.times_of_day)):
            raise ValueError("times of day must be sorted and unique")
        if self.days_of_week is not None and (
            not self.days_of_week or not self.days_of_week <= frozenset(range(7))
        ):
            raise ValueError("days of week must be a non-empty subset of 0..6 (or None)")
        if self.start_date and self.end_date and self.end_date < self.start_date:
            raise ValueError("end_date is before start_date")

    @classmethod
    def from_event(cls, event: ScheduleSet) -> Schedule:
        """The schedule a ScheduleSet event describes."""
        days = event.days_of_week
        return cls(
            timezone=event.timezone,
            times_of_day=tuple(sorted({parse_time_of_day(t) for t in event.times_of_day})),
            days_of_week=None if days is None else frozenset(d.iso_index for d in days),
            start_date=event.start_date,
            end_date=event.end_date,
        )

    @property
    def doses_per_day(self) -> float:
        """Average doses per day over a week (a Mon/Wed/Fri twice-daily schedule: 6/7)."""
        days = 7 if self.days_of_week is None else len(self.days_of_week)
        return len(self.times_of_day) * days / 7

    @property
    def zone(self) -> ZoneInfo:
        """The schedule's time zone (ZoneInfo caches instances, so this is cheap)."""
        return ZoneInfo(self.timezone)


def slots_between(schedule: Schedule, after: datetime, until: datetime) -> Iterator[datetime]:
    """Every dose instant (aware, UTC) with after < slot <= until, ascending."""
    after_utc, until_utc = _utc(after, "after"), _utc(until, "until")
    if until_utc <= after_utc:
        return
    # A local date D only yields instants in (D-1 00:00 UTC, D+2 00:00 UTC) because every UTC
    # offset is strictly under 24 h, which bounds the dates worth expanding on both sides.
    first = _clamp_day(after_utc.date(), -1)
    last = _clamp_day(until_utc.date(), +1)
    if schedule.start_date is not None:
        first = max(first, schedule.start_date)
    if schedule.end_date is not None:
        last = min(last, schedule.end_date)
    for slot in _expand(schedule, first, last):
        if slot > until_utc:
            return
        if slot > after_utc:
            yield slot


def next_slot_after(schedule: Schedule, after: datetime) -> datetime | None:
    """The first dose instant strictly after `after` (UTC), or None when the schedule has ended."""
    after_utc = _utc(after, "after")
    anchor = max(after_utc, _search_anchor(schedule))
    try:
        horizon = anchor + _SEARCH_SPAN
    except OverflowError:
        horizon = datetime.max.replace(tzinfo=UTC)
    # Nothing in the window means the schedule has ended (see _SEARCH_SPAN).
    return next(slots_between(schedule, after_utc, horizon), None)


def reminder_id(patient_id: str, medication_id: str, scheduled_for: datetime) -> str:
    """Deterministic id of one slot: 'rem-' + 24 hex digits of a SHA-256 over the three.

    scheduled_for is normalised to UTC milliseconds (as the contract stores timestamps), so the
    same instant written with any offset, or decoded from JSON or Avro, gives the same id.
    """
    instant = _utc(scheduled_for, "scheduled_for")
    # A JSON array keeps the parts apart whatever characters the ids contain.
    material = json.dumps(
        # isoformat truncates to milliseconds, as the contract's timestamps do.
        [patient_id, medication_id, instant.isoformat(timespec="milliseconds")],
        ensure_ascii=True,
        separators=(",", ":"),
    )
    return "rem-" + hashlib.sha256(material.encode("ascii")).hexdigest()[:24]


class AnswerResult(StrEnum):
    """What a DoseTaken or DoseSkipped answered (a metric label: never patient data)."""

    ANSWERED = "answered"
    ALREADY_ANSWERED = "already_answered"
    NO_SLOT = "no_slot"


@dataclass(frozen=True, slots=True)
class AnswerWindow:
    """Where an answer counts for a slot: from ``early`` before it to ``grace`` after it."""

    early: timedelta
    grace: timedelta


@dataclass(frozen=True, slots=True)
class SlotAnswer:
    """The outcome of matching one answer against a schedule."""

    result: AnswerResult
    # The slot answered, or the one that was already answered; None when no slot qualifies.
    slot: datetime | None = None


def answer_slot(
    schedule: Schedule,
    answered: Collection[datetime],
    scheduled_for: datetime | None,
    at: datetime,
    window: AnswerWindow,
) -> SlotAnswer:
    """Which slot of ``schedule`` a DoseTaken or DoseSkipped at ``at`` answers.

    Slots come from the schedule itself, so a slot can be answered before its reminder.
    - ``scheduled_for`` naming a slot of the schedule: that slot, ALREADY_ANSWERED when it is
      in ``answered``, NO_SLOT when ``at`` is outside its window. Never another slot: a stale
      answer (the 08:00 dose reported again at 20:05) must not close the 20:00 slot.
    - otherwise (absent, or naming no slot): the nearest unanswered slot whose window holds
      ``at`` (the earlier on a tie); ALREADY_ANSWERED when every such slot is answered,
      NO_SLOT when there is none.
    """
    at = _utc(at, "taken_at")
    if scheduled_for is not None:
        named = _utc(scheduled_for, "scheduled_for")
        if _is_slot(schedule, named):
            if named in answered:
                return SlotAnswer(AnswerResult.ALREADY_ANSWERED, named)
            if named - window.early <= at <= named + window.grace:
                return SlotAnswer(AnswerResult.ANSWERED, named)
            return SlotAnswer(AnswerResult.NO_SLOT)
        # A mistyped scheduled_for names no slot: the dose is still matched by its time.
    try:
        # slots_between excludes its lower bound; the window's edge still counts.
        near = list(
            slots_between(
                schedule, at - window.grace - timedelta(microseconds=1), at + window.early
            )
        )
    except OverflowError:  # at the very edge of the calendar no prescription lives
        return SlotAnswer(AnswerResult.NO_SLOT)
    if not near:
        return SlotAnswer(AnswerResult.NO_SLOT)
    open_near = [slot for slot in near if slot not in answered]
    if not open_near:
        return SlotAnswer(AnswerResult.ALREADY_ANSWERED, min(near, key=lambda s: abs(at - s)))
    # min() keeps the first of equals, and the slots are ascending: ties go to the earlier one.
    return SlotAnswer(AnswerResult.ANSWERED, min(open_near, key=lambda s: abs(at - s)))


def _is_slot(schedule: Schedule, instant: datetime) -> bool:
    try:
        after = instant - timedelta(microseconds=1)
    except OverflowError:
        return False
    return next(slots_between(schedule, after, instant), None) == instant


def _expand(schedule: Schedule, first: date, last: date) -> Iterator[datetime]:
    """The schedule's instants from local dates first..last, ascending and unique."""
    zone = schedule.zone
    days = schedule.days_of_week
    # A DST gap may push one date's shifted instant past the next date's earliest ones (or onto
    # them, when a whole date is skipped), so instants go through a heap and are only released
    # once no later date can produce an earlier one.
    pending: list[datetime] = []
    previous: datetime | None = None
    day = first
    while day <= last:
        if days is None or day.weekday() in days:
            for t in schedule.times_of_day:
                heapq.heappush(pending, _resolve(day, t, zone))
        # Dates after `day` only yield instants later than `day` 00:00 UTC (offsets < 24 h).
        release = datetime.combine(day, time(), UTC)
        while pending and pending[0] <= release:
            slot = heapq.heappop(pending)
            if slot != previous:
                yield slot
                previous = slot
        day += _ONE_DAY
    while pending:
        slot = heapq.heappop(pending)
        if slot != previous:
            yield slot
            previous = slot


def _resolve(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The UTC instant of local wall time `at` on local date `day`.

    fold=0 is what RFC 5545 (iCalendar recurrences) prescribes at both DST edges:
    - in a spring-forward gap the wall time does not exist; fold=0 reads it with the offset in
      force before the gap, which lands it the length of the gap later (02:30 in New York on
      the spring-forward day fires at 03:30 EDT), so the dose still fires, once;
    - in a fall-back overlap the wall time happens twice; fold=0 picks the first occurrence, so
      the dose fires once, not twice.
    """
    return datetime.combine(day, at, zone).replace(fold=0).astimezone(UTC)


def _search_anchor(schedule: Schedule) -> datetime:
    # Measuring the window from start_date lets a far-future schedule be found in one bounded
    # window instead of walking every day up to its start.
    if schedule.start_date is None:
        return datetime.min.replace(tzinfo=UTC)
    return datetime.combine(schedule.start_date, time(), UTC)


def _clamp_day(day: date, shift: int) -> date:
    """`day` moved by `shift` days, kept within the expandable calendar."""
    day = min(max(day, _FIRST_DAY), _LAST_DAY)  # now far enough from the edges to shift
    return min(max(day + shift * _ONE_DAY, _FIRST_DAY), _LAST_DAY)


def _utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value.astimezone(UTC)
