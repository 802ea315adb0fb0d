"""The closed vocabularies of the contract (enumerations shared by models, schemas and domain)."""

from __future__ import annotations

from enum import StrEnum


class Severity(StrEnum):
    """How dangerous a drug-drug interaction is, most severe first."""

    CONTRAINDICATED = "contraindicated"
    MAJOR = "major"
    MODERATE = "moderate"
    MINOR = "minor"

    @property
    def rank(self) -> int:
        """0 for the most severe; lower ranks win when two sources disagree."""
        return list(Severity).index(self)


class RefillReason(StrEnum):
    """Why a RefillAlert was raised."""

    LOW_SUPPLY = "LOW_SUPPLY"
    OUT_OF_SUPPLY = "OUT_OF_SUPPLY"
    NO_REFILLS_REMAINING = "NO_REFILLS_REMAINING"


class DeliveryStatus(StrEnum):
    """The end of one notification attempt."""

    DELIVERED = "delivered"
    FAILED = "failed"
    SUPPRESSED = "suppressed"


class Weekday(StrEnum):
    """Days of the week as schedules name them."""

    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"

    @property
    def iso_index(self) -> int:
        """0 for Monday, as ``date.weekday()`` counts."""
        return list(Weekday).index(self)


class ChannelKind(StrEnum):
    """The delivery channels a contact preference may name."""

    WEBHOOK = "webhook"
    EMAIL = "email"
    CONSOLE = "console"
    APPRISE = "apprise"
