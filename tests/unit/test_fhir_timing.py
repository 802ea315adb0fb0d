"""The FHIR Timing table of docs/fhir.md: what each repeat becomes, and what is refused."""

from __future__ import annotations

from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from streams.fhir.problems import MappingRefused
from streams.fhir.rules import FhirRules
from streams.fhir.timing import Schedule, schedule_from_timing
from streams.settings import Settings

RULES = FhirRules()
UTC = ZoneInfo("UTC")
NEW_YORK = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")


def schedule(repeat: dict[str, Any], zone: ZoneInfo = UTC, rules: FhirRules = RULES) -> Schedule:
    return schedule_from_timing({"repeat": repeat}, rules, zone)


DAILY = {"period": 1, "periodUnit": "d"}

# (repeat, times_of_day, days_of_week)
MAPPED = [
    pytest.param({"frequency": 1, **DAILY}, ("09:00",), None, id="QD"),
    pytest.param({"frequency": 2, **DAILY}, ("09:00", "21:00"), None, id="BID"),
    pytest.param({"frequency": 3, **DAILY}, ("08:00", "14:00", "20:00"), None, id="TID"),
    pytest.param({"frequency": 4, **DAILY}, ("08:00", "12:00", "16:00", "20:00"), None, id="QID"),
    pytest.param({"period": 1, "periodUnit": "d"}, ("09:00",), None, id="period-only-daily"),
    pytest.param(
        {"frequency": 1, "period": 8, "periodUnit": "h"},
        ("06:00", "14:00", "22:00"),
        None,
        id="q8h",
    ),
    pytest.param(
        {"frequency": 1, "period": 6, "periodUnit": "h"},
        ("00:00", "06:00", "12:00", "18:00"),
        None,
        id="q6h",
    ),
    pytest.param(
        {"frequency": 1, "period": 12, "periodUnit": "h"}, ("06:00", "18:00"), None, id="q12h"
    ),
    pytest.param(
        {"frequency": 1, "period": 4, "periodUnit": "h"},
        ("02:00", "06:00", "10:00", "14:00", "18:00", "22:00"),
        None,
        id="q4h",
    ),
    pytest.param(
        {"frequency": 2, "period": 24, "periodUnit": "h"}, ("06:00", "18:00"), None, id="2-per-24h"
    ),
    pytest.param({"timeOfDay": ["08:00:00", "20:00:00"]}, ("08:00", "20:00"), None, id="timeOfDay"),
    pytest.param(
        {"timeOfDay": ["20:00:00", "07:30:15"], "frequency": 2, **DAILY},
        ("07:30:15", "20:00"),
        None,
        id="timeOfDay-with-frequency-sorted-seconds-kept",
    ),
    pytest.param(
        {"frequency": 1, **DAILY, "dayOfWeek": ["mon", "wed", "fri"]},
        ("09:00",),
        ("mon", "wed", "fri"),
        id="daily-on-weekdays",
    ),
    pytest.param(
        {"frequency": 2, "period": 1, "periodUnit": "wk", "dayOfWeek": ["tue", "sat"]},
        ("09:00",),
        ("tue", "sat"),
        id="twice-weekly-on-days",
    ),
    pytest.param(
        {
            "frequency": 4,
            "period": 1,
            "periodUnit": "wk",
            "dayOfWeek": ["mon", "thu"],
            "timeOfDay": ["08:00:00", "20:00:00"],
        },
        ("08:00", "20:00"),
        ("mon", "thu"),
        id="weekly-with-timeOfDay",
    ),
    pytest.param({"when": ["MORN"]}, ("08:00",), None, id="when-MORN"),
    pytest.param(
        {"when": ["MORN.early", "MORN.late"]}, ("06:00", "10:00"), None, id="MORN-early-late"
    ),
    pytest.param(
        {"when": ["NOON", "AFT", "EVE"]}, ("12:00", "15:00", "19:00"), None, id="NOON-AFT-EVE"
    ),
    pytest.param({"when": ["NIGHT"]}, ("22:00",), None, id="NIGHT"),
    pytest.param({"when": ["HS"]}, ("22:00",), None, id="HS"),
    pytest.param({"when": ["WAKE"]}, ("07:00",), None, id="WAKE"),
    pytest.param({"when": ["C"]}, ("08:00", "12:00", "18:00"), None, id="C-meals"),
    pytest.param({"when": ["CM", "CD", "CV"]}, ("08:00", "12:00", "18:00"), None, id="CM-CD-CV"),
    pytest.param({"when": ["AC"]}, ("07:30", "11:30", "17:30"), None, id="AC"),
    pytest.param({"when": ["ACM", "ACV"]}, ("07:30", "17:30"), None, id="ACM-ACV"),
    pytest.param({"when": ["ACD"]}, ("11:30",), None, id="ACD"),
    pytest.param({"when": ["PC"]}, ("08:30", "12:30", "18:30"), None, id="PC"),
    pytest.param({"when": ["PCM", "PCD", "PCV"]}, ("08:30", "12:30", "18:30"), None, id="PCx"),
    pytest.param({"when": ["ACM"], "offset": 60}, ("07:00",), None, id="ACM-offset-before-meal"),
    pytest.param({"when": ["AC"], "offset": 15}, ("07:45", "11:45", "17:45"), None, id="AC-offset"),
    pytest.param({"when": ["PCV"], "offset": 120}, ("20:00",), None, id="PCV-offset-after-meal"),
    pytest.param({"when": ["CD"], "offset": 10}, ("12:10",), None, id="CD-offset-after"),
    pytest.param({"when": ["MORN"], "offset": 30}, ("08:30",), None, id="MORN-offset-after"),
    pytest.param(
        {"when": ["CM", "CV"], "frequency": 2, **DAILY}, ("08:00", "18:00"), None, id="when+freq"
    ),
]


