"""FHIR Timing (a dosage's timing) to a daily schedule: local times, weekdays and dates."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from fhir.resources.R4B.timing import Timing, TimingRepeat

from streams.contracts.models import parse_time_of_day
from streams.fhir.problems import MappingRefused
from streams.fhir.resolve import tz_code
from streams.fhir.rules import FhirRules

MINUTES_PER_DAY = 24 * 60
# Timing.repeat elements medstream's daily schedule cannot express (docs/fhir.md).
_REFUSED_REPEAT = (
    ("count", "a count-limited timing (repeat.count)"),
    ("countMax", "a count-limited timing (repeat.countMax)"),
    ("duration", "a timing with a duration of each dose (repeat.duration)"),
    ("durationMax", "a timing with a duration of each dose (repeat.durationMax)"),
    ("frequencyMax", "a frequency range (repeat.frequencyMax)"),
    ("periodMax", "a period range (repeat.periodMax)"),
    ("boundsDuration", "bounds given as a duration (use boundsPeriod)"),
    ("boundsRange", "bounds given as a range (use boundsPeriod)"),
)
# Codes whose offset counts from the meal before it: the meal's own code in the when table.
_BEFORE_MEAL = {"AC": "C", "ACM": "CM", "ACD": "CD", "ACV": "CV"}
_AFTER_MEAL = {"PC": "C", "PCM": "CM", "PCD": "CD", "PCV": "CV"}
# R4's event-timing value set (Timing.repeat.when): HL7 v3 TimingEvent codes and FHIR's own.
EVENT_TIMING_CODES = frozenset(
    {
        "MORN",
        "MORN.early",
        "MORN.late",
        "NOON",
        "AFT",
        "AFT.early",
        "AFT.late",
        "EVE",
        "EVE.early",
        "EVE.late",
        "NIGHT",
        "PHS",
        "HS",
        "WAKE",
        "C",
        "CM",
        "CD",
        "CV",
        "AC",
        "ACM",
        "ACD",
        "ACV",
        "PC",
        "PCM",
        "PCD",
        "PCV",
    }
)
# R4's timing-abbreviation codes (v3 GTSAbbreviation) a Timing may give instead of a repeat,
# as the repeat they stand for. QOD, WK and MO are not daily and stay refused.
GTS_ABBREVIATION = "http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation"
_GTS_REPEATS: dict[str, dict[str, Any]] = {
    "QD": {"frequency": 1, "period": 1, "periodUnit": "d"},
    "BID": {"frequency": 2, "period": 1, "periodUnit": "d"},
    "TID": {"frequency": 3, "period": 1, "periodUnit": "d"},
    "QID": {"frequency": 4, "period": 1, "periodUnit": "d"},
    "Q1H": {"frequency": 1, "period": 1, "periodUnit": "h"},
    "Q2H": {"frequency": 1, "period": 2, "periodUnit": "h"},
    "Q3H": {"frequency": 1, "period": 3, "periodUnit": "h"},
    "Q4H": {"frequency": 1, "period": 4, "periodUnit": "h"},
    "Q6H": {"frequency": 1, "period": 6, "periodUnit": "h"},
    "Q8H": {"frequency": 1, "period": 8, "periodUnit": "h"},
    "AM": {"when": ["MORN"]},
    "PM": {"when": ["EVE"]},
    "BED": {"when": ["HS"]},
}


@dataclass(frozen=True)
class Schedule:
    """What a ScheduleSet carries of a timing: local times, their IANA zone, weekdays (None:
    every day) and local dates."""

    times_of_day: tuple[str, ...]
    timezone: str
    days_of_week: tuple[str, ...] | None = None
    start_date: date | None = None
    end_date: date | None = None


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _minutes(text: str) -> int:
    parsed = parse_time_of_day(text)
    return parsed.hour * 60 + parsed.minute


def _format_time(value: time) -> str:
    return value.strftime("%H:%M:%S" if value.second else "%H:%M")


def _whole(value: Decimal | float | int, path: str, what: str) -> int:
    number = Decimal(str(value))
    if number != number.to_integral_value() or number <= 0:
        raise MappingRefused(path, f"{what} must be a positive whole number")
    return int(number)


def local_date(value: date | datetime, zone: ZoneInfo) -> date:
    """The local date of a FHIR date or dateTime in the schedule's zone (a date stays)."""
    if isinstance(value, datetime):
        return value.astimezone(zone).date() if value.tzinfo else value.date()
    return value


def _when_times(repeat: Any, rules: FhirRules) -> list[str]:
    offset = int(repeat.offset or 0)
    times: list[str] = []
    for index, code in enumerate(repeat.when):
        path = f"repeat.when[{index}]"
        if code not in rules.when_times:
            # Named only when it is a code of R4's event-timing value set, never a free value.
            named = f"the when code {code}" if code in EVENT_TIMING_CODES else "the when code"
            raise MappingRefused(path, f"{named} has no clock time in the rule")
        if offset == 0:
            times.extend(rules.when_times[code])
            continue
        meal = _BEFORE_MEAL.get(code) or _AFTER_MEAL.get(code)
        sign = -1 if code in _BEFORE_MEAL else 1
        bases = rules.when_times.get(meal, ()) if meal else rules.when_times[code]
        if not bases:
            raise MappingRefused(path, f"the when code {code} has no meal time in the rule")
        for base in bases:
            minutes = _minutes(base) + sign * offset
            if not 0 <= minutes < MINUTES_PER_DAY:
                raise MappingRefused("repeat.offset", "the offset moves a dose into another day")
            times.append(_clock(minutes))
    return times


