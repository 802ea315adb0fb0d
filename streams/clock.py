"""The one clock type of medstream: components take a clock so that tests can drive time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The wall clock, in UTC: every component's default clock."""
    return datetime.now(UTC)
