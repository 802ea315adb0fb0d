"""Pipeline throughput on one worker: DoseTaken through refill tracking and the notifier."""

from __future__ import annotations

import time
import uuid

from bench.harness import (
    Context,
    EventFactory,
    counting_channel,
    prepare_topics,
    produce_all,
    record_of,
    wait_until,
)
from streams.app import create_app
from streams.worker import running

NAME = "pipeline"


def pipeline_records(events: int, doses_per_patient: int) -> list[tuple[str, bytes, bytes]]:
    """Per patient: contact preferences, a prescription lasting exactly the doses, the doses.

    The last dose of each patient leaves no supply for another: one OUT_OF_SUPPLY RefillAlert,
    which the notifier delivers to the patient's console channel.
    """
    factory = EventFactory(f"e{uuid.uuid4().hex[:6]}")
    patients = max(1, events // (doses_per_patient + 2))
    records = []
    for index in range(patients):
        patient = f"p{index}"
        records.append(record_of(factory.contact(patient)))
        records.append(record_of(factory.prescribed(patient, supply=doses_per_patient)))
    # Doses interleaved across patients, as they would arrive from many apps at once.
    for _ in range(doses_per_patient):
        for index in range(patients):
            records.append(record_of(factory.dose(f"p{index}")))
    return records


def patients_in(records: list[tuple[str, bytes, bytes]]) -> int:
    return sum(1 for topic, _key, _value in records if topic == "patient-events")


async def measure(
    context: Context,
    records: list[tuple[str, bytes, bytes]],
    *,
    benchmark: str = NAME,
    settled: int | None = None,
) -> dict[str, float]:
    """Run the whole input through one in-process worker until ``settled`` events are settled
    (default: one per record) and every patient's alert is delivered; events per second (of
    ``settled``) and timings."""
    settings = context.settings(benchmark)
    await prepare_topics(settings)
    await produce_all(settings, records)
    patients = patients_in(records)
    medstream = create_app(settings)
    channel = counting_channel(medstream)
    stats = medstream.stats
    total = len(records) if settled is None else settled
    async with running(medstream):
        await wait_until(lambda: stats.total_consumed > 0, 60, 0.002)
        started = time.perf_counter()
        # Generous: a slow machine must still give a figure, not a timeout.
        finished = await wait_until(
            lambda: stats.total_settled >= total and channel.delivered >= patients,
            max(300.0, total / 50),
            0.005,
        )
        elapsed = time.perf_counter() - started
        done = stats.total_settled
    if not finished:
        context.note(
            benchmark,
            f"timed out: settled {done}/{total}, delivered {channel.delivered}/{patients}",
        )
    return {
        "events": total,
        "seconds": elapsed,
        # What was settled, not what was sent: a timed-out run must not claim the whole input.
        "eps": min(done, total) / elapsed,
        "share_done": min(done, total) / total,
        "delivered": channel.delivered,
        "patients": patients,
        "dead_lettered": sum(stats.dead_lettered.values()),
    }


async def run(context: Context) -> None:
    sizes = context.sizes
    records = pipeline_records(sizes.pipeline_events, sizes.doses_per_patient)
    result = await measure(context, records)
    ratio = context.ratio(result["eps"])
    context.add(
        NAME,
        "throughput",
        result["eps"],
        "events/s",
        ratio=ratio,
        target=">= 50% of baseline",
        met=None if ratio is None else ratio >= 0.5,
    )
    context.add(NAME, "events", result["events"], "events")
    context.add(NAME, "alerts delivered", result["delivered"], "deliveries")
    context.add(NAME, "dead-lettered", result["dead_lettered"], "events")
    context.note(
        NAME,
        f"{result['patients']} patients x (contact + prescription + "
        f"{sizes.doses_per_patient} DoseTaken), pre-published; timed from the first record "
        "consumed to the last alert delivered to the in-process channel",
    )
