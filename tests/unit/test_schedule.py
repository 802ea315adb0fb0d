"""Unit and property tests of schedule expansion, reminder ids and dose answers."""

from __future__ import annotations

import itertools
import re
import time as wallclock
from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.contracts.models import ScheduleSet
from streams.domain.schedule import (
    AnswerResult,
    AnswerWindow,
    Schedule,
    SlotAnswer,
    answer_slot,
    next_slot_after,
    reminder_id,
    slots_between,
)

NY = "America/New_York"


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def sched(
    zone: str,
    *times: str,
    days: set[int] | None = None,
    start: date | None = None,
    end: date | None = None,
) -> Schedule:
    parsed = tuple(sorted(time.fromisoformat(t) for t in times))
    return Schedule(zone, parsed, None if days is None else frozenset(days), start, end)


def on_day(schedule: Schedule, day: date) -> list[datetime]:
    """The slots of one UTC calendar day."""
    start = datetime.combine(day, time(), UTC)
    return list(slots_between(schedule, start - timedelta(microseconds=1), start + timedelta(1)))


def local_day(schedule: Schedule, day: date) -> list[datetime]:
    """The slots whose local date is `day`."""
    zone = ZoneInfo(schedule.timezone)
    around = datetime.combine(day, time(), UTC)
    slots = slots_between(schedule, around - timedelta(days=2), around + timedelta(days=2))
    return [s for s in slots if s.astimezone(zone).date() == day]


# --- construction -------------------------------------------------------------------------------


def test_from_event_sorts_times_keeps_seconds_and_maps_weekdays() -> None:
    event = ScheduleSet.model_validate(
        {
            "event_id": "e1",
            "patient_id": "p1",
            "occurred_at": "2026-01-01T00:00:00Z",
            "medication_id": "m1",
            "timezone": "Europe/Berlin",
            "times_of_day": ["20:00:30", "08:00"],
            "days_of_week": ["sun", "mon", "wed"],
            "start_date": "2026-02-01",
            "end_date": "2026-03-01",
        },
        strict=False,
    )
    schedule = Schedule.from_event(event)
    assert schedule == Schedule(
        "Europe/Berlin",
        (time(8), time(20, 0, 30)),
        frozenset({0, 2, 6}),
        date(2026, 2, 1),
        date(2026, 3, 1),
    )
    assert schedule.doses_per_day == pytest.approx(2 * 3 / 7)


def test_from_event_without_days_or_dates_is_every_day_forever() -> None:
    event = ScheduleSet.model_validate(
        {
            "event_id": "e1",
            "patient_id": "p1",
            "occurred_at": "2026-01-01T00:00:00Z",
            "medication_id": "m1",
            "timezone": "UTC",
            "times_of_day": ["08:00", "14:00", "20:00"],
        },
        strict=False,
    )
    schedule = Schedule.from_event(event)
    assert (schedule.days_of_week, schedule.start_date, schedule.end_date) == (None, None, None)
    assert schedule.doses_per_day == 3.0


@pytest.mark.parametrize(
    ("zone", "times", "days", "start", "end"),
    [
        ("Not/AZone", (time(8),), None, None, None),
        ("UTC", (), None, None, None),
        ("UTC", (time(9), time(8)), None, None, None),
        ("UTC", (time(8), time(8)), None, None, None),
        ("UTC", (time(8, tzinfo=UTC),), None, None, None),
        ("UTC", (time(8),), frozenset(), None, None),
        ("UTC", (time(8),), frozenset({7}), None, None),
        ("UTC", (time(8),), None, date(2026, 2, 2), date(2026, 2, 1)),
    ],
)
def test_invalid_schedules_are_refused(
    zone: str,
    times: tuple[time, ...],
    days: frozenset[int] | None,
    start: date | None,
    end: date | None,
) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        Schedule(zone, times, days, start, end)


# --- DST ----------------------------------------------------------------------------------------


