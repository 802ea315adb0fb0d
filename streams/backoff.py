"""Retry waits: doubling from a first wait up to a cap, with full jitter when given an rng."""

from __future__ import annotations

import random
from collections.abc import Iterator

# Beyond 2**64 times the first wait the cap has long taken over; stopping there avoids float
# overflow.
_MAX_DOUBLINGS = 64


def delays(first: float, cap: float, rng: random.Random | None = None) -> Iterator[float]:
    """Endless waits before each new try: wait i is ``min(cap, first * 2**i)``; with ``rng``,
    full jitter, uniform in [0, that] instead.

    Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter") spreads the retries of
    many failing tries so that they do not hit a recovering receiver all at once.
    """
    doublings = 0
    while True:
        bound = min(cap, first * 2.0**doublings)
        yield bound if rng is None else rng.uniform(0.0, bound)
        doublings = min(doublings + 1, _MAX_DOUBLINGS)
