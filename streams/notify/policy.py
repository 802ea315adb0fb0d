"""Who gets a notification, whether it may wait for quiet hours to end, and retry timing (pure)."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from streams import backoff
from streams.contracts.models import (
    ContactChannel,
    DoseMissed,
    InteractionWarning,
    QuietHours,
    RefillAlert,
    ReminderDue,
    parse_time_of_day,
)
from streams.contracts.vocabulary import Severity
from streams.domain.patient import ContactPreferences
from streams.notify.messages import NotifiableEvent

URGENT_SEVERITIES = frozenset({Severity.CONTRAINDICATED, Severity.MAJOR})


def is_urgent(event: NotifiableEvent) -> bool:
    """True when the event goes out even during quiet hours."""
    if isinstance(event, ReminderDue | DoseMissed):
        # A reminder held until morning is a missed dose; a missed dose may need a caregiver now.
        return True
    if isinstance(event, InteractionWarning):
        return event.severity in URGENT_SEVERITIES
    if isinstance(event, RefillAlert):
        return False
    raise TypeError(f"not a notifiable event: {type(event).__name__}")


def quiet_hours_end(now: datetime, quiet: QuietHours | None, timezone: str) -> datetime | None:
    """The UTC instant the quiet hours around `now` end, or None when `now` is not in them.

    Quiet hours are local wall-clock times and may span midnight (22:00-07:00); equal start and
    end mean none. Around DST changes a wall time that occurs twice means its first occurrence,
    and one skipped by the clock means the instant the clock would have shown it, one gap later
    (02:30 on a spring-forward night ends quiet hours at 03:30 local).
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    if quiet is None:
        return None
    start = parse_time_of_day(quiet.start)
    end = parse_time_of_day(quiet.end)
    if start == end:
        return None
    zone = ZoneInfo(timezone)
    today = now.astimezone(zone).date()
    spans_midnight = start > end
    # Working with instants rather than wall-clock times keeps one night's quiet hours one
    # interval: in a repeated hour the wall clock would re-enter quiet hours that have ended.
    for start_day in (today - timedelta(days=1), today):
        begins = _instant(start_day, start, zone)
        ends = _instant(start_day + timedelta(days=1) if spans_midnight else start_day, end, zone)
        if begins <= now < ends:
            return ends
    return None


def _instant(day: date, wall: time, zone: ZoneInfo) -> datetime:
    # fold=0 is PEP 495's choice: the first of two occurrences, and for a skipped time the
    # offset from before the jump, which moves it forward by the size of the gap.
    return datetime.combine(day, wall, tzinfo=zone).replace(fold=0).astimezone(UTC)


def delivery_targets(
    event: NotifiableEvent, contact: ContactPreferences | None
) -> list[tuple[str, ContactChannel]]:
    """(channel label, channel) pairs to deliver to; the label never contains the target."""
    if contact is None:
        return []
    if isinstance(event, DoseMissed):
        # The patient already had the reminder; a missed dose is for someone who can check in.
        return [
            (f"caregiver-{channel.kind.value}#{index}", channel)
            for index, channel in enumerate(contact.caregiver_channels)
        ]
    return [
        (f"{channel.kind.value}#{index}", channel) for index, channel in enumerate(contact.channels)
    ]


def backoff_delays(attempts: int, base: float, cap: float, rng: random.Random) -> list[float]:
    """The waits between `attempts` tries: full jitter, delay i uniform in [0, min(cap, base*2**i)]
    (``streams.backoff.delays``), so that many failing deliveries do not all retry at once."""
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    if base < 0 or cap < 0:
        raise ValueError("base and cap must not be negative")
    return list(itertools.islice(backoff.delays(base, cap, rng), attempts - 1))