def test_new_york_spring_forward_gap_fires_once_shifted_by_the_gap() -> None:
    schedule = sched(NY, "01:30", "02:30", "08:00")
    assert local_day(schedule, date(2026, 3, 8)) == [
        utc(2026, 3, 8, 6, 30),  # 01:30 EST
        utc(2026, 3, 8, 7, 30),  # 02:30 does not exist: 03:30 EDT
        utc(2026, 3, 8, 12, 0),  # 08:00 EDT
    ]
    # The days either side are plain.
    assert local_day(schedule, date(2026, 3, 7))[1] == utc(2026, 3, 7, 7, 30)
    assert local_day(schedule, date(2026, 3, 9))[1] == utc(2026, 3, 9, 6, 30)


def test_gap_time_colliding_with_a_real_time_fires_once() -> None:
    # 02:30 is shifted onto 03:30 on the spring-forward day: one dose, not two at one instant.
    schedule = sched(NY, "02:30", "03:30")
    assert local_day(schedule, date(2026, 3, 8)) == [utc(2026, 3, 8, 7, 30)]
    assert len(local_day(schedule, date(2026, 3, 9))) == 2


def test_gap_shift_can_reorder_times_within_the_day() -> None:
    # 02:30 becomes 03:30 EDT, later than 03:00 EDT: slots stay in instant order.
    schedule = sched(NY, "02:30", "03:00")
    assert local_day(schedule, date(2026, 3, 8)) == [utc(2026, 3, 8, 7, 0), utc(2026, 3, 8, 7, 30)]


def test_new_york_fall_back_ambiguous_time_fires_once_at_first_occurrence() -> None:
    schedule = sched(NY, "01:30", "08:00")
    slots = local_day(schedule, date(2026, 11, 1))
    assert slots == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 13, 0)]
    assert slots[0].astimezone(ZoneInfo(NY)).fold == 0  # EDT, the first 01:30


def test_daily_time_keeps_local_wall_clock_across_dst() -> None:
    schedule = sched(NY, "08:00")
    slots = list(slots_between(schedule, utc(2026, 3, 6), utc(2026, 3, 11)))
    assert [s.hour for s in slots] == [13, 13, 12, 12, 12]
    assert {s.astimezone(ZoneInfo(NY)).time() for s in slots} == {time(8)}
    slots = list(slots_between(schedule, utc(2026, 10, 30), utc(2026, 11, 4)))
    assert [s.hour for s in slots] == [12, 12, 13, 13, 13]


@pytest.mark.parametrize(
    ("zone", "local_date", "wall", "expected"),
    [
        # Europe/Berlin: last Sunday of March (02:00 -> 03:00) and October (03:00 -> 02:00).
        ("Europe/Berlin", date(2026, 3, 29), "02:30", utc(2026, 3, 29, 1, 30)),
        ("Europe/Berlin", date(2026, 3, 29), "03:30", utc(2026, 3, 29, 1, 30)),
        ("Europe/Berlin", date(2026, 3, 29), "01:30", utc(2026, 3, 29, 0, 30)),
        ("Europe/Berlin", date(2026, 10, 25), "02:30", utc(2026, 10, 25, 0, 30)),
        ("Europe/Berlin", date(2026, 10, 25), "08:00", utc(2026, 10, 25, 7, 0)),
        # Lord Howe: a 30-minute shift (+10:30 / +11:00), 02:00 -> 02:30 in October.
        ("Australia/Lord_Howe", date(2026, 10, 4), "02:15", utc(2026, 10, 3, 15, 45)),
        ("Australia/Lord_Howe", date(2026, 10, 4), "02:45", utc(2026, 10, 3, 15, 45)),
        ("Australia/Lord_Howe", date(2026, 10, 4), "01:59", utc(2026, 10, 3, 15, 29)),
        ("Australia/Lord_Howe", date(2026, 4, 5), "01:45", utc(2026, 4, 4, 14, 45)),
        ("Australia/Lord_Howe", date(2026, 4, 5), "08:00", utc(2026, 4, 4, 21, 30)),
        # Sydney: southern hemisphere, DST from October to April.
        ("Australia/Sydney", date(2026, 10, 4), "02:30", utc(2026, 10, 3, 16, 30)),
        ("Australia/Sydney", date(2026, 4, 5), "02:30", utc(2026, 4, 4, 15, 30)),
        ("Australia/Sydney", date(2026, 1, 15), "08:00", utc(2026, 1, 14, 21, 0)),
        ("Australia/Sydney", date(2026, 7, 15), "08:00", utc(2026, 7, 14, 22, 0)),
        # Kolkata: +05:30 all year.
        ("Asia/Kolkata", date(2026, 1, 15), "08:00", utc(2026, 1, 15, 2, 30)),
        ("Asia/Kolkata", date(2026, 7, 15), "08:00", utc(2026, 7, 15, 2, 30)),
        ("Asia/Kolkata", date(2026, 3, 29), "02:30", utc(2026, 3, 28, 21, 0)),
    ],
)
def test_zones(zone: str, local_date: date, wall: str, expected: datetime) -> None:
    assert local_day(sched(zone, wall), local_date) == [expected]


