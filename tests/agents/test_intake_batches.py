"""Agent tests of the intake's batches: what waits together is one batch, and the window's
timer closes a batch whose next record never comes."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

import streams.agents.intake as intake
from streams.app import Medstream
from tests.agents.harness import encoded, event, feeding, prescribed


async def settled(medstream: Medstream, count: int) -> None:
    async with asyncio.timeout(10):
        while medstream.stats.total_settled < count:
            await asyncio.sleep(0.001)


async def test_records_waiting_together_are_handled_as_one_batch(
    medstream: Medstream, writes: Counter[str]
) -> None:
    records = [
        prescribed("e1", "m1", "Metformin"),
        event("DoseTaken", "e2", medication_id="m1"),
        event("DoseTaken", "e3", medication_id="m1"),
    ]
    async with feeding(medstream, "apply-patient-events") as feed:
        feed.topic = "medication-events"
        for record in records:
            await feed.ctx.put(value=encoded(record), key=b"p1", partition=0, wait=False)
        await settled(medstream, 3)
    # One batch: the patient's record was written once for the three events.
    assert writes == {"p1": 1}
    assert len(medstream.patients.store.seen("p1").entries) == 3


async def test_the_window_closes_a_batch_whose_next_record_never_comes(
    medstream: Medstream, writes: Counter[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As after a rebalance emptied the stream's buffer between the look and the read: the
    # intake believes another record waits, and only the window's timer can end the batch.
    monkeypatch.setattr(intake, "_waiting_records", lambda stream: lambda: True)
    async with feeding(medstream, "apply-patient-events") as feed:
        feed.topic = "medication-events"
        await feed.ctx.put(
            value=encoded(prescribed("e1", "m1", "Metformin")), key=b"p1", wait=False
        )
        await settled(medstream, 1)
    assert writes == {"p1": 1}