def _interval_times(frequency: int, period: Decimal, rules: FhirRules) -> list[str]:
    interval = Decimal(period) * 60 / frequency
    if interval % 60 or interval < 60:
        raise MappingRefused("repeat.period", "an hourly period must give whole hours, 1 or more")
    step = int(interval)
    if MINUTES_PER_DAY % step:
        raise MappingRefused(
            "repeat.period", "an every-N-hours timing must divide the day (1, 2, 3, 4, 6, 8, 12)"
        )
    start = _minutes(rules.interval_start)
    return [_clock((start + k * step) % MINUTES_PER_DAY) for k in range(MINUTES_PER_DAY // step)]


def _frequency_times(repeat: Any, rules: FhirRules, explicit: list[str] | None) -> list[str]:
    """Times from frequency/period/periodUnit; ``explicit`` (timeOfDay or when) wins if given."""
    unit = repeat.periodUnit
    if repeat.period is None and repeat.frequency is None:
        if explicit is None:
            raise MappingRefused("repeat", "the timing gives no frequency, timeOfDay or when")
        return explicit
    frequency = _whole(repeat.frequency or 1, "repeat.frequency", "frequency")
    period = Decimal(str(repeat.period)) if repeat.period is not None else Decimal(1)
    if unit is None:
        raise MappingRefused("repeat.periodUnit", "a period needs a periodUnit")
    if unit == "h":
        if explicit is not None:
            raise MappingRefused(
                "repeat", "an hourly period cannot be mixed with timeOfDay or when"
            )
        return _interval_times(frequency, period, rules)
    if unit not in ("d", "wk"):
        named = f"periodUnit {unit}" if unit in ("s", "min", "mo", "a") else "this periodUnit"
        raise MappingRefused("repeat.periodUnit", f"{named} is not expressible (only h, d and wk)")
    if period != 1:
        raise MappingRefused(
            "repeat.period",
            f"a period other than 1 {unit} (e.g. every other day) is not expressible",
        )
    if unit == "wk":
        days = len(repeat.dayOfWeek or ())
        if not days:
            raise MappingRefused("repeat.dayOfWeek", "a weekly timing needs dayOfWeek")
        if frequency % days:
            raise MappingRefused(
                "repeat.frequency", "a weekly frequency must be a multiple of the dayOfWeek count"
            )
        frequency //= days
    if explicit is not None:
        if len(explicit) != frequency:
            raise MappingRefused(
                "repeat.frequency", "the frequency differs from the number of times given"
            )
        return explicit
    times = rules.frequency_times.get(str(frequency))
    if times is None:
        raise MappingRefused(
            "repeat.frequency", f"{frequency} doses per day have no clock times in the rule"
        )
    return list(times)


def _repeat_of_code(timing: Timing) -> Any:
    """The repeat a timing-abbreviation code stands for, when the Timing gives only a code."""
    codings = list(timing.code.coding or ()) if timing.code is not None else []
    for coding in codings:
        if coding.system == GTS_ABBREVIATION and coding.code in _GTS_REPEATS:
            return TimingRepeat.model_validate(_GTS_REPEATS[coding.code])
    if codings:
        raise MappingRefused("code", "the timing code is not a daily timing-abbreviation code")
    raise MappingRefused("repeat", "the timing has no repeat and no code")


def schedule_from_timing(
    timing: Timing | dict[str, Any], rules: FhirRules, zone: ZoneInfo
) -> Schedule:
    """The schedule of one FHIR Timing in ``zone`` (the Patient's; a tz-code extension on
    boundsPeriod.start wins), or MappingRefused naming the element (path relative to the
    Timing) that medstream cannot express."""
    if isinstance(timing, dict):
        timing = Timing.model_validate(timing)
    if timing.event:
        raise MappingRefused("event", "a timing of listed events is not a daily schedule")
    repeat = timing.repeat
    if repeat is None:
        repeat = _repeat_of_code(timing)
    for name, what in _REFUSED_REPEAT:
        if getattr(repeat, name) is not None:
            raise MappingRefused(f"repeat.{name}", f"{what} is not expressible")
    if repeat.timeOfDay and repeat.when:
        raise MappingRefused("repeat", "timeOfDay and when cannot both be given")
    if repeat.offset is not None and not repeat.when:
        raise MappingRefused("repeat.offset", "an offset needs a when code")
    explicit: list[str] | None = None
    if repeat.timeOfDay:
        explicit = [_format_time(value) for value in repeat.timeOfDay if value is not None]
    elif repeat.when:
        explicit = _when_times(repeat, rules)
    times = _frequency_times(repeat, rules, explicit)
    ordered = sorted(set(times), key=lambda text: parse_time_of_day(text))
    if len(ordered) != len(times):
        raise MappingRefused("repeat", "the timing gives the same clock time twice")
    days = tuple(str(day) for day in repeat.dayOfWeek if day) if repeat.dayOfWeek else None
    start = end = None
    if repeat.boundsPeriod is not None:
        # R4's tz-code extension on the start names the zone the prescriber meant.
        zone = tz_code(repeat.boundsPeriod.start__ext, "repeat.boundsPeriod.start") or zone
        if repeat.boundsPeriod.start is not None:
            start = local_date(repeat.boundsPeriod.start, zone)
        if repeat.boundsPeriod.end is not None:
            end = local_date(repeat.boundsPeriod.end, zone)
        if start and end and end < start:
            raise MappingRefused("repeat.boundsPeriod", "the end is before the start")
    return Schedule(tuple(ordered), str(zone.key), days, start, end)