def test_no_dst_zone_is_the_same_utc_time_all_year() -> None:
    slots = list(slots_between(sched("Asia/Kolkata", "21:45:15"), utc(2026, 1, 1), utc(2027, 1, 1)))
    assert len(slots) == 365
    assert {s.time() for s in slots} == {time(16, 15, 15)}


def test_skipped_local_date_yields_no_duplicate() -> None:
    # Samoa skipped 2011-12-30 entirely: that date's 08:00 reads as 2011-12-31 08:00, the same
    # instant as the next date's dose, which fires once.
    slots = list(slots_between(sched("Pacific/Apia", "08:00"), utc(2011, 12, 28), utc(2012, 1, 2)))
    zone = ZoneInfo("Pacific/Apia")
    assert [s.astimezone(zone).date().day for s in slots] == [28, 29, 31, 1, 2]


def test_gap_across_midnight_keeps_slots_in_instant_order() -> None:
    # Toronto, 1919-03-30: 23:30 jumped to 00:30 the next day. The 30th's 23:45 (in the gap)
    # lands at 00:45 EDT on the 31st, after the 31st's real 00:40.
    schedule = sched("America/Toronto", "00:15", "00:40", "23:45")
    slots = list(slots_between(schedule, utc(1919, 3, 30, 12), utc(1919, 3, 31, 12)))
    assert slots == [utc(1919, 3, 31, 4, 40), utc(1919, 3, 31, 4, 45), utc(1919, 3, 31, 5, 15)]
    assert slots == reference(schedule, utc(1919, 3, 30, 12), utc(1919, 3, 31, 12))
    assert next_slot_after(schedule, utc(1919, 3, 30, 12)) == slots[0]


# --- days and dates -----------------------------------------------------------------------------


def test_days_of_week_use_the_local_date() -> None:
    # Monday 07:00 in Tokyo is Sunday 22:00 UTC.
    schedule = sched("Asia/Tokyo", "07:00", days={0})
    slots = list(slots_between(schedule, utc(2026, 5, 1), utc(2026, 5, 31)))
    assert slots == [utc(2026, 5, d, 22) for d in (3, 10, 17, 24)]
    assert all(s.weekday() == 6 for s in slots)


def test_start_and_end_are_inclusive_local_dates() -> None:
    schedule = sched("Asia/Tokyo", "00:30", "23:30", start=date(2026, 5, 4), end=date(2026, 5, 6))
    slots = list(slots_between(schedule, utc(2000, 1, 1), utc(2100, 1, 1)))
    assert slots[0] == utc(2026, 5, 3, 15, 30)  # 2026-05-04 00:30 JST
    assert slots[-1] == utc(2026, 5, 6, 14, 30)  # 2026-05-06 23:30 JST
    assert len(slots) == 6
    assert next_slot_after(schedule, utc(1990, 1, 1)) == slots[0]
    assert next_slot_after(schedule, slots[-2]) == slots[-1]
    assert next_slot_after(schedule, slots[-1]) is None
    assert next_slot_after(schedule, utc(2030, 1, 1)) is None


