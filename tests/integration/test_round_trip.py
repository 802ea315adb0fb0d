"""A record goes through the real broker, a Faust agent of the app, and out to another topic."""

from __future__ import annotations

import json

import pytest

from streams.app import create_app
from streams.settings import Settings
from streams.topics import ensure_topics, topic_names
from tests.kafka_helpers import consume, produce, running

pytestmark = pytest.mark.integration


async def test_topics_are_created_with_the_configured_partitions(settings: Settings) -> None:
    created = await ensure_topics(settings)
    assert sorted(created) == sorted(topic_names(settings))
    assert await ensure_topics(settings) == []  # a second call changes nothing


async def test_a_record_flows_through_an_agent_to_an_output_topic(settings: Settings) -> None:
    await ensure_topics(settings)
    medstream = create_app(settings)
    topics = medstream.topics

    # An agent of the real app (its factory, its topics, the broker it is configured for)
    # that forwards what it reads; the domain agents of later modules have the same shape.
    @medstream.app.agent(topics.medication_events_topic)
    async def forward(stream):  # type: ignore[no-untyped-def]
        async for event in stream.events():
            await topics.audit_log_topic.send(key=event.key, value=event.value.upper())

    sent = [
        (f"patient-{n}".encode(), json.dumps({"event_id": f"e{n}"}).encode()) for n in range(10)
    ]
    async with running(medstream):
        await produce(settings, settings.topic_name("medication-events"), sent)
        received = await consume(settings, settings.topic_name("audit-log"), count=10)

    assert sorted((r.key, r.value) for r in received) == sorted(
        (key, value.upper()) for key, value in sent
    )
