"""Refill tracking: a medication's remaining supply and which refill alerts it calls for."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Final

from streams.contracts.vocabulary import RefillReason

__all__ = [
    "Assessment",
    "Supply",
    "assess",
    "daily_use",
    "days_of_supply",
    "dispense",
    "prescribe",
    "take_dose",
]

# Quantities are kept to 9 decimal places (a billionth of a tablet or millilitre, far below
# anything that can be dispensed or taken). Binary floats cannot hold 0.1 or 2.5/3 exactly, so
# repeated subtraction drifts: 1.0 minus ten doses of 0.1 leaves ~1e-16, not 0, which would
# hide OUT_OF_SUPPLY and show up in alerts. Rounding after every operation snaps the supply back
# to the decimal figure a pharmacist would write down, so the drift never accumulates.
_DECIMALS: Final = 9
# A shortfall smaller than the rounding quantum is float noise, not a real shortage.
_TOLERANCE: Final = 10.0**-_DECIMALS


def _quantity(value: float) -> float:
    """Round to the kept precision, never below 0, and without a -0.0 leaking into output."""
    rounded = round(value, _DECIMALS)
    return rounded if rounded > 0 else 0.0


def _require(condition: bool, message: str) -> None:
    # The contract models already refuse such figures; reaching here means a caller bug, and
    # silently carrying on would corrupt the supply for good (state is kept in a table).
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True, slots=True)
class Supply:
    """One medication's supply, in the drug's own unit (fractions allowed)."""

    dose_quantity: float
    supply_quantity: float
    refills_remaining: int
    threshold_days: int = 7
    # LOW_SUPPLY already raised (or superseded by OUT_OF_SUPPLY) for the current crossing.
    low_alerted: bool = False
    # OUT_OF_SUPPLY already raised since the last refill.
    out_alerted: bool = False
    # NO_REFILLS_REMAINING already raised for the current low crossing.
    no_refills_alerted: bool = False

    def __post_init__(self) -> None:
        _require(
            math.isfinite(self.dose_quantity) and self.dose_quantity > 0,
            f"dose_quantity must be a finite number > 0, not {self.dose_quantity!r}",
        )
        _require(
            math.isfinite(self.supply_quantity) and self.supply_quantity >= 0,
            f"supply_quantity must be a finite number >= 0, not {self.supply_quantity!r}",
        )
        _require(
            self.refills_remaining >= 0,
            f"refills_remaining must be >= 0, not {self.refills_remaining!r}",
        )
        _require(
            self.threshold_days >= 0, f"threshold_days must be >= 0, not {self.threshold_days!r}"
        )


@dataclass(frozen=True, slots=True)
class Assessment:
    """The outcome of assessing a supply: the updated supply and the alerts to raise now."""

    supply: Supply
    """The supply with its alert flags updated; store this one."""
    alerts: tuple[RefillReason, ...]
    """To raise now, in this order: OUT_OF_SUPPLY, LOW_SUPPLY, NO_REFILLS_REMAINING."""
    days_remaining: float | None
    """Days of supply left; None without a schedule."""


def daily_use(dose_quantity: float, doses_per_day: float | None) -> float | None:
    """dose_quantity times doses per day; None without a schedule (doses_per_day None or 0)."""
    if doses_per_day is None or doses_per_day <= 0:
        return None
    # Not rounded: this is a rate, and rounding 6/7 of a dose would skew every days figure.
    return dose_quantity * doses_per_day


def days_of_supply(supply_quantity: float, use_per_day: float | None) -> float | None:
    """supply / daily use; None without a schedule."""
    if use_per_day is None or use_per_day <= 0:
        return None
    # Rounded so that a supply of exactly 7 days at 6/7 doses a day reads 7.0, not 7.000000001
    # or 6.999999999 (which would wrongly cross a 7-day threshold).
    return _quantity(supply_quantity / use_per_day)


def take_dose(supply: Supply, quantity: float | None) -> Supply:
    """Decrement by `quantity` (default: the prescribed dose), never below 0; needs no schedule."""
    taken = supply.dose_quantity if quantity is None else quantity
    _require(math.isfinite(taken) and taken >= 0, f"quantity must be >= 0, not {taken!r}")
    # A dose recorded beyond the supply (a late RefillDispensed, a miscount) cannot make the
    # supply negative: there is nothing less than nothing to take.
    return replace(supply, supply_quantity=_quantity(supply.supply_quantity - taken))


def dispense(supply: Supply, quantity: float, refills_remaining: int | None) -> Supply:
    """Add quantity; refills_remaining becomes the given value, else one fewer (never below 0).

    Re-arms all three alerts: a refill starts a new episode, so if the supply is still low (or
    out) after it, the next assess() raises that alert once more.
    """
    _require(math.isfinite(quantity) and quantity >= 0, f"quantity must be >= 0, not {quantity!r}")
    if refills_remaining is None:
        refills_remaining = max(supply.refills_remaining - 1, 0)
    return replace(
        supply,
        supply_quantity=_quantity(supply.supply_quantity + quantity),
        refills_remaining=refills_remaining,
        low_alerted=False,
        out_alerted=False,
        no_refills_alerted=False,
    )


def prescribe(
    previous: Supply | None,
    dose_quantity: float,
    supply_quantity: float,
    refills_remaining: int,
    threshold_days: int,
) -> Supply:
    """A (re-)prescription sets the figures.

    If a previous Supply exists, its alert flags are kept only while the new figures are still
    in the same condition (e.g. still low), so an alert is not raised twice for one crossing;
    otherwise they are re-armed. OUT_OF_SUPPLY and NO_REFILLS_REMAINING's refill count are
    decided here; whether the supply is still low needs the schedule, so that flag is carried
    over and the next assess() re-arms it if the new figures are no longer low.
    """
    fresh = Supply(
        dose_quantity=_quantity(dose_quantity),
        supply_quantity=_quantity(supply_quantity),
        refills_remaining=refills_remaining,
        threshold_days=threshold_days,
    )
    if previous is None:
        return fresh
    return replace(
        fresh,
        low_alerted=previous.low_alerted,
        out_alerted=previous.out_alerted and _is_out(fresh),
        no_refills_alerted=previous.no_refills_alerted and refills_remaining == 0,
    )


def _is_out(supply: Supply) -> bool:
    return supply.supply_quantity < supply.dose_quantity - _TOLERANCE


def assess(supply: Supply, doses_per_day: float | None) -> Assessment:
    """Which alerts to raise now, and the supply with its alert flags updated.

    - OUT_OF_SUPPLY: the supply cannot cover one dose; raised once until a refill.
    - LOW_SUPPLY: days of supply < threshold_days (needs a schedule); raised once per crossing.
      Out of supply supersedes it: it is not raised while out, and the crossing counts as
      alerted, so it is not raised afterwards for the same crossing either.
    - NO_REFILLS_REMAINING: low (by days, or out) with refills_remaining == 0; once per crossing.
    - Without a schedule only out-of-supply counts as low; days_remaining is None.
    - A flag re-arms when its condition is known to have cleared (a re-prescription raised the
      supply, or refills were added), as well as by dispense().
    """
    days_remaining = days_of_supply(
        supply.supply_quantity, daily_use(supply.dose_quantity, doses_per_day)
    )
    out = _is_out(supply)
    low = out or (days_remaining is not None and days_remaining < supply.threshold_days)
    # Without a schedule, a supply that is not out may or may not be low: keep the flag as it
    # is, or clearing and then setting a schedule would raise LOW_SUPPLY twice for one crossing.
    low_known = out or days_remaining is not None
    no_refills = low and supply.refills_remaining == 0

    alerts: list[RefillReason] = []
    if out and not supply.out_alerted:
        alerts.append(RefillReason.OUT_OF_SUPPLY)
    if low and not out and not supply.low_alerted:
        alerts.append(RefillReason.LOW_SUPPLY)
    if no_refills and not supply.no_refills_alerted:
        alerts.append(RefillReason.NO_REFILLS_REMAINING)

    def flag(condition: bool, known: bool, current: bool) -> bool:
        # Raised (or superseded) while the condition holds; re-armed once it is known to be
        # over; left alone while it cannot be told.
        if condition:
            return True
        return current and not known

    updated = replace(
        supply,
        out_alerted=out,
        low_alerted=flag(low, low_known, supply.low_alerted),
        no_refills_alerted=flag(
            no_refills,
            low_known or supply.refills_remaining > 0,
            supply.no_refills_alerted,
        ),
    )
    return Assessment(supply=updated, alerts=tuple(alerts), days_remaining=days_remaining)
