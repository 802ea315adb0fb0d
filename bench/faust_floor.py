"""The Faust floor: a bare Faust agent on the same messages, without and with two table writes."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import faust

from bench.harness import Context, prepare_topics, produce_all, wait_until
from bench.pipeline import pipeline_records
from streams.settings import Settings
from streams.topics import INPUT_TOPICS, topic_names
from streams.worker import running

NAME = "faust-floor"


@dataclass
class _Bare:
    app: faust.App


async def bare_faust(
    context: Context, settings: Settings, records: list[tuple[str, bytes, bytes]], tables: bool
) -> float:
    """Events per second of a Faust agent that decodes JSON and, with ``tables``, reads and
    writes two RocksDB tables per event (as medstream's state and de-duplication tables do)."""
    await prepare_topics(settings)
    await produce_all(settings, records)
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.bootstrap_servers}",
        store="rocksdb://",
        datadir=str(settings.data_dir),
        topic_partitions=settings.topic_partitions,
        web_enabled=False,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        autodiscover=False,
    )
    topic = app.topic(
        *topic_names(settings, INPUT_TOPICS),
        key_type=bytes,
        value_type=bytes,
        partitions=settings.topic_partitions,
    )
    state = app.Table("state", default=None, partitions=settings.topic_partitions)
    seen = app.Table("seen", default=None, partitions=settings.topic_partitions)
    count = [0]

    @app.agent(topic, name="bare")
    async def bare(stream: faust.StreamT[Any]) -> None:
        async for event in stream.events():
            value = json.loads(event.message.value)
            if tables:
                key = value["patient_id"]
                current = state.get(key) or {}
                ids = seen.get(key) or {}
                state[key] = {**current, "events": current.get("events", 0) + 1}
                seen[key] = {**ids, value["event_id"]: 1}
            count[0] += 1

    async with running(_Bare(app)):  # type: ignore[arg-type]
        await wait_until(lambda: count[0] > 0, 60, 0.002)
        started = time.perf_counter()
        await wait_until(lambda: count[0] >= len(records), 300, 0.005)
        elapsed = time.perf_counter() - started
    return count[0] / elapsed


async def run(context: Context) -> None:
    sizes = context.sizes
    records = pipeline_records(sizes.pipeline_events, sizes.doses_per_patient)
    plain = await bare_faust(context, context.settings("floor"), records, tables=False)
    with_tables = await bare_faust(context, context.settings("floor-tables"), records, True)
    context.add(NAME, "bare agent, JSON decode only", plain, "events/s", ratio=context.ratio(plain))
    context.add(
        NAME,
        "bare agent + 2 table reads and writes",
        with_tables,
        "events/s",
        ratio=context.ratio(with_tables),
    )
    context.note(
        NAME,
        "what Faust itself allows one worker on the pipeline's messages: the ceiling for "
        "medstream's pipeline figure, measured beside it",
    )
