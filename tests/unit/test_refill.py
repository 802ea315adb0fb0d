"""Unit tests for refill tracking: supply arithmetic and when each refill alert is raised."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.contracts.vocabulary import RefillReason
from streams.domain.refill import (
    Assessment,
    Supply,
    assess,
    daily_use,
    days_of_supply,
    dispense,
    prescribe,
    take_dose,
)

LOW = RefillReason.LOW_SUPPLY
OUT = RefillReason.OUT_OF_SUPPLY
NO_REFILLS = RefillReason.NO_REFILLS_REMAINING


@dataclass
class Medication:
    """Drives a supply through events the way the refill agent does: assess after every one."""

    supply: Supply
    doses_per_day: float | None
    raised: list[tuple[RefillReason, ...]] = field(default_factory=list)

    def _assess(self) -> Assessment:
        assessment = assess(self.supply, self.doses_per_day)
        self.supply = assessment.supply
        self.raised.append(assessment.alerts)
        return assessment

    def start(self) -> tuple[RefillReason, ...]:
        return self._assess().alerts

    def take(self, quantity: float | None = None) -> tuple[RefillReason, ...]:
        self.supply = take_dose(self.supply, quantity)
        return self._assess().alerts

    def refill(self, quantity: float, refills: int | None = None) -> tuple[RefillReason, ...]:
        self.supply = dispense(self.supply, quantity, refills)
        return self._assess().alerts

    def represcribe(
        self, dose: float, supply: float, refills: int, threshold: int = 7
    ) -> tuple[RefillReason, ...]:
        self.supply = prescribe(self.supply, dose, supply, refills, threshold)
        return self._assess().alerts

    def schedule(self, doses_per_day: float | None) -> tuple[RefillReason, ...]:
        self.doses_per_day = doses_per_day
        return self._assess().alerts

    def all_raised(self) -> list[RefillReason]:
        return [reason for alerts in self.raised for reason in alerts]


def medication(
    supply: float,
    *,
    dose: float = 1.0,
    refills: int = 2,
    threshold: int = 7,
    doses_per_day: float | None = 2.0,
) -> Medication:
    return Medication(prescribe(None, dose, supply, refills, threshold), doses_per_day)


# --- daily use and days of supply ------------------------------------------------------------


def test_daily_use_is_dose_times_doses_per_day() -> None:
    assert daily_use(1.0, 2.0) == 2.0
    assert daily_use(2.5, 3.0) == 7.5
    assert daily_use(0.5, 1.0) == 0.5


@pytest.mark.parametrize("doses_per_day", [None, 0, 0.0])
def test_daily_use_is_none_without_a_schedule(doses_per_day: float | None) -> None:
    assert daily_use(1.0, doses_per_day) is None


def test_daily_use_with_days_of_week_schedule() -> None:
    # Twice a day on Mon, Wed and Fri: 6 doses a week.
    doses_per_day = 2 * 3 / 7
    assert daily_use(1.0, doses_per_day) == pytest.approx(6 / 7)
    assert daily_use(0.5, doses_per_day) == pytest.approx(3 / 7)


def test_days_of_supply_is_supply_over_daily_use() -> None:
    assert days_of_supply(28.0, 2.0) == 14.0
    assert days_of_supply(10.0, 7.5) == pytest.approx(4 / 3)
    assert days_of_supply(0.0, 2.0) == 0.0


@pytest.mark.parametrize("use_per_day", [None, 0.0])
def test_days_of_supply_is_none_without_a_schedule(use_per_day: float | None) -> None:
    assert days_of_supply(28.0, use_per_day) is None


def test_days_of_supply_with_days_of_week_schedule_is_exact_at_whole_days() -> None:
    # 6 doses a week, 6 tablets left: exactly 7 days; float division alone gives 7.000000000000001
    # and the exact boundary must neither cross a 7-day threshold nor look odd in an alert.
    use = daily_use(1.0, 2 * 3 / 7)
    assert days_of_supply(6.0, use) == 7.0
    assert days_of_supply(3.0, use) == 3.5
    assert days_of_supply(6.0, daily_use(0.5, 2 * 3 / 7)) == 14.0


def test_exactly_threshold_days_left_is_not_low_but_just_below_is() -> None:
    med = medication(6.0, doses_per_day=2 * 3 / 7, threshold=7)
    assert med.start() == ()
    assert assess(med.supply, med.doses_per_day).days_remaining == 7.0
    assert med.take(0.5) == (LOW,)


# --- take_dose -------------------------------------------------------------------------------


def test_take_dose_defaults_to_the_prescribed_dose() -> None:
    supply = prescribe(None, 2.0, 10.0, 1, 7)
    assert take_dose(supply, None).supply_quantity == 8.0
    assert take_dose(supply, 3.0).supply_quantity == 7.0


def test_take_dose_never_goes_below_zero() -> None:
    supply = prescribe(None, 2.0, 1.0, 1, 7)
    emptied = take_dose(supply, None)
    assert emptied.supply_quantity == 0.0
    assert take_dose(emptied, None).supply_quantity == 0.0


def test_take_dose_keeps_everything_but_the_supply() -> None:
    supply = Supply(1.0, 10.0, 3, 5, low_alerted=True, out_alerted=False, no_refills_alerted=True)
    assert take_dose(supply, None) == replace(supply, supply_quantity=9.0)


def test_take_dose_refuses_a_negative_quantity() -> None:
    with pytest.raises(ValueError, match="quantity"):
        take_dose(prescribe(None, 1.0, 10.0, 1, 7), -1.0)


def test_zero_supply_is_reported_as_plain_zero() -> None:
    # round() of a tiny negative remainder gives -0.0, which would serialise as "-0.0".
    supply = take_dose(prescribe(None, 0.1, 0.3, 1, 7), 0.30000000000000004)
    assert supply.supply_quantity == 0.0
    assert str(supply.supply_quantity) == "0.0"


# --- fractional doses ------------------------------------------------------------------------


def test_ten_doses_of_a_tenth_empty_a_supply_of_one_exactly() -> None:
    med = medication(1.0, dose=0.1, doses_per_day=None, refills=1)
    assert med.start() == ()
    for _ in range(9):
        assert med.take() == ()
    assert med.take() == (OUT,)
    assert med.supply.supply_quantity == 0.0


def test_fractional_supply_that_covers_one_dose_exactly_is_not_out() -> None:
    # Unrounded, 0.3 - 0.1 - 0.1 is 0.09999999999999998: less than a dose, a false alarm.
    med = medication(0.3, dose=0.1, doses_per_day=None)
    med.start()
    med.take()
    assert med.take() == ()
    assert med.supply.supply_quantity == 0.1
    assert med.take() == (OUT,)


@pytest.mark.parametrize(
    ("dose", "supply", "doses"),
    [(0.5, 3.0, 6), (2.5, 10.0, 4), (0.1, 1.0, 10), (0.25, 1.75, 7), (1.2, 6.0, 5)],
)
def test_fractional_doses_empty_the_supply_after_exactly_the_expected_count(
    dose: float, supply: float, doses: int
) -> None:
    med = medication(supply, dose=dose, doses_per_day=None)
    assert med.start() == ()
    alerts = [med.take() for _ in range(doses)]
    assert alerts == [()] * (doses - 1) + [(OUT,)]
    assert med.supply.supply_quantity == 0.0


def test_fractional_dispense_and_days() -> None:
    # 2.5 ml three times a day: 7.5 ml a day, threshold 7 days = 52.5 ml.
    med = medication(60.0, dose=2.5, doses_per_day=3.0, threshold=7)
    assert med.start() == ()
    assert med.take() == ()  # 57.5 ml
    assert med.take() == ()  # 55.0 ml
    assert med.take() == ()  # 52.5 ml: exactly 7 days, not below
    assert assess(med.supply, 3.0).days_remaining == 7.0
    assert med.take() == (LOW,)  # 50.0 ml
    assert med.refill(12.5) == ()  # 62.5 ml
    assert med.supply.supply_quantity == 62.5


# --- the whole sequence ----------------------------------------------------------------------


def test_falling_supply_raises_low_once_then_out_once_then_low_again_after_a_refill() -> None:
    # One tablet twice a day, 7-day threshold: low below 14 tablets.
    med = medication(20.0, refills=2)
    assert med.start() == ()
    alerts_by_supply: dict[float, list[tuple[RefillReason, ...]]] = {}
    for _ in range(25):
        alerts = med.take()
        alerts_by_supply.setdefault(med.supply.supply_quantity, []).append(alerts)
    assert med.supply.supply_quantity == 0.0
    assert alerts_by_supply[13.0] == [(LOW,)]
    # The supply runs out when it can no longer cover a dose, at 0 here; further doses recorded
    # at 0 raise nothing more.
    assert alerts_by_supply[0.0] == [(OUT,)] + [()] * 5
    assert med.all_raised() == [LOW, OUT]

    assert med.refill(30.0) == ()  # 15 days
    assert med.supply.refills_remaining == 1
    for _ in range(16):
        assert med.take() == ()  # 29 down to 14 tablets (7 days, not below the threshold)
    assert med.supply.supply_quantity == 14.0
    assert med.take() == (LOW,)  # 13 tablets: a new crossing after the refill
    assert med.take() == ()
    assert med.all_raised() == [LOW, OUT, LOW]


def test_a_dose_that_empties_a_plentiful_supply_raises_out_not_low_and_low_stays_quiet() -> None:
    med = medication(20.0, refills=1)
    assert med.start() == ()
    assert med.take(20.0) == (OUT,)
    assert med.supply.low_alerted
    # Re-prescription with a tiny supply that is low but no longer out: same crossing, no LOW.
    assert med.represcribe(1.0, 3.0, 1) == ()
    assert med.take() == ()
    assert med.all_raised() == [OUT]


def test_partial_refill_still_below_threshold_raises_low_once_more() -> None:
    med = medication(10.0, refills=3)
    assert med.start() == (LOW,)  # 5 days
    assert med.take() == ()
    assert med.refill(2.0) == (LOW,)  # 11 tablets, 5.5 days: still low, re-armed by the refill
    assert med.supply.refills_remaining == 2
    assert med.take() == ()
    assert med.take() == ()
    assert med.all_raised() == [LOW, LOW]


def test_refill_that_leaves_the_supply_out_raises_out_again_once() -> None:
    med = medication(1.0, dose=2.0, refills=3)
    assert med.start() == (OUT,)
    assert med.refill(0.5) == (OUT,)  # 1.5: still cannot cover a dose of 2
    assert med.take() == ()
    assert med.supply.supply_quantity == 0.0
    assert med.refill(3.0) == (LOW,)  # 3.0: covers a dose, still well below 7 days
    assert med.all_raised() == [OUT, OUT, LOW]


def test_refill_above_threshold_raises_nothing() -> None:
    med = medication(10.0)
    assert med.start() == (LOW,)
    assert med.refill(60.0) == ()
    assert not med.supply.low_alerted
    assert not med.supply.out_alerted
    assert not med.supply.no_refills_alerted


def test_assess_twice_raises_nothing_the_second_time() -> None:
    supply = prescribe(None, 1.0, 0.0, 0, 7)
    first = assess(supply, 2.0)
    assert first.alerts == (OUT, NO_REFILLS)
    again = assess(first.supply, 2.0)
    assert again.alerts == ()
    assert again.supply == first.supply


# --- dispense --------------------------------------------------------------------------------


def test_dispense_adds_the_quantity_and_uses_the_given_refill_count() -> None:
    supply = prescribe(None, 1.0, 3.0, 5, 7)
    refilled = dispense(supply, 30.0, 2)
    assert refilled.supply_quantity == 33.0
    assert refilled.refills_remaining == 2


def test_dispense_without_a_refill_count_uses_one_refill_but_never_below_zero() -> None:
    supply = prescribe(None, 1.0, 3.0, 1, 7)
    once = dispense(supply, 30.0, None)
    assert once.refills_remaining == 0
    assert dispense(once, 30.0, None).refills_remaining == 0


def test_dispense_re_arms_all_three_alerts() -> None:
    supply = Supply(1.0, 0.0, 0, low_alerted=True, out_alerted=True, no_refills_alerted=True)
    refilled = dispense(supply, 0.5, 0)
    assert (refilled.low_alerted, refilled.out_alerted, refilled.no_refills_alerted) == (
        False,
        False,
        False,
    )
    assert refilled.supply_quantity == 0.5


def test_dispense_of_fractions_stays_exact() -> None:
    supply = prescribe(None, 0.1, 0.0, 5, 7)
    for _ in range(3):
        supply = dispense(supply, 0.1, None)
    assert supply.supply_quantity == 0.3
    assert supply.refills_remaining == 2


# --- no schedule -----------------------------------------------------------------------------


def test_without_a_schedule_doses_still_count_and_out_of_supply_still_fires() -> None:
    med = medication(3.0, doses_per_day=None, refills=1)
    assert med.start() == ()
    assert med.take() == ()
    assert med.take() == ()
    assessment = assess(med.supply, None)
    assert assessment.days_remaining is None
    assert assessment.alerts == ()  # 1 tablet left would be low on a schedule; unknown here
    assert med.take() == (OUT,)
    assert med.supply.supply_quantity == 0.0
    assert med.take() == ()


def test_without_a_schedule_and_no_refills_out_brings_no_refills_remaining() -> None:
    med = medication(1.0, doses_per_day=None, refills=0)
    assert med.start() == ()
    assert med.take() == (OUT, NO_REFILLS)
    assert med.take() == ()


def test_clearing_and_setting_the_schedule_does_not_re_raise_low() -> None:
    med = medication(10.0)
    assert med.start() == (LOW,)
    assert med.schedule(None) == ()
    assert med.schedule(2.0) == ()
    assert med.take() == ()
    assert med.all_raised() == [LOW]


def test_a_schedule_set_on_a_low_supply_raises_low() -> None:
    med = medication(10.0, doses_per_day=None)
    assert med.start() == ()
    assert med.schedule(2.0) == (LOW,)


def test_a_schedule_change_that_clears_low_re_arms_it() -> None:
    med = medication(10.0, doses_per_day=2.0)
    assert med.start() == (LOW,)  # 5 days
    assert med.schedule(1.0) == ()  # 10 days: no longer low
    assert not med.supply.low_alerted
    assert med.take() == ()  # 9 days
    assert med.take() == ()  # 8 days
    assert med.take() == ()  # 7 days
    assert med.take() == (LOW,)  # 6 days: a new crossing


# --- no refills remaining --------------------------------------------------------------------


def test_no_refills_remaining_comes_with_low_supply() -> None:
    med = medication(15.0, refills=0)
    assert med.start() == ()
    assert med.take() == ()  # 14 tablets: 7 days
    assert med.take() == (LOW, NO_REFILLS)
    for _ in range(12):
        assert med.take() == ()
    assert med.take() == (OUT,)
    assert med.all_raised() == [LOW, NO_REFILLS, OUT]


def test_no_refills_remaining_is_not_raised_while_refills_are_left() -> None:
    med = medication(15.0, refills=1)
    med.start()
    med.take()
    assert med.take() == (LOW,)
    assert NO_REFILLS not in med.all_raised()


def test_no_refills_remaining_is_not_raised_while_supply_is_not_low() -> None:
    med = medication(100.0, refills=0)
    assert med.start() == ()
    assert med.take() == ()


def test_last_refill_that_leaves_supply_low_raises_low_and_no_refills() -> None:
    med = medication(10.0, refills=1)
    assert med.start() == (LOW,)
    assert med.refill(2.0) == (LOW, NO_REFILLS)
    assert med.supply.refills_remaining == 0
    assert med.take() == ()


def test_out_and_no_refills_in_order_without_low() -> None:
    med = medication(20.0, refills=0)
    assert med.start() == ()
    assert med.take(19.5) == (OUT, NO_REFILLS)
    assert med.take() == ()


def test_new_prescription_with_refills_re_arms_no_refills_remaining() -> None:
    med = medication(10.0, refills=0)
    assert med.start() == (LOW, NO_REFILLS)
    assert med.represcribe(1.0, 10.0, 2) == ()  # still low: no LOW; refills now left
    assert not med.supply.no_refills_alerted
    assert med.represcribe(1.0, 9.0, 0) == (NO_REFILLS,)  # no refills again: new news


# --- threshold 0 -----------------------------------------------------------------------------


def test_threshold_zero_is_never_low() -> None:
    med = medication(3.0, threshold=0, refills=0)
    assert med.start() == ()
    assert med.take() == ()
    assert med.take() == ()
    assert assess(med.supply, 2.0).days_remaining == 0.5
    assert med.take() == (OUT, NO_REFILLS)
    assert LOW not in med.all_raised()


# --- re-prescription -------------------------------------------------------------------------


def test_prescribe_without_a_previous_supply_starts_armed() -> None:
    supply = prescribe(None, 0.5, 30.0, 3, 10)
    assert supply == Supply(0.5, 30.0, 3, 10)


def test_prescribe_rounds_the_figures() -> None:
    supply = prescribe(None, 0.1 + 0.2, 0.1 * 3, 0, 7)
    assert supply.dose_quantity == 0.3
    assert supply.supply_quantity == 0.3


def test_re_prescription_that_keeps_the_supply_low_does_not_re_raise() -> None:
    med = medication(10.0, refills=2)
    assert med.start() == (LOW,)
    assert med.represcribe(1.0, 12.0, 2) == ()  # 6 days: still the same low crossing
    assert med.represcribe(1.0, 12.0, 2, threshold=10) == ()
    assert med.take() == ()
    assert med.all_raised() == [LOW]


def test_re_prescription_that_keeps_the_supply_out_does_not_re_raise() -> None:
    med = medication(0.0, refills=0)
    assert med.start() == (OUT, NO_REFILLS)
    assert med.represcribe(1.0, 0.5, 0) == ()
    assert med.supply.out_alerted
    assert med.all_raised() == [OUT, NO_REFILLS]


def test_re_prescription_above_threshold_re_arms_low() -> None:
    med = medication(10.0)
    assert med.start() == (LOW,)
    assert med.represcribe(1.0, 15.0, 2) == ()  # 7.5 days: the crossing is over
    assert not med.supply.low_alerted
    assert med.take() == ()  # 14 tablets: 7 days
    assert med.take() == (LOW,)  # a new crossing


def test_re_prescription_with_a_higher_threshold_raises_low() -> None:
    med = medication(20.0, threshold=7)
    assert med.start() == ()
    assert med.represcribe(1.0, 20.0, 2, threshold=14) == (LOW,)


def test_re_prescription_with_a_larger_dose_can_run_the_supply_out() -> None:
    med = medication(1.5, dose=1.0, refills=2, threshold=0)
    assert med.start() == ()
    assert med.represcribe(2.0, 1.5, 2, threshold=0) == (OUT,)
    # A smaller dose again: the supply covers it, so OUT_OF_SUPPLY re-arms by itself.
    assert med.represcribe(1.0, 1.5, 2, threshold=0) == ()
    assert not med.supply.out_alerted
    assert med.take() == (OUT,)


def test_prescribe_keeps_out_alerted_only_while_still_out() -> None:
    alerted = Supply(1.0, 0.0, 0, low_alerted=True, out_alerted=True, no_refills_alerted=True)
    still_out = prescribe(alerted, 1.0, 0.5, 0, 7)
    assert (still_out.out_alerted, still_out.low_alerted, still_out.no_refills_alerted) == (
        True,
        True,
        True,
    )
    covered = prescribe(alerted, 1.0, 5.0, 1, 7)
    assert not covered.out_alerted
    assert not covered.no_refills_alerted


def test_assess_re_arms_each_flag_once_its_condition_is_known_to_be_over() -> None:
    # A Supply stored with stale flags (say, written before a re-prescription changed figures).
    stale = Supply(1.0, 40.0, 2, low_alerted=True, out_alerted=True, no_refills_alerted=True)
    cleared = assess(stale, 2.0)
    assert cleared.alerts == ()
    assert not cleared.supply.out_alerted
    assert not cleared.supply.low_alerted
    assert not cleared.supply.no_refills_alerted


def test_assess_without_a_schedule_keeps_the_low_flags_it_cannot_decide() -> None:
    stale = Supply(1.0, 40.0, 0, low_alerted=True, out_alerted=True, no_refills_alerted=True)
    unknown = assess(stale, None)
    assert unknown.alerts == ()
    assert not unknown.supply.out_alerted  # 40 tablets cover a dose: that much is known
    assert unknown.supply.low_alerted
    assert unknown.supply.no_refills_alerted


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dose_quantity": 0.0},
        {"dose_quantity": -1.0},
        {"dose_quantity": float("nan")},
        {"supply_quantity": -0.5},
        {"supply_quantity": float("inf")},
        {"refills_remaining": -1},
        {"threshold_days": -1},
    ],
)
def test_supply_refuses_impossible_figures(kwargs: dict[str, float]) -> None:
    figures: dict[str, float] = {
        "dose_quantity": 1.0,
        "supply_quantity": 10.0,
        "refills_remaining": 1,
        "threshold_days": 7,
    }
    figures.update(kwargs)
    with pytest.raises(ValueError, match="must be"):
        Supply(
            dose_quantity=figures["dose_quantity"],
            supply_quantity=figures["supply_quantity"],
            refills_remaining=int(figures["refills_remaining"]),
            threshold_days=int(figures["threshold_days"]),
        )


def test_dispense_refuses_a_negative_quantity() -> None:
    with pytest.raises(ValueError, match="quantity"):
        dispense(prescribe(None, 1.0, 10.0, 1, 7), -1.0, None)


# --- properties ------------------------------------------------------------------------------

# Quantities as a pharmacy writes them: at most two decimals.
hundredths = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("20"), places=2)
take_op = st.tuples(st.just("take"), st.none() | hundredths, st.none())
assess_op = st.tuples(st.just("assess"), st.none(), st.none())
dispense_op = st.tuples(st.just("dispense"), hundredths, st.none() | st.integers(0, 3))
# Doses per day as schedules produce them: times per day x days a week / 7.
schedules = st.none() | st.builds(
    lambda times, days: Fraction(times * days, 7), st.integers(1, 4), st.integers(1, 7)
)


@settings(max_examples=400, deadline=None)
@given(
    dose=hundredths,
    initial=st.decimals(min_value=Decimal(0), max_value=Decimal(60), places=2),
    refills=st.integers(0, 3),
    threshold=st.integers(0, 14),
    doses_per_day=schedules,
    ops=st.lists(st.one_of(take_op, take_op, take_op, dispense_op), max_size=60),
)
def test_each_alert_fires_exactly_at_the_first_crossing_between_two_dispenses(
    dose: Decimal,
    initial: Decimal,
    refills: int,
    threshold: int,
    doses_per_day: Fraction | None,
    ops: list[tuple[str, Decimal | None, int | None]],
) -> None:
    rate = None if doses_per_day is None else float(doses_per_day)
    supply = prescribe(None, float(dose), float(initial), refills, threshold)
    # The same story told in exact decimal arithmetic.
    exact = initial
    exact_refills = refills
    seen_low = seen_out = False  # since the last dispense
    fired: list[RefillReason] = []  # since the last dispense

    for step, op in enumerate([("start", None, None), *ops]):
        if op[0] == "take":
            taken = dose if op[1] is None else op[1]
            supply = take_dose(supply, None if op[1] is None else float(op[1]))
            exact = max(exact - taken, Decimal(0))
        elif op[0] == "dispense":
            quantity, given_refills = op[1], op[2]
            assert quantity is not None
            supply = dispense(supply, float(quantity), given_refills)
            exact += quantity
            exact_refills = max(exact_refills - 1, 0) if given_refills is None else given_refills
            seen_low = seen_out = False
            fired = []

        assessment = assess(supply, rate)
        supply = assessment.supply

        # The float supply is exactly the decimal one, and never negative.
        assert supply.supply_quantity == float(exact), step
        assert supply.supply_quantity >= 0
        assert supply.refills_remaining == exact_refills

        out = exact < dose
        by_days = (
            doses_per_day is not None
            and Fraction(exact) / (Fraction(dose) * doses_per_day) < threshold
        )
        low = out or by_days
        expected: list[RefillReason] = []
        if out and not seen_out:
            expected.append(OUT)
        if by_days and not out and not seen_low:
            expected.append(LOW)
        if low and exact_refills == 0 and not seen_low:
            expected.append(NO_REFILLS)
        assert list(assessment.alerts) == expected, (step, op, exact)
        seen_out = seen_out or out
        seen_low = seen_low or low

        # At most once each between two dispenses.
        fired.extend(assessment.alerts)
        assert all(fired.count(reason) <= 1 for reason in RefillReason), fired

        if doses_per_day is None:
            assert assessment.days_remaining is None
        else:
            assert assessment.days_remaining == pytest.approx(
                float(Fraction(exact) / (Fraction(dose) * doses_per_day)), abs=1e-9
            )


@settings(max_examples=200, deadline=None)
@given(
    dose=hundredths,
    initial=st.decimals(min_value=Decimal(0), max_value=Decimal(60), places=2),
    refills=st.integers(0, 3),
    threshold=st.integers(0, 14),
    doses_per_day=schedules,
    ops=st.lists(st.one_of(take_op, dispense_op, assess_op), max_size=40),
)
def test_assessing_again_without_a_change_never_raises(
    dose: Decimal,
    initial: Decimal,
    refills: int,
    threshold: int,
    doses_per_day: Fraction | None,
    ops: list[tuple[str, Decimal | None, int | None]],
) -> None:
    rate = None if doses_per_day is None else float(doses_per_day)
    supply = prescribe(None, float(dose), float(initial), refills, threshold)
    for op in ops:
        if op[0] == "take":
            supply = take_dose(supply, None if op[1] is None else float(op[1]))
        elif op[0] == "dispense":
            assert op[1] is not None
            supply = dispense(supply, float(op[1]), op[2])
        supply = assess(supply, rate).supply
        again = assess(supply, rate)
        assert again.alerts == ()
        assert again.supply == supply