def test_next_slot_after_finds_the_last_weekday_of_the_first_week() -> None:
    # Start on a Monday, dose on Sundays at 23:00 in Honolulu: the first slot is six local
    # dates after the start and already the next UTC date, the far edge of the search window.
    schedule = sched("Pacific/Honolulu", "23:00", days={6}, start=date(2026, 6, 1))
    assert next_slot_after(schedule, utc(2020, 1, 1)) == utc(2026, 6, 8, 9)
    assert next_slot_after(schedule, utc(2026, 6, 8, 9)) == utc(2026, 6, 15, 9)


def test_seconds_are_honoured() -> None:
    schedule = sched("UTC", "08:00:30")
    assert next_slot_after(schedule, utc(2026, 1, 1, 8, 0, 29)) == utc(2026, 1, 1, 8, 0, 30)
    assert next_slot_after(schedule, utc(2026, 1, 1, 8, 0, 30)) == utc(2026, 1, 2, 8, 0, 30)


def test_bounds_are_exclusive_after_and_inclusive_until() -> None:
    schedule = sched("UTC", "08:00")
    at = utc(2026, 1, 1, 8)
    assert list(slots_between(schedule, at, at)) == []
    assert list(slots_between(schedule, at - timedelta(seconds=1), at)) == [at]
    assert list(slots_between(schedule, at, at + timedelta(days=1))) == [at + timedelta(days=1)]
    assert list(slots_between(schedule, at, at - timedelta(days=3))) == []


def test_inputs_in_any_offset_give_utc_slots() -> None:
    schedule = sched(NY, "08:00")
    plus_two = timezone(timedelta(hours=2))
    after = datetime(2026, 6, 1, 14, 0, tzinfo=plus_two)  # 12:00 UTC: 08:00 EDT itself
    slot = next_slot_after(schedule, after)
    assert slot == utc(2026, 6, 2, 12)
    assert slot is not None
    assert slot.tzinfo is UTC


