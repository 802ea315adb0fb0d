"""The worker's admin endpoints on the real app and broker: token, pause, resume, replay, audit."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from pydantic import SecretStr

from streams.app import create_app
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.integration.test_pause import settle
from tests.integration.test_web import free_port, prescribed, wait_for
from tests.kafka_helpers import consume, produce, running

pytestmark = pytest.mark.integration

TOKEN = "admin-token-for-tests-0123456789abcdef"  # 32+ characters, as Settings demands


async def test_admin_pause_resume_and_replay_need_the_token_and_are_audited(
    settings: Settings,
) -> None:
    port = free_port()
    settings = settings.model_copy(
        update={"web_enabled": True, "web_port": port, "admin_token": SecretStr(TOKEN)}
    )
    await ensure_topics(settings)
    medstream = create_app(settings)
    stats = medstream.stats
    base = f"http://127.0.0.1:{port}/admin"
    allowed = {"Authorization": f"Bearer {TOKEN}", "X-Medstream-Actor": "ops-alice"}
    topic = settings.topic_name("medication-events")
    async with running(medstream), aiohttp.ClientSession() as http:

        async def ready() -> bool:
            async with http.get(f"http://127.0.0.1:{port}/ready") as response:
                return response.status == 200

        await wait_for(ready)
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            async with http.post(f"{base}/pause", json={"topics": ["x"]}, headers=headers) as r:
                assert r.status == 401
        async with http.post(f"{base}/pause", json={"topics": ["nope"]}, headers=allowed) as r:
            assert r.status == 400
            assert "no agent consumes 'nope'" in (await r.json())["error"]

        async with http.post(
            f"{base}/pause", json={"topics": ["medication-events"]}, headers=allowed
        ) as r:
            assert r.status == 200, await r.text()
            assert await r.json() == {"paused": ["medication-events"]}
        await asyncio.sleep(2)
        event = prescribed("p-admin")
        await produce(settings, topic, [(b"p-admin", json.dumps(event).encode())])
        await asyncio.sleep(3)
        assert stats.total_settled == 0, "processed while paused"

        async with http.post(
            f"{base}/resume", json={"agents": "apply-patient-events"}, headers=allowed
        ) as r:
            assert r.status == 200, await r.text()
        await settle(lambda: stats.total_settled == 1)

        async with http.post(f"{base}/replay", json={"topic": "medication-events"}) as r:
            assert r.status == 401
        async with http.post(
            f"{base}/replay", json={"topic": "medication-events"}, headers=allowed
        ) as r:
            assert r.status == 400
            assert "--since or --from-offset" in (await r.json())["error"]
        async with http.post(
            f"{base}/replay",
            json={"topic": "medication-events", "from_offset": 0, "dry_run": True},
            headers=allowed,
        ) as r:
            assert await r.json() == {"dry_run": True, "records": {topic: 1}}
        async with http.post(
            f"{base}/replay", json={"topic": "medication-events", "from_offset": 0}, headers=allowed
        ) as r:
            assert r.status == 200, await r.text()
            assert await r.json() == {"dry_run": False, "records": {topic: 1}}
        # The replayed event is recognised by its event_id: nothing happens twice.
        await settle(lambda: stats.total_settled == 2)
        assert sum(stats.duplicates.values()) == 1

    records = await consume(settings, settings.topic_name("audit-log"), 5, 5)
    # Keyed by target, so spread over partitions: their order is the time of the action.
    audit = sorted((json.loads(r.value) for r in records), key=lambda a: a["occurred_at"])
    assert [(a["actor"], a["action"], a["target"]) for a in audit] == [
        ("ops-alice", "pause", "topic:medication-events"),
        ("ops-alice", "resume", "topic:medication-events"),
        ("ops-alice", "resume", "topic:schedule-events"),
        ("ops-alice", "resume", "topic:patient-events"),
        ("ops-alice", "replay", "topic:medication-events"),
    ]
    assert audit[-1]["parameters"] == {"topic": "medication-events", "from_offset": "0"}
    assert audit[-1]["outcome"] == "ok"


async def test_without_a_token_the_admin_endpoints_are_off(settings: Settings) -> None:
    port = free_port()
    settings = settings.model_copy(update={"web_enabled": True, "web_port": port})
    await ensure_topics(settings)
    medstream = create_app(settings)
    async with running(medstream), aiohttp.ClientSession() as http:
        for action in ("pause", "resume", "replay"):
            async with http.post(
                f"http://127.0.0.1:{port}/admin/{action}",
                json={"topics": ["medication-events"]},
                headers={"Authorization": "Bearer anything"},
            ) as r:
                assert r.status in (404, 405)