@pytest.mark.parametrize(("repeat", "times", "days"), MAPPED)
def test_the_timing_table(
    repeat: dict[str, Any], times: tuple[str, ...], days: tuple[str, ...] | None
) -> None:
    mapped = schedule(repeat)
    assert mapped.times_of_day == times
    assert mapped.days_of_week == days
    assert mapped.timezone == "UTC"


GTS = "http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation"


@pytest.mark.parametrize(
    ("code", "times"),
    [
        ("QD", ("09:00",)),
        ("BID", ("09:00", "21:00")),
        ("TID", ("08:00", "14:00", "20:00")),
        ("QID", ("08:00", "12:00", "16:00", "20:00")),
        ("Q6H", ("00:00", "06:00", "12:00", "18:00")),
        ("Q8H", ("06:00", "14:00", "22:00")),
        ("AM", ("08:00",)),
        ("PM", ("19:00",)),
        ("BED", ("22:00",)),
    ],
)
def test_a_timing_code_alone_stands_for_its_repeat(code: str, times: tuple[str, ...]) -> None:
    timing = {"code": {"coding": [{"system": GTS, "code": code}], "text": code}}
    assert schedule_from_timing(timing, RULES, UTC).times_of_day == times


def test_bounds_period_gives_local_start_and_end_dates() -> None:
    mapped = schedule(
        {"frequency": 2, **DAILY, "boundsPeriod": {"start": "2026-12-01", "end": "2027-01-31"}}
    )
    assert (mapped.start_date, mapped.end_date) == (date(2026, 12, 1), date(2027, 1, 31))
    open_ended = schedule({"frequency": 2, **DAILY, "boundsPeriod": {"start": "2026-12-01"}})
    assert (open_ended.start_date, open_ended.end_date) == (date(2026, 12, 1), None)


@pytest.mark.parametrize(
    ("zone", "start", "local_date"),
    [
        # America/New_York springs forward 2026-03-08 02:00 EST -> 03:00 EDT.
        (NEW_YORK, "2026-03-08T05:30:00+00:00", date(2026, 3, 8)),  # 00:30 EST
        (NEW_YORK, "2026-03-08T04:30:00+00:00", date(2026, 3, 7)),  # 23:30 EST the day before
        (NEW_YORK, "2026-03-09T03:30:00+00:00", date(2026, 3, 8)),  # 23:30 EDT
        # ... and falls back 2026-11-01 02:00 EDT -> 01:00 EST.
        (NEW_YORK, "2026-11-01T04:30:00+00:00", date(2026, 11, 1)),  # 00:30 EDT
        (NEW_YORK, "2026-11-02T04:30:00+00:00", date(2026, 11, 1)),  # 23:30 EST
        (NEW_YORK, "2026-11-01T06:30:00+01:00", date(2026, 11, 1)),  # another offset, 01:30 EST
        # Europe/London springs forward 2026-03-29 01:00 GMT -> 02:00 BST.
        (LONDON, "2026-03-28T23:30:00-01:00", date(2026, 3, 29)),  # 00:30 GMT
        (LONDON, "2026-03-29T23:30:00+00:00", date(2026, 3, 30)),  # 00:30 BST next day
        # ... and falls back 2026-10-25 02:00 BST -> 01:00 GMT.
        (LONDON, "2026-10-24T23:30:00+00:00", date(2026, 10, 25)),  # 00:30 BST
        (LONDON, "2026-10-25T23:30:00+00:00", date(2026, 10, 25)),  # 23:30 GMT
    ],
)
def test_bounds_start_across_dst_gives_the_local_date_and_the_same_clock_times(
    zone: ZoneInfo, start: str, local_date: date
) -> None:
    mapped = schedule({"frequency": 2, **DAILY, "boundsPeriod": {"start": start}}, zone)
    assert mapped.start_date == local_date
    assert mapped.times_of_day == ("09:00", "21:00")
    assert mapped.timezone == zone.key


