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


# A value no error message may repeat: bodies can carry patient data.
MARKER = "p-4471-marker"


async def test_bad_bodies_get_400_a_large_one_413_and_a_bad_token_401(
    settings: Settings,
) -> None:
    port = free_port()
    settings = settings.model_copy(
        update={"web_enabled": True, "web_port": port, "admin_token": SecretStr(TOKEN)}
    )
    await ensure_topics(settings)
    medstream = create_app(settings)
    base = f"http://127.0.0.1:{port}/admin"
    allowed = {"Authorization": f"Bearer {TOKEN}"}
    replay = {"topic": "medication-events", "from_offset": 0}
    # Each body with a word its error must contain; none of them reaches the broker.
    replay_bodies: list[tuple[bytes, str]] = [
        (b"{not json", "not valid JSON"),
        (b"", "replay needs --topic"),  # an empty body is the empty object
        (b"[1, 2]", "not a JSON object"),
        (b'"medication-events"', "not a JSON object"),
        (b"null", "not a JSON object"),
        (json.dumps({**replay, "topic": 5}).encode(), "topic"),
        (json.dumps({**replay, "topic": [MARKER]}).encode(), "topic"),
        (json.dumps({**replay, "dry_run": "false"}).encode(), "dry_run"),
        (json.dumps({**replay, "dry_run": 0}).encode(), "dry_run"),
        (json.dumps({**replay, "from_offset": "abc"}).encode(), "from_offset"),
        (json.dumps({**replay, "from_offset": "5"}).encode(), "from_offset"),
        (json.dumps({**replay, "from_offset": 1.5}).encode(), "from_offset"),
        (json.dumps({**replay, "from_offset": -1}).encode(), "from_offset"),
        (json.dumps({**replay, "partition": -1}).encode(), "partition"),
        (json.dumps({**replay, "since": MARKER}).encode(), "since"),
        (json.dumps({**replay, "topic": ""}).encode(), "topic"),
        (json.dumps({**replay, "drop": MARKER}).encode(), "drop: unknown field"),
        (json.dumps({**replay, MARKER + " x": 1}).encode(), "unknown field"),
        (json.dumps({"topic": "medication-events"}).encode(), "either --since or --from-offset"),
        (
            json.dumps({**replay, "since": "2026-01-01T00:00:00Z"}).encode(),
            "either --since or --from-offset",
        ),
        (json.dumps({**replay, "to_offset": 0, "from_offset": 3}).encode(), "before"),
        (json.dumps({"dead_letters": True, "from_offset": 0}).encode(), "--dead-letters"),
        (json.dumps({**replay, "reason": "x"}).encode(), "--reason"),
        (json.dumps({**replay, "topic": "medstream-control"}).encode(), "only input topics"),
        (json.dumps({**replay, "topic": "audit-log"}).encode(), "only input topics"),
        (json.dumps({**replay, "topic": "interaction-warnings"}).encode(), "only input topics"),
        (json.dumps({**replay, "topic": topic_changelog(settings)}).encode(), "only input"),
    ]
    pause_bodies: list[tuple[bytes, str]] = [
        (b"{", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (json.dumps({"topics": 5}).encode(), "topics"),
        (json.dumps({"topics": [5]}).encode(), "topics"),
        (json.dumps({"agents": {"a": 1}}).encode(), "agents"),
        (json.dumps({"topics": ["medication-events"], "all": True}).encode(), "unknown field"),
        (json.dumps({"topics": [MARKER]}).encode(), "no agent consumes"),
        (json.dumps({}).encode(), "name at least one"),
    ]
    json_type = {"Content-Type": "application/json"}
    async with running(medstream), aiohttp.ClientSession() as http:
        for body, expected in replay_bodies:
            async with http.post(
                f"{base}/replay", data=body, headers={**allowed, **json_type}
            ) as r:
                error = (await r.json())["error"]
                assert r.status == 400, (body, error)
                assert expected in error, (body, error)
                assert MARKER not in error, (body, error)
        for action in ("pause", "resume"):
            for body, expected in pause_bodies:
                async with http.post(
                    f"{base}/{action}", data=body, headers={**allowed, **json_type}
                ) as r:
                    error = (await r.json())["error"]
                    assert r.status == 400, (action, body, error)
                    assert expected in error, (action, body, error)

        # Larger than 64 KiB: refused before it is parsed, for every endpoint.
        oversized = json.dumps({**replay, "reason": "x" * (70 * 1024)}).encode()
        for action in ("pause", "resume", "replay"):
            async with http.post(
                f"{base}/{action}", data=oversized, headers={**allowed, **json_type}
            ) as r:
                assert r.status == 413, action

        for headers in (
            {},
            {"Authorization": ""},
            {"Authorization": "Bearer"},
            {"Authorization": "Bearer "},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Bearer {TOKEN[:-1]}"},
            {"Authorization": f"Bearer {TOKEN}x"},
            {"Authorization": TOKEN},
            {"Authorization": f"Basic {TOKEN}"},
        ):
            for action in ("pause", "resume", "replay"):
                # A valid body: the token alone decides, and it is checked before the body.
                async with http.post(
                    f"{base}/{action}", json={"topics": ["medication-events"]}, headers=headers
                ) as r:
                    assert r.status == 401, (action, headers)
                    assert r.headers["WWW-Authenticate"] == "Bearer"
            async with http.post(f"{base}/replay", data=b"{not json", headers=headers) as r:
                assert r.status == 401, headers

    # Nothing was paused or replayed: no command, no audit record.
    assert await consume(settings, settings.topic_name("medstream-control"), 1, 3) == []
    assert await consume(settings, settings.topic_name("audit-log"), 1, 3) == []


def topic_changelog(settings: Settings) -> str:
    """The base-name-like name of a changelog topic (the app id plus the table)."""
    return f"{settings.app_id}-state-by-patient-changelog"
