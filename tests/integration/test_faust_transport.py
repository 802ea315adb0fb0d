"""The rewinding consumer: records Faust fetched and dropped are read again, never lost."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.app import create_app
from streams.faust_transport import tables_recovered
from streams.kafka_client import client_options
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.integration.test_patient_state import Events, publish, values, wait_for
from tests.kafka_helpers import consume, running

pytestmark = pytest.mark.integration


async def end_offsets(settings: Settings, topic: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_options(settings))
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def test_records_dropped_before_the_first_commit_are_read_again(settings: Settings) -> None:
    # Faust drops records it fetched while a partition was paused, a rebalance began or the
    # flow was stopped, then seeks to the committed offset to read them again. Here nothing
    # was ever committed, the situation of a worker killed before its first commit.
    await ensure_topics(settings)
    medstream = create_app(settings)
    app = medstream.app
    events = Events("p-rewind")
    topic = settings.topic_name("medication-events")
    async with running(medstream):
        await wait_for(lambda: tables_recovered(app), 60)
        app.consumer.stop_flow()
        await publish(
            settings,
            "medication-events",
            events.prescribed("m1", "Metformin", supply_quantity=0),
        )
        # The state Faust leaves behind after dropping the record: fetch position past it.
        for partition, end in (await end_offsets(settings, topic)).items():
            await app.consumer.seek(partition, end)
        await app.consumer.perform_seek()
        app.consumer.resume_flow()
        alerts = values(await consume(settings, settings.topic_name("refill-alerts"), 1, 20))
    assert [alert["patient_id"] for alert in alerts] == ["p-rewind"]


async def test_a_flush_returns_once_every_staged_write_is_in_the_changelog(
    settings: Settings,
) -> None:
    # Many writes on every partition, flushed in bulk: when flush returns, each one is in
    # the changelog topic and in the local store, with the offset it reached.
    await ensure_topics(settings)
    medstream = create_app(settings)
    table = medstream.notifier.ledger
    writes = 2500
    async with running(medstream):
        await wait_for(lambda: medstream.restorer.is_ready(), 60)
        before = sum((await end_offsets(settings, table.changelog.name)).values())
        for n in range(writes):
            table.set(f"key-{n}", {"n": n}, n % settings.topic_partitions)
        await table.flush()
        assert not table.has_staged
        after = await end_offsets(settings, table.changelog.name)
        assert sum(after.values()) - before == writes
        for tp, end in after.items():
            position = table.store.position(tp.partition)
            assert position is not None
            assert position.offset == end - 1
        assert table.get("key-2499") == {"n": 2499}
        # Nothing staged since: returns at once.
        async with asyncio.timeout(1):
            await table.flush()