def test_a_tz_code_on_the_bounds_start_names_the_zone() -> None:
    mapped = schedule(
        {
            "frequency": 1,
            **DAILY,
            "boundsPeriod": {
                "start": "2026-03-29T00:30:00+00:00",
                "_start": {
                    "extension": [
                        {
                            "url": "http://hl7.org/fhir/StructureDefinition/tz-code",
                            "valueCode": "Europe/London",
                        }
                    ]
                },
            },
        },
        NEW_YORK,
    )
    assert (mapped.timezone, mapped.start_date) == ("Europe/London", date(2026, 3, 29))


def test_the_rules_come_from_the_settings() -> None:
    rules = FhirRules.from_settings(
        Settings(
            fhir_frequency_times='{"2": ["07:00", "19:00"]}',
            fhir_interval_start="00:00",
            fhir_when_times='{"HS": ["23:00"]}',
        )
    )
    assert schedule({"frequency": 2, **DAILY}, rules=rules).times_of_day == ("07:00", "19:00")
    assert schedule({"frequency": 1, "period": 8, "periodUnit": "h"}, rules=rules).times_of_day == (
        "00:00",
        "08:00",
        "16:00",
    )
    assert schedule({"when": ["HS"]}, rules=rules).times_of_day == ("23:00",)
    with pytest.raises(MappingRefused):
        schedule({"frequency": 1, **DAILY}, rules=rules)  # not in this table


