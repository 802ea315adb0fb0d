"""Unit tests for notification policy: urgency, quiet hours (midnight, DST), targets, backoff."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.contracts.models import ContactChannel, QuietHours
from streams.contracts.vocabulary import ChannelKind
from streams.domain.patient import ContactPreferences
from streams.notify.messages import NotifiableEvent
from streams.notify.policy import backoff_delays, delivery_targets, is_urgent, quiet_hours_end
from tests.unit.test_notify_messages import missed, refill, reminder, warning

NEW_YORK = ZoneInfo("America/New_York")


def local(text: str, zone: ZoneInfo = NEW_YORK, fold: int = 0) -> datetime:
    """An aware datetime from a local wall time."""
    return datetime.fromisoformat(text).replace(tzinfo=zone, fold=fold)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


NIGHT = QuietHours(start="22:00", end="07:00")

# --- Urgency --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "urgent"),
    [
        (reminder(), True),
        (missed(), True),
        (warning(severity="contraindicated"), True),
        (warning(severity="major"), True),
        (warning(severity="moderate"), False),
        (warning(severity="minor"), False),
        (refill(reason="LOW_SUPPLY"), False),
        (refill(reason="OUT_OF_SUPPLY"), False),
        (refill(reason="NO_REFILLS_REMAINING"), False),
    ],
    ids=lambda value: getattr(value, "event_type", str(value)),
)
def test_urgency_table(event: NotifiableEvent, urgent: bool) -> None:
    assert is_urgent(event) is urgent


def test_urgency_of_something_else_is_an_error() -> None:
    with pytest.raises(TypeError):
        is_urgent(object())  # type: ignore[arg-type]


# --- Quiet hours ----------------------------------------------------------------------------


def test_no_quiet_hours_means_never_quiet() -> None:
    assert quiet_hours_end(local("2026-03-03T23:00"), None, "America/New_York") is None


def test_equal_start_and_end_mean_no_quiet_hours() -> None:
    same = QuietHours(start="22:00", end="22:00")
    assert quiet_hours_end(local("2026-03-03T22:00"), same, "America/New_York") is None
    assert quiet_hours_end(local("2026-03-03T03:00"), same, "America/New_York") is None


@pytest.mark.parametrize(
    ("now", "end"),
    [
        # Evening: quiet hours end tomorrow morning.
        ("2026-03-03T22:00", "2026-03-04T12:00"),
        ("2026-03-03T23:59:59", "2026-03-04T12:00"),
        # After midnight: they end this morning.
        ("2026-03-04T00:00", "2026-03-04T12:00"),
        ("2026-03-04T06:59:59", "2026-03-04T12:00"),
        # Outside.
        ("2026-03-04T07:00", None),
        ("2026-03-04T12:00", None),
        ("2026-03-04T21:59:59", None),
    ],
)
def test_quiet_hours_across_midnight(now: str, end: str | None) -> None:
    expected = None if end is None else utc(end)
    assert quiet_hours_end(local(now), NIGHT, "America/New_York") == expected


@pytest.mark.parametrize(
    ("now", "end"),
    [
        ("2026-03-03T12:59", None),
        ("2026-03-03T13:00", "2026-03-03T15:30"),
        ("2026-03-03T14:30", "2026-03-03T15:30"),
        ("2026-03-03T15:30", None),
        ("2026-03-03T23:00", None),
    ],
)
def test_quiet_hours_within_one_day(now: str, end: str | None) -> None:
    siesta = QuietHours(start="13:00", end="15:30")
    london = ZoneInfo("Europe/London")
    expected = None if end is None else utc(end)
    assert quiet_hours_end(local(now, london), siesta, "Europe/London") == expected


def test_now_may_be_given_in_any_zone() -> None:
    # 04:00 UTC is 23:00 the evening before in New York (EST).
    assert quiet_hours_end(utc("2026-03-04T04:00"), NIGHT, "America/New_York") == utc(
        "2026-03-04T12:00"
    )


def test_the_result_is_in_utc() -> None:
    end = quiet_hours_end(local("2026-03-03T23:00"), NIGHT, "America/New_York")
    assert end is not None
    assert end.utcoffset() == timedelta(0)


def test_a_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        quiet_hours_end(datetime(2026, 3, 3, 23), NIGHT, "America/New_York")


def test_spring_forward_night_ends_at_local_seven_in_summer_time() -> None:
    # US clocks jump from 02:00 EST to 03:00 EDT on 8 March 2026: the night is an hour shorter.
    end = quiet_hours_end(local("2026-03-07T23:00"), NIGHT, "America/New_York")
    assert end == local("2026-03-08T07:00")
    assert end == utc("2026-03-08T11:00")


def test_fall_back_night_ends_at_local_seven_in_standard_time() -> None:
    # US clocks fall back from 02:00 EDT to 01:00 EST on 1 November 2026.
    end = quiet_hours_end(local("2026-10-31T23:00"), NIGHT, "America/New_York")
    assert end == utc("2026-11-01T12:00")
    # Still quiet in the repeated hour, both times round.
    for fold in (0, 1):
        assert quiet_hours_end(
            local("2026-11-01T01:30", fold=fold), NIGHT, "America/New_York"
        ) == utc("2026-11-01T12:00")


def test_an_end_in_the_spring_gap_moves_forward_by_the_gap() -> None:
    # 02:30 does not exist on 8 March 2026 in New York; the clock would have shown it at 03:30.
    short = QuietHours(start="22:00", end="02:30")
    end = quiet_hours_end(local("2026-03-07T23:00"), short, "America/New_York")
    assert end == utc("2026-03-08T07:30")
    assert end == local("2026-03-08T03:30")
    assert quiet_hours_end(local("2026-03-08T03:29"), short, "America/New_York") == end
    assert quiet_hours_end(local("2026-03-08T03:30"), short, "America/New_York") is None


def test_an_end_in_the_repeated_hour_is_its_first_occurrence_and_quiet_does_not_return() -> None:
    short = QuietHours(start="22:00", end="01:30")
    end = quiet_hours_end(local("2026-10-31T23:00"), short, "America/New_York")
    # (Converted first: PEP 495 makes a time in the repeated hour unequal to any other zone's.)
    assert end == local("2026-11-01T01:30", fold=0).astimezone(UTC)
    assert end == utc("2026-11-01T05:30")
    # An hour later the wall clock shows 01:10 again; the night's quiet hours are over.
    second_ten_past_one = local("2026-11-01T01:10", fold=1)
    assert second_ten_past_one.astimezone(UTC) == utc("2026-11-01T06:10")
    assert quiet_hours_end(second_ten_past_one, short, "America/New_York") is None


def test_a_start_in_the_repeated_hour_is_its_first_occurrence() -> None:
    early = QuietHours(start="01:30", end="06:00")
    first = local("2026-11-01T01:30", fold=0)
    assert quiet_hours_end(first, early, "America/New_York") == utc("2026-11-01T11:00")
    assert quiet_hours_end(first - timedelta(seconds=1), early, "America/New_York") is None


def test_southern_hemisphere_dst() -> None:
    # Sydney leaves summer time on 5 April 2026 (03:00 AEDT -> 02:00 AEST).
    sydney = ZoneInfo("Australia/Sydney")
    end = quiet_hours_end(local("2026-04-04T23:00", sydney), NIGHT, "Australia/Sydney")
    assert end == local("2026-04-05T07:00", sydney)
    assert end == utc("2026-04-04T21:00")


ZONES = ["America/New_York", "Europe/London", "Australia/Sydney", "Asia/Kolkata", "UTC"]


@settings(max_examples=300, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    now=st.datetimes(
        min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
    ),
    start=st.times().map(lambda t: t.replace(microsecond=0)),
    end=st.times().map(lambda t: t.replace(microsecond=0)),
)
def test_quiet_hours_properties(zone: str, now: datetime, start: Any, end: Any) -> None:
    quiet = QuietHours(start=start.strftime("%H:%M:%S"), end=end.strftime("%H:%M:%S"))
    found = quiet_hours_end(now, quiet, zone)
    if start == end:
        assert found is None
        return
    if found is None:
        return
    # Ends in the future, within a day (plus a DST hour), and on the configured wall time
    # unless that time was skipped by the clock.
    assert now < found <= now + timedelta(hours=25)
    shown = found.astimezone(ZoneInfo(zone)).time()
    skipped_to = (datetime.combine(found.date(), end) + timedelta(hours=1)).time()
    assert shown in (end, skipped_to)
    # Every instant until the end is in the same quiet hours.
    middle = now + (found - now) / 2
    assert quiet_hours_end(middle, quiet, zone) == found
    assert quiet_hours_end(found, quiet, zone) != found


# --- Targets --------------------------------------------------------------------------------

CONTACT = ContactPreferences(
    channels=(
        ContactChannel(kind=ChannelKind.WEBHOOK, target="https://hooks.example.org/secret-token"),
        ContactChannel(kind=ChannelKind.EMAIL, target="pat@example.org"),
        ContactChannel(kind=ChannelKind.EMAIL, target="pat.work@example.org"),
    ),
    timezone="America/New_York",
    quiet_hours=NIGHT,
    caregiver_channels=(
        ContactChannel(kind=ChannelKind.EMAIL, target="carer@example.org"),
        ContactChannel(kind=ChannelKind.APPRISE, target="tgram://bottoken/chatid"),
    ),
)


@pytest.mark.parametrize(
    "event",
    [reminder(), refill(), warning(), warning(severity="minor")],
    ids=lambda e: e.event_type,
)
def test_patient_events_go_to_the_patients_channels(event: NotifiableEvent) -> None:
    targets = delivery_targets(event, CONTACT)
    assert targets == [
        ("webhook#0", CONTACT.channels[0]),
        ("email#1", CONTACT.channels[1]),
        ("email#2", CONTACT.channels[2]),
    ]


def test_missed_doses_go_to_the_caregivers_only() -> None:
    targets = delivery_targets(missed(), CONTACT)
    assert targets == [
        ("caregiver-email#0", CONTACT.caregiver_channels[0]),
        ("caregiver-apprise#1", CONTACT.caregiver_channels[1]),
    ]
    assert not {channel for _, channel in targets} & set(CONTACT.channels)


def test_a_missed_dose_without_caregivers_goes_nowhere() -> None:
    alone = CONTACT.model_copy(update={"caregiver_channels": ()})
    assert delivery_targets(missed(), alone) == []


def test_no_preferences_means_no_targets() -> None:
    assert delivery_targets(reminder(), None) == []
    assert delivery_targets(missed(), None) == []


def test_labels_never_contain_contact_details() -> None:
    for event in (reminder(), missed()):
        for label, channel in delivery_targets(event, CONTACT):
            assert channel.target not in label
            assert not set(label) & set("@/:")


# --- Backoff --------------------------------------------------------------------------------


def test_backoff_gives_one_delay_between_each_pair_of_attempts() -> None:
    assert backoff_delays(1, 0.5, 30, random.Random(1)) == []
    assert len(backoff_delays(5, 0.5, 30, random.Random(1))) == 4


def test_backoff_is_reproducible_with_a_seeded_rng() -> None:
    assert backoff_delays(6, 0.5, 30, random.Random(42)) == backoff_delays(
        6, 0.5, 30, random.Random(42)
    )


def test_backoff_delays_stay_within_the_exponential_bound_and_the_cap() -> None:
    base, cap = 0.5, 5.0
    bounds = [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    largest = [0.0] * len(bounds)
    for seed in range(500):
        delays = backoff_delays(len(bounds) + 1, base, cap, random.Random(seed))
        for i, delay in enumerate(delays):
            assert 0.0 <= delay <= bounds[i]
            largest[i] = max(largest[i], delay)
    # Full jitter uses the whole range: over many tries each delay gets near its bound.
    for i, bound in enumerate(bounds):
        assert largest[i] > 0.9 * bound


def test_backoff_grows_on_average() -> None:
    rng = random.Random(7)
    runs = [backoff_delays(5, 1.0, 100.0, rng) for _ in range(2000)]
    means = [sum(run[i] for run in runs) / len(runs) for i in range(4)]
    # Uniform on [0, 2**i] has mean 2**(i-1).
    for i, mean in enumerate(means):
        assert mean == pytest.approx(2**i / 2, rel=0.1)


def test_backoff_survives_many_attempts() -> None:
    delays = backoff_delays(2000, 1.0, 60.0, random.Random(3))
    assert max(delays) <= 60.0


@given(
    attempts=st.integers(min_value=1, max_value=30),
    base=st.floats(min_value=0, max_value=100),
    cap=st.floats(min_value=0, max_value=1000),
    seed=st.integers(),
)
def test_backoff_bounds_hold_for_any_parameters(
    attempts: int, base: float, cap: float, seed: int
) -> None:
    delays = backoff_delays(attempts, base, cap, random.Random(seed))
    assert len(delays) == attempts - 1
    for i, delay in enumerate(delays):
        assert 0.0 <= delay <= min(cap, base * 2**i)


@pytest.mark.parametrize(
    ("attempts", "base", "cap"), [(0, 1.0, 1.0), (3, -1.0, 1.0), (3, 1.0, -1.0)]
)
def test_backoff_refuses_nonsense(attempts: int, base: float, cap: float) -> None:
    with pytest.raises(ValueError, match="must"):
        backoff_delays(attempts, base, cap, random.Random(0))
