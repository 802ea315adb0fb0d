"""The contract's topics are created on the real broker with the configured partitions."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from streams.kafka_client import client_options
from streams.settings import Settings
from streams.topics import EVERY_TOPIC, ensure_topics, topic_names

pytestmark = pytest.mark.integration


async def test_topics_are_created_with_the_configured_partitions(settings: Settings) -> None:
    created = await ensure_topics(settings)
    assert sorted(created) == sorted(topic_names(settings, EVERY_TOPIC))
    assert await ensure_topics(settings) == []  # a second call changes nothing
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        described = await admin.describe_topics(topic_names(settings, EVERY_TOPIC))
    finally:
        await admin.close()
    assert {t["topic"]: len(t["partitions"]) for t in described} == {
        settings.topic_name(spec.base_name): spec.partition_count(settings) for spec in EVERY_TOPIC
    }