@pytest.mark.parametrize(
    "values",
    [
        {"fhir_frequency_times": "not json"},
        {"fhir_frequency_times": '{"2": ["09:00"]}'},  # two per day need two times
        {"fhir_frequency_times": '{"0": []}'},
        {"fhir_frequency_times": '{"2": ["09:00", "9am"]}'},
        {"fhir_when_times": '{"HS": []}'},
        {"fhir_when_times": '{"HS": ["22:00", "22:00"]}'},
        {"fhir_interval_start": "6"},
        {"fhir_default_timezone": "Mars/Olympus"},
    ],
)
def test_bad_rules_are_refused_by_the_settings(values: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        Settings(**values)  # type: ignore[arg-type]


# (timing, path of the refusal relative to the Timing)
REFUSED = [
    pytest.param(
        {"repeat": {"frequency": 1, "period": 2, "periodUnit": "d"}},
        "repeat.period",
        id="every-2-days",
    ),
    pytest.param(
        {"repeat": {"frequency": 1, "period": 3, "periodUnit": "wk", "dayOfWeek": ["mon"]}},
        "repeat.period",
        id="every-3-weeks",
    ),
    pytest.param({"repeat": {"frequency": 2, **DAILY, "count": 10}}, "repeat.count", id="count"),
    pytest.param(
        {"repeat": {"frequency": 2, **DAILY, "countMax": 10}}, "repeat.countMax", id="countMax"
    ),
    pytest.param(
        {"repeat": {"frequency": 1, **DAILY, "duration": 30, "durationUnit": "min"}},
        "repeat.duration",
        id="duration",
    ),
    pytest.param(
        {"repeat": {"frequency": 1, "frequencyMax": 2, **DAILY}},
        "repeat.frequencyMax",
        id="frequencyMax",
    ),
    pytest.param(
        {"repeat": {"frequency": 1, "period": 4, "periodMax": 6, "periodUnit": "h"}},
        "repeat.periodMax",
        id="periodMax",
    ),
    pytest.param(
        {"repeat": {"frequency": 1, **DAILY, "boundsDuration": {"value": 10, "unit": "d"}}},
        "repeat.boundsDuration",
        id="boundsDuration",
    ),
    pytest.param(
        {"event": ["2026-12-01T08:00:00Z"], "repeat": {"frequency": 1, **DAILY}},
        "event",
        id="events-mixed-with-repeat",
    ),
    pytest.param({"event": ["2026-12-01T08:00:00Z"]}, "event", id="events-only"),
    pytest.param({"code": {"text": "BID"}}, "repeat", id="code-text-only"),
    pytest.param({}, "repeat", id="empty-timing"),
    pytest.param({"code": {"coding": [{"system": GTS, "code": "QOD"}]}}, "code", id="code-QOD"),
    pytest.param(
        {"code": {"coding": [{"system": "urn:local", "code": "BID"}]}},
        "code",
        id="code-of-another-system",
    ),
    pytest.param({"repeat": {"boundsPeriod": {"start": "2026-12-01"}}}, "repeat", id="no-times"),
    pytest.param(
        {"repeat": {"frequency": 1, "period": 1, "periodUnit": "mo"}},
        "repeat.periodUnit",
        id="monthly",
    ),
    pytest.param(
        {"repeat": {"frequency": 1, "period": 30, "periodUnit": "min"}},
        "repeat.periodUnit",
        id="minutes",
    ),
    pytest.param(
        {"repeat": {"frequency": 1, "period": 5, "periodUnit": "h"}},
        "repeat.period",
        id="q5h-does-not-divide-the-day",
    ),
    pytest.param(
        {"repeat": {"frequency": 1, "period": 1.5, "periodUnit": "h"}}, "repeat.period", id="q90min"
    ),
    pytest.param(
        {"repeat": {"frequency": 5, **DAILY}}, "repeat.frequency", id="5-per-day-not-in-table"
    ),
    pytest.param(
        {"repeat": {"frequency": 2, **DAILY, "timeOfDay": ["08:00:00"]}},
        "repeat.frequency",
        id="frequency-disagrees-with-timeOfDay",
    ),
    pytest.param(
        {"repeat": {"frequency": 1, "period": 1, "periodUnit": "wk"}},
        "repeat.dayOfWeek",
        id="weekly-without-days",
    ),
    pytest.param(
        {"repeat": {"frequency": 3, "period": 1, "periodUnit": "wk", "dayOfWeek": ["mon", "fri"]}},
        "repeat.frequency",
        id="weekly-frequency-not-per-day",
    ),
    pytest.param(
        {"repeat": {"frequency": 1, "period": 8, "periodUnit": "h", "timeOfDay": ["08:00:00"]}},
        "repeat",
        id="hourly-with-timeOfDay",
    ),
    pytest.param(
        {"repeat": {"timeOfDay": ["08:00:00"], "when": ["MORN"]}}, "repeat", id="timeOfDay-and-when"
    ),
    pytest.param(
        {"repeat": {"timeOfDay": ["08:00:00"], "offset": 30}},
        "repeat.offset",
        id="offset-without-when",
    ),
    pytest.param({"repeat": {"when": ["PHS"]}}, "repeat.when[0]", id="when-code-not-in-table"),
    pytest.param(
        {"repeat": {"when": ["HS"], "offset": 180}}, "repeat.offset", id="offset-into-next-day"
    ),
    pytest.param({"repeat": {"when": ["C", "CM"]}}, "repeat", id="same-time-twice"),
    pytest.param(
        {
            "repeat": {
                "frequency": 1,
                **DAILY,
                "boundsPeriod": {"start": "2026-12-05", "end": "2026-12-01"},
            }
        },
        "repeat.boundsPeriod",
        id="end-before-start",
    ),
    pytest.param(
        {"repeat": {"frequency": 1, "period": 1}}, "repeat.periodUnit", id="period-without-unit"
    ),
]


@pytest.mark.parametrize(("timing", "path"), REFUSED)
def test_timings_medstream_cannot_express_are_refused_with_their_path(
    timing: dict[str, Any], path: str
) -> None:
    with pytest.raises(MappingRefused) as refused:
        schedule_from_timing(timing, RULES, UTC)
    assert refused.value.path == path
    assert refused.value.error_type == "FhirUnmappable"
    assert refused.value.reason


def test_a_when_code_or_period_unit_outside_the_value_sets_is_not_repeated() -> None:
    with pytest.raises(MappingRefused) as refused:
        schedule({"when": ["Rosalind"]})
    assert "Rosalind" not in refused.value.reason
    with pytest.raises(MappingRefused) as refused:
        schedule({"frequency": 1, "period": 1, "periodUnit": "Marchetti"})
    assert "Marchetti" not in refused.value.reason
    with pytest.raises(MappingRefused) as refused:
        schedule({"when": ["PHS"]})
    assert "PHS" in refused.value.reason  # a FHIR code may be named
