"""The one backoff: doubling waits up to a cap, with full jitter when given an rng."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

import pytest

from streams import backoff
from streams.agents import emitter


def first(count: int, waits: Iterator[float]) -> list[float]:
    return list(itertools.islice(waits, count))


def test_without_an_rng_the_waits_double_up_to_the_cap() -> None:
    assert first(8, backoff.delays(0.5, 10.0)) == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_no_wait_exceeds_the_cap_not_even_the_first() -> None:
    assert first(3, backoff.delays(20.0, 10.0)) == [10.0, 10.0, 10.0]
    assert first(3, backoff.delays(0.0, 10.0)) == [0.0, 0.0, 0.0]


def test_with_an_rng_each_wait_is_drawn_below_its_bound() -> None:
    bounds = [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    rng = random.Random(5)
    for _ in range(200):
        for wait, bound in zip(backoff.delays(0.5, 5.0, rng), bounds, strict=False):
            assert 0.0 <= wait <= bound


def test_many_doublings_do_not_overflow() -> None:
    waits = backoff.delays(1.0, float("inf"))
    assert first(3000, waits)[-1] == 2.0**64


def test_the_streams_waits_follow_the_constants_as_they_are_at_the_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert first(6, emitter.waits_before_retrying()) == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]
    monkeypatch.setattr(emitter, "SEND_RETRY_FIRST", 0.01)
    monkeypatch.setattr(emitter, "SEND_RETRY_CAP", 0.03)
    assert first(4, emitter.waits_before_retrying()) == [0.01, 0.02, 0.03, 0.03]
