"""Scale-out: medstream's pipeline on 1 and then 2 real `medstream worker` processes."""

from __future__ import annotations

import asyncio
import time

from bench.harness import PARTITIONS, Context, produce_all
from bench.outcomes import OutcomeWatcher
from bench.pipeline import patients_in, pipeline_records
from bench.workers import BenchWorker
from streams.settings import Settings
from streams.topics import NOTIFICATIONS, ensure_topics

NAME = "scale-out"
TARGET = 1.6


async def measure(
    context: Context, records: list[tuple[str, bytes, bytes]], workers: int
) -> dict[str, float]:
    """Events per second from the first input sent to the last NotificationOutcome seen.

    The workers are ready (partitions assigned, tables recovered) before anything is sent: a
    worker joining later would take partitions over mid-run and time its own rebalance.
    """
    settings: Settings = context.settings(f"scale-{workers}w")
    await ensure_topics(settings)
    processes = [
        BenchWorker(settings, settings.data_dir / f"w{index}", settings.data_dir / f"w{index}.log")
        for index in range(workers)
    ]
    watcher = OutcomeWatcher(settings, settings.topic_name(NOTIFICATIONS.base_name))
    patients = patients_in(records)
    try:
        for worker in processes:
            worker.start()
        await asyncio.gather(*(worker.wait_ready(180) for worker in processes))
        await watcher.start()
        started = time.time()
        await produce_all(settings, records)
        # Generous: a slow machine must still give a figure, not a timeout.
        finished = await watcher.wait_for(patients, max(300.0, len(records) / 50))
        for worker in processes:
            if worker.process is not None and worker.process.poll() is not None:
                raise RuntimeError(f"a worker exited: {worker.log_tail()}")
    finally:
        await watcher.stop()
        await asyncio.gather(*(asyncio.to_thread(worker.stop) for worker in processes))
    delivered = len(watcher.notification_ids)
    if not finished:
        context.note(NAME, f"{workers} worker(s): timed out, {delivered}/{patients} outcomes")
    elapsed = watcher.last_seen - started
    return {
        # Each patient's last event runs its supply out: a timed-out run counts only its share.
        "eps": len(records) * delivered / patients / elapsed if elapsed > 0 else 0.0,
        "delivered": delivered,
        "seconds": elapsed,
    }


async def run(context: Context) -> None:
    sizes = context.sizes
    records = pipeline_records(sizes.pipeline_events, sizes.doses_per_patient)
    results = {}
    for workers in (1, 2):
        result = await measure(context, records, workers)
        results[workers] = result["eps"]
        label = "1 worker" if workers == 1 else f"{workers} workers"
        context.add(NAME, label, result["eps"], "events/s", ratio=context.ratio(result["eps"]))
        context.add(NAME, f"{label}: outcomes", result["delivered"], "outcomes")
    speedup = results[2] / results[1] if results[1] else None
    context.add(
        NAME,
        "2 workers / 1 worker",
        speedup,
        "x",
        target=f">= {TARGET} (issue 14)",
        met=None if speedup is None else speedup >= TARGET,
    )
    context.note(
        NAME,
        f"{len(records)} pipeline events on {PARTITIONS} partitions, sent once every worker "
        "(`python -m streams worker`, console channel) was ready; timed from the first record "
        "sent to the last RefillAlert's NotificationOutcome seen by a consumer in the runner",
    )