def test_naive_datetimes_are_refused() -> None:
    schedule = sched("UTC", "08:00")
    with pytest.raises(ValueError, match="timezone-aware"):
        next_slot_after(schedule, datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        list(slots_between(schedule, utc(2026, 1, 1), datetime(2026, 1, 2)))
    with pytest.raises(ValueError, match="timezone-aware"):
        reminder_id("p", "m", datetime(2026, 1, 1))


def test_long_ranges_and_far_starts_are_cheap() -> None:
    began = wallclock.perf_counter()
    every_day = sched("Europe/Berlin", "08:00", start=date(2026, 1, 1))
    slots = list(slots_between(every_day, datetime.min.replace(tzinfo=UTC), utc(2076, 1, 1)))
    assert len(slots) == (date(2076, 1, 1) - date(2026, 1, 1)).days
    far = sched(NY, "08:00", days={6}, start=date(9000, 1, 1))
    assert next_slot_after(far, utc(2026, 1, 1)) == utc(9000, 1, 5, 13)  # first Sunday
    ended = sched(NY, "08:00", end=date(2026, 1, 1))
    assert next_slot_after(ended, utc(2026, 1, 2)) is None
    assert next_slot_after(ended, datetime.max.replace(tzinfo=UTC)) is None
    assert list(slots_between(ended, utc(2026, 1, 2), datetime.max.replace(tzinfo=UTC))) == []
    assert wallclock.perf_counter() - began < 5.0


def test_calendar_edges_do_not_overflow() -> None:
    schedule = sched("Pacific/Kiritimati", "00:00", "23:59")
    assert next_slot_after(schedule, datetime.min.replace(tzinfo=UTC)) is not None
    assert next_slot_after(schedule, datetime.max.replace(tzinfo=UTC)) is None
    late = datetime.max.replace(tzinfo=UTC) - timedelta(days=5)
    assert list(slots_between(schedule, late, datetime.max.replace(tzinfo=UTC)))


# --- reminder ids -------------------------------------------------------------------------------


def test_reminder_id_is_stable_across_processes_and_releases() -> None:
    assert reminder_id("patient-1", "med-1", utc(2026, 3, 8, 7, 30)) == (
        "rem-16b45ec6bf4f8d66def338f8"
    )


def test_reminder_id_shape_and_sensitivity() -> None:
    at = utc(2026, 3, 8, 7, 30)
    base = reminder_id("p", "m", at)
    assert re.fullmatch(r"rem-[0-9a-f]{24}", base)
    others = {
        reminder_id("q", "m", at),
        reminder_id("p", "n", at),
        reminder_id("p", "m", at + timedelta(milliseconds=1)),
        reminder_id("pm", "", at),
        reminder_id("", "pm", at),
    }
    assert base not in others
    assert len(others) == 5


def test_reminder_id_depends_on_the_instant_not_its_offset() -> None:
    at = utc(2026, 3, 8, 7, 30)
    in_new_york = at.astimezone(ZoneInfo(NY))
    in_india = at.astimezone(timezone(timedelta(hours=5, minutes=30)))
    sub_millisecond = at + timedelta(microseconds=999)
    ids = {reminder_id("p", "m", t) for t in (at, in_new_york, in_india, sub_millisecond)}
    assert len(ids) == 1


# --- answering slots ----------------------------------------------------------------------------

# 08:00, 12:00 and 16:00 UTC every day; an answer counts from an hour before to 30 min after.
THRICE = sched("UTC", "08:00", "12:00", "16:00")
WINDOW = AnswerWindow(early=timedelta(hours=1), grace=timedelta(minutes=30))
MORNING, NOON = utc(2026, 1, 1, 8), utc(2026, 1, 1, 12)
ANSWERED, ALREADY, NO_SLOT = (
    AnswerResult.ANSWERED,
    AnswerResult.ALREADY_ANSWERED,
    AnswerResult.NO_SLOT,
)


def answer(
    at: datetime,
    scheduled_for: datetime | None = None,
    answered: tuple[datetime, ...] = (),
    schedule: Schedule = THRICE,
) -> SlotAnswer:
    return answer_slot(schedule, set(answered), scheduled_for, at, WINDOW)


def test_a_named_slot_in_any_offset_is_answered_before_its_time() -> None:
    named = NOON.astimezone(ZoneInfo(NY))
    # 55 minutes early, and no reminder needed: the slot comes from the schedule.
    assert answer(utc(2026, 1, 1, 11, 5), named) == SlotAnswer(ANSWERED, NOON)


def test_an_early_answer_without_scheduled_for_answers_the_coming_slot() -> None:
    assert answer(utc(2026, 1, 1, 7, 50)) == SlotAnswer(ANSWERED, MORNING)
    assert answer(utc(2026, 1, 1, 7)) == SlotAnswer(ANSWERED, MORNING)  # the edge counts
    assert answer(utc(2026, 1, 1, 6, 59, 59)) == SlotAnswer(NO_SLOT)


def test_a_late_answer_counts_until_the_grace_window_ends() -> None:
    assert answer(utc(2026, 1, 1, 8, 30)) == SlotAnswer(ANSWERED, MORNING)
    assert answer(utc(2026, 1, 1, 8, 30), MORNING) == SlotAnswer(ANSWERED, MORNING)
    assert answer(utc(2026, 1, 1, 8, 30, 1)) == SlotAnswer(NO_SLOT)
    # Past its window a named slot is not answered, and no other slot is either.
    assert answer(utc(2026, 1, 1, 11, 5), MORNING) == SlotAnswer(NO_SLOT)


def test_a_stale_answer_for_an_answered_slot_answers_nothing_else() -> None:
    twice = sched("UTC", "08:00", "20:00")
    evening = utc(2026, 1, 1, 20, 5)
    # The 08:00 dose reported again at 20:05 must not close the 20:00 slot.
    stale = answer(evening, MORNING, answered=(MORNING,), schedule=twice)
    assert stale == SlotAnswer(ALREADY, MORNING)
    # Not answered before, but long past its window: still not the 20:00 slot.
    assert answer(evening, MORNING, schedule=twice) == SlotAnswer(NO_SLOT)
    # The same time without scheduled_for is the 20:00 dose.
    assert answer(evening, schedule=twice) == SlotAnswer(ANSWERED, utc(2026, 1, 1, 20))


def test_an_answered_slot_named_again_is_already_answered_even_in_another_window() -> None:
    hourly = sched("UTC", "08:00", "09:00")
    at = utc(2026, 1, 1, 8, 10)  # in the 09:00 window too
    assert answer(at, MORNING, answered=(MORNING,), schedule=hourly) == SlotAnswer(ALREADY, MORNING)


def test_without_scheduled_for_the_nearest_unanswered_slot_is_answered() -> None:
    hourly = sched("UTC", "08:00", "09:00")
    at = utc(2026, 1, 1, 8, 10)
    assert answer(at, schedule=hourly) == SlotAnswer(ANSWERED, MORNING)
    nine = utc(2026, 1, 1, 9)
    assert answer(at, answered=(MORNING,), schedule=hourly) == SlotAnswer(ANSWERED, nine)
    assert answer(at, answered=(MORNING, nine), schedule=hourly) == SlotAnswer(ALREADY, MORNING)


def test_a_scheduled_for_that_names_no_slot_falls_back_to_the_time() -> None:
    assert answer(utc(2026, 1, 1, 12, 20), utc(2026, 1, 1, 12, 1)) == SlotAnswer(ANSWERED, NOON)
    assert answer(utc(2026, 1, 1, 10), utc(2025, 1, 1)) == SlotAnswer(NO_SLOT)


def test_a_tie_goes_to_the_earlier_slot() -> None:
    hourly = sched("UTC", "08:00", "09:00")
    even = AnswerWindow(early=timedelta(minutes=30), grace=timedelta(minutes=30))
    at = utc(2026, 1, 1, 8, 30)
    assert answer_slot(hourly, set(), None, at, even) == SlotAnswer(ANSWERED, MORNING)


def test_answers_follow_the_schedule_dates_and_dst() -> None:
    ended = sched("UTC", "08:00", end=date(2025, 12, 31))
    assert answer(MORNING, MORNING, schedule=ended) == SlotAnswer(NO_SLOT)
    assert answer(MORNING, schedule=ended) == SlotAnswer(NO_SLOT)
    # 02:30 does not exist in New York on 2025-03-09: the slot is 03:30 EDT (07:30 UTC).
    gap = sched(NY, "02:30")
    shifted = utc(2025, 3, 9, 7, 30)
    assert answer(shifted - timedelta(minutes=5), schedule=gap) == SlotAnswer(ANSWERED, shifted)
    assert answer(shifted, shifted, schedule=gap) == SlotAnswer(ANSWERED, shifted)


def test_naive_answer_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        answer(datetime(2026, 1, 1, 8))
    with pytest.raises(ValueError, match="timezone-aware"):
        answer(MORNING, datetime(2026, 1, 1, 8))


# --- properties ---------------------------------------------------------------------------------

ZONES = [
    NY,
    "Europe/Berlin",
    "Australia/Lord_Howe",
    "Australia/Sydney",
    "Asia/Kolkata",
    "America/Santiago",  # changes at midnight
    "Pacific/Chatham",  # +12:45 / +13:45
    "Pacific/Honolulu",  # -10: most local dates straddle two UTC dates
    "Pacific/Kiritimati",  # +14
    "UTC",
]
YEARS = (2024, 2028)


def _transitions() -> list[datetime]:
    """The UTC days on which some zone of ZONES changes offset (where the bugs would be)."""
    found: list[datetime] = []
    for name in ZONES:
        zone = ZoneInfo(name)
        day = utc(YEARS[0], 1, 1, 12)
        previous = day.astimezone(zone).utcoffset()
        while day.year <= YEARS[1]:
            offset = day.astimezone(zone).utcoffset()
            if offset != previous:
                found.append(day - timedelta(days=1))
            previous = offset
            day += timedelta(days=1)
    return found


TRANSITIONS = _transitions()
HOT_TIMES = [time(h, m) for h in (0, 1, 2, 3, 23) for m in (0, 15, 30, 45)]

wall_times = st.one_of(
    st.sampled_from(HOT_TIMES),
    st.builds(
        time,
        st.integers(0, 23),
        st.integers(0, 59),
        st.one_of(st.just(0), st.integers(0, 59)),
    ),
)
instants = st.one_of(
    st.datetimes(datetime(YEARS[0], 1, 1), datetime(YEARS[1], 12, 31), timezones=st.just(UTC)),
    st.builds(
        lambda day, minutes: day + timedelta(minutes=minutes),
        st.sampled_from(TRANSITIONS),
        st.integers(-3 * 24 * 60, 3 * 24 * 60),
    ),
)
local_dates = st.dates(date(YEARS[0], 1, 1), date(YEARS[1], 12, 31))


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    times = draw(st.sets(wall_times, min_size=1, max_size=4))
    days = draw(st.none() | st.frozensets(st.integers(0, 6), min_size=1))
    start, end = draw(st.none() | local_dates), draw(st.none() | local_dates)
    if start and end and end < start:
        start, end = end, start
    return Schedule(draw(st.sampled_from(ZONES)), tuple(sorted(times)), days, start, end)


def _in_dates(schedule: Schedule, day: date) -> bool:
    return (schedule.start_date is None or schedule.start_date <= day) and (
        schedule.end_date is None or day <= schedule.end_date
    )


def _exists(naive: datetime, zone: ZoneInfo) -> bool:
    back = naive.replace(tzinfo=zone).astimezone(UTC).astimezone(zone).replace(tzinfo=None)
    return back == naive


def _gap(naive: datetime, zone: ZoneInfo) -> timedelta:
    after = naive.replace(tzinfo=zone, fold=1).utcoffset()
    before = naive.replace(tzinfo=zone, fold=0).utcoffset()
    assert after is not None
    assert before is not None
    return after - before


def assert_explained(schedule: Schedule, slot: datetime) -> None:
    """The slot is one of the schedule's local times on an allowed local date (or, in a DST
    gap only, that time shifted by the gap), and the first occurrence of its wall time."""
    zone = ZoneInfo(schedule.timezone)
    local = slot.astimezone(zone)
    day, wall = local.date(), local.replace(tzinfo=None)
    assert slot.tzinfo is UTC
    assert _in_dates(schedule, day)
    assert schedule.days_of_week is None or day.weekday() in schedule.days_of_week
    if local.time() in schedule.times_of_day:
        assert local.fold == 0  # an ambiguous wall time fires at its first occurrence
        return
    assert _shifted_from_gap(schedule, wall, zone), (schedule, slot, local)


def _shifted_from_gap(schedule: Schedule, wall: datetime, zone: ZoneInfo) -> bool:
    for t in schedule.times_of_day:
        naive = datetime.combine(wall.date(), t)
        if not _exists(naive, zone) and naive + _gap(naive, zone) == wall:
            return True
    return False


def reference(schedule: Schedule, after: datetime, until: datetime) -> list[datetime]:
    """Brute force: every (local date, time) resolved with fold=0, filtered, deduplicated."""
    zone = ZoneInfo(schedule.timezone)
    found: set[datetime] = set()
    day = after.date() - timedelta(days=2)
    while day <= until.date() + timedelta(days=2):
        if _in_dates(schedule, day) and (
            schedule.days_of_week is None or day.weekday() in schedule.days_of_week
        ):
            for t in schedule.times_of_day:
                slot = datetime.combine(day, t, zone).astimezone(UTC)
                if after < slot <= until:
                    found.add(slot)
        day += timedelta(days=1)
    return sorted(found)


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(schedules(), instants, st.integers(0, 21 * 24 * 60))
def test_slots_are_ordered_unique_explained_and_complete(
    schedule: Schedule, after: datetime, minutes: int
) -> None:
    until = after + timedelta(minutes=minutes)
    slots = list(slots_between(schedule, after, until))
    assert all(a < b for a, b in itertools.pairwise(slots))
    assert all(after < s <= until for s in slots)
    for slot in slots:
        assert_explained(schedule, slot)
    assert slots == reference(schedule, after, until)


@PROPERTY
@given(schedules(), instants)
def test_next_slot_after_is_the_first_slot(schedule: Schedule, after: datetime) -> None:
    following = next_slot_after(schedule, after)
    window = list(slots_between(schedule, after, after + timedelta(days=8)))
    if window:
        assert following == window[0]
    elif following is None:
        # Only an ended schedule (a weekly one fires within 8 days otherwise).
        assert schedule.end_date is not None
        horizon = datetime.combine(schedule.end_date + timedelta(days=2), time(), UTC)
        assert list(slots_between(schedule, after, max(horizon, after))) == []
    else:
        assert following > after + timedelta(days=8)
        assert schedule.start_date is not None


@PROPERTY
@given(schedules(), instants)
def test_walking_next_slot_after_reproduces_slots_between(
    schedule: Schedule, after: datetime
) -> None:
    until = after + timedelta(days=15)
    walked: list[datetime] = []
    cursor: datetime | None = after
    while cursor is not None and len(walked) <= 15 * 4:
        cursor = next_slot_after(schedule, cursor)
        if cursor is None or cursor > until:
            break
        walked.append(cursor)
    assert walked == list(slots_between(schedule, after, until))


@PROPERTY
@given(schedules(), instants, st.integers(-14 * 60, 14 * 60))
def test_the_offset_of_the_bounds_does_not_matter(
    schedule: Schedule, after: datetime, offset_minutes: int
) -> None:
    shifted = timezone(timedelta(minutes=offset_minutes))
    until = after + timedelta(days=3)
    assert list(slots_between(schedule, after.astimezone(shifted), until.astimezone(shifted))) == (
        list(slots_between(schedule, after, until))
    )


@PROPERTY
@given(
    schedules(),
    instants,
    st.integers(0, 180),
    st.integers(1, 180),
    st.frozensets(st.integers(0, 3), max_size=4),
)
def test_an_answer_is_the_nearest_unanswered_slot_of_its_window(
    schedule: Schedule, at: datetime, early: int, grace: int, answered_picks: frozenset[int]
) -> None:
    window = AnswerWindow(early=timedelta(minutes=early), grace=timedelta(minutes=grace))
    lower, upper = at - window.grace, at + window.early
    near = list(slots_between(schedule, lower - timedelta(microseconds=1), upper))
    answered = {near[i] for i in answered_picks if i < len(near)}
    result = answer_slot(schedule, answered, None, at, window)
    open_near = [slot for slot in near if slot not in answered]
    if not near:
        assert result == SlotAnswer(NO_SLOT)
    elif not open_near:
        assert result.result is ALREADY
    else:
        assert result.result is ANSWERED
        assert result.slot in open_near
        assert all(abs(at - result.slot) <= abs(at - slot) for slot in open_near)
        # Named, the answered slot is answered again the same way.
        assert answer_slot(schedule, answered, result.slot, at, window) == result
