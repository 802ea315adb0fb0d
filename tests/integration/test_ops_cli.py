"""The operators' verbs (tail, dlq, replay) against the real broker."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaProducer

from streams.contracts.codecs import encode_json
from streams.contracts.dead_letters import build_dead_letter
from streams.contracts.models import DoseTaken
from streams.kafka_client import client_options
from streams.ops.commands import add_ops_commands
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.kafka_helpers import consume

pytestmark = pytest.mark.integration

Headers = list[tuple[str, bytes | None]]


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    # The handlers build Settings() from the environment, as on the command line.
    monkeypatch.setenv("MEDSTREAM_BOOTSTRAP_SERVERS", settings.bootstrap_servers)
    monkeypatch.setenv("MEDSTREAM_TOPIC_PREFIX", settings.topic_prefix)
    return settings


async def ops(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    add_ops_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    capsys.readouterr()
    code = await asyncio.to_thread(args.handler, args)
    out, err = capsys.readouterr()
    return code, out, err


def dose(event_id: str, patient_id: str = "p1") -> bytes:
    return encode_json(
        DoseTaken(
            event_id=event_id,
            patient_id=patient_id,
            occurred_at=datetime(2026, 11, 29, 8, tzinfo=UTC),
            medication_id="m1",
        )
    )


async def send(
    settings: Settings,
    topic: str,
    records: Sequence[tuple[bytes | None, bytes | None, Headers]],
    partition: int = 0,
) -> None:
    producer = AIOKafkaProducer(acks="all", **client_options(settings))
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send_and_wait(
                topic, value, key=key, partition=partition, headers=headers
            )
    finally:
        await producer.stop()


def as_tuples(records: Sequence[object]) -> list[tuple[object, object, object]]:
    return [
        (r.key, r.value, [tuple(h) for h in r.headers])  # type: ignore[attr-defined]
        for r in records
    ]


async def test_tail_from_beginning_json_and_text(
    env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    await ensure_topics(env)
    topic = env.topic_name("medication-events")
    await send(env, topic, [(b"p1", dose("e1"), []), (b"p2", b"\xff\x00 not an event", [])])

    code, out, _ = await ops(
        capsys, "tail", "medication-events", "--from-beginning", "--json", "--max", "2"
    )
    assert code == 0
    first, second = (json.loads(line) for line in out.splitlines())
    assert first["topic"] == topic
    assert first["offset"] == 0
    assert first["key"] == "p1"
    assert first["event"]["event_id"] == "e1"
    assert first["event"]["event_type"] == "DoseTaken"
    assert second["key"] == "p2"
    assert "event" not in second
    assert second["value_base64"]
    assert "unrecognised encoding" in second["error"]

    code, out, _ = await ops(capsys, "tail", "medication-events", "--from-beginning", "--max", "1")
    assert code == 0
    assert "p0@0 key=p1 DoseTaken event_id=e1" in out
    assert "medication_id=m1" in out


async def test_tail_follows_from_now_and_stops_after_a_quiet_timeout(
    env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    await ensure_topics(env)
    topic = env.topic_name("medication-events")
    await send(env, topic, [(b"p1", dose("old"), [])])

    parser = argparse.ArgumentParser()
    add_ops_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["tail", "medication-events", "--json", "--timeout", "8"])
    # Started before the tail, so that the quiet timeout does not count its start-up.
    producer = AIOKafkaProducer(acks="all", **client_options(env))
    await producer.start()
    try:
        capsys.readouterr()
        started = time.monotonic()
        tailing = asyncio.create_task(asyncio.to_thread(args.handler, args))
        # The barrier: tail says where it follows from once every position is known, so a
        # record written after that line is one it must show, however slowly it started.
        out, err = "", ""
        while "following" not in err:
            assert not tailing.done(), err
            assert time.monotonic() - started < 60, "tail never said where it follows from"
            await asyncio.sleep(0.05)
            captured = capsys.readouterr()
            out, err = out + captured.out, err + captured.err
        assert f"following {topic} from offset p0@" in err
        await producer.send_and_wait(topic, dose("new"), key=b"p1", partition=0)
    finally:
        await producer.stop()
    assert await tailing == 0
    out += capsys.readouterr().out
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["event"]["event_id"] for line in lines] == ["new"]
    assert time.monotonic() - started < 60

    code, _out, _ = await ops(capsys, "tail", "no-such-topic", "--timeout", "1")
    assert code == 2


async def test_dlq_list_filters_and_show(env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    await ensure_topics(env)
    early = datetime(2026, 11, 1, 10, tzinfo=UTC)
    late = datetime(2026, 11, 20, 10, tzinfo=UTC)
    letters = [
        build_dead_letter(
            topic=env.topic_name("medication-events"),
            partition=0,
            offset=7,
            key=b"p1",
            value=b'{"event_type": "DoseTaken", broken',
            headers=[("trace", b"abc")],
            error_type="DecodeError",
            error_message="not valid JSON: Expecting property name (line 1, column 31)",
            failed_at=early,
        ),
        build_dead_letter(
            topic=env.topic_name("schedule-events"),
            partition=1,
            offset=3,
            key=b"p2",
            value=b"\xc3\x01\x00",
            headers=[],
            error_type="ValidationError",
            error_message="ScheduleSet: times: Field required",
            failed_at=late,
        ),
    ]
    await send(env, env.topic_name("dead-letters"), [(b"k", encode_json(d), []) for d in letters])

    code, out, err = await ops(capsys, "dlq", "list")
    assert code == 0
    assert "2 dead letters" in err
    assert out.splitlines()[0].split() == [
        "partition:offset",
        "failed_at",
        "original",
        "error_type",
        "error_message",
    ]
    assert f"{env.topic_name('medication-events')}[0]@7" in out
    assert "2026-11-01T10:00:00Z" in out

    _, out, _ = await ops(capsys, "dlq", "list", "--reason", "json")
    assert "DecodeError" in out
    assert "ValidationError" not in out
    _, out, _ = await ops(capsys, "dlq", "list", "--topic", "schedule-events")
    assert "ValidationError" in out
    assert "DecodeError" not in out
    _, out, _ = await ops(capsys, "dlq", "list", "--since", "2026-11-10T00:00:00Z")
    assert "ValidationError" in out
    assert "DecodeError" not in out
    _, out, _ = await ops(capsys, "dlq", "list", "--until", "2026-11-10", "--json")
    (line,) = (json.loads(text) for text in out.splitlines())
    assert line["dead_letter"]["error_type"] == "DecodeError"
    assert line["offset"] == 0
    assert line["dead_letter"]["offset"] == 7
    assert "value" not in line["dead_letter"]

    code, out, _ = await ops(capsys, "dlq", "show", "0", "--partition", "0")
    assert code == 0
    assert '{"event_type": "DoseTaken", broken' in out
    assert "trace=abc" in out
    assert "not valid JSON" in out
    _, out, _ = await ops(capsys, "dlq", "show", "1")
    assert "(hex) c30100" in out
    code, _, err = await ops(capsys, "dlq", "show", "5")
    assert code == 1
    assert "no dead letter at offset 5" in err


async def test_replay_by_offsets_and_dry_run(
    env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    await ensure_topics(env)
    topic = env.topic_name("medication-events")
    originals: list[tuple[bytes | None, bytes | None, Headers]] = [
        (b"p1", dose("e0"), [("source", b"ehr")]),
        (b"p1", dose("e1"), [("source", b"ehr"), ("empty", None)]),
        (None, dose("e2", "p9"), []),
    ]
    await send(env, topic, originals, partition=1)

    code, out, err = await ops(
        capsys, "replay", "--topic", "medication-events", "--from-offset", "1", "--dry-run"
    )
    assert code == 0
    assert f"would replay 2 records to {topic}" in out
    assert "2/2 records" in err
    assert len(await consume(env, topic, 4, timeout=3)) == 3

    code, out, err = await ops(
        capsys,
        "replay",
        "--topic",
        "medication-events",
        "--from-offset",
        "1",
        "--to-offset",
        "1",
        "--partition",
        "1",
    )
    assert code == 0
    assert f"replayed 1 records to {topic}" in out
    # Offset 3 is now the replayed e1: a range ends where the operator says.
    code, out, _ = await ops(
        capsys, "replay", "--topic", "medication-events", "--from-offset", "2", "--to-offset", "2"
    )
    assert code == 0
    assert f"replayed 1 records to {topic}" in out
    records = await consume(env, topic, 5)
    assert [r.partition for r in records] == [1] * 5
    assert as_tuples(records[3:]) == as_tuples(records[1:3])

    code, _, err = await ops(capsys, "replay", "--topic", "medication-events")
    assert code == 2
    assert "--since or --from-offset" in err


async def test_replay_by_time(env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    await ensure_topics(env)
    topic = env.topic_name("medication-events")
    await send(env, topic, [(b"p1", dose("before"), [])])
    await asyncio.sleep(1.0)
    since = datetime.now(UTC)
    await asyncio.sleep(0.1)
    await send(env, topic, [(b"p1", dose("after"), [("h", b"1")])], partition=1)
    await asyncio.sleep(0.1)
    until = datetime.now(UTC)
    await asyncio.sleep(1.0)
    await send(env, topic, [(b"p1", dose("later"), [])], partition=1)

    code, out, _ = await ops(
        capsys,
        "replay",
        "--topic",
        "medication-events",
        "--since",
        since.isoformat(),
        "--until",
        until.isoformat(),
    )
    assert code == 0
    assert f"replayed 1 records to {topic}" in out
    records = await consume(env, topic, 4)
    ids = [json.loads(r.value)["event_id"] for r in records if r.partition == 1]
    assert ids == ["after", "later", "after"]
    replayed = [r for r in records if r.partition == 1][-1]
    assert replayed.key == b"p1"
    assert [tuple(h) for h in replayed.headers] == [("h", b"1")]


async def test_replay_dead_letters_puts_the_original_bytes_back(
    env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    await ensure_topics(env)
    topic = env.topic_name("medication-events")
    original = b'{"event_type": "DoseTaken", broken'
    failed = build_dead_letter(
        topic=topic,
        partition=1,
        offset=12,
        key=b"p7",
        value=original,
        headers=[("trace", b"abc"), ("none", None)],
        error_type="DecodeError",
        error_message="not valid JSON",
        failed_at=datetime.now(UTC) - timedelta(minutes=5),
    )
    other = build_dead_letter(
        topic=env.topic_name("schedule-events"),
        partition=0,
        offset=1,
        key=b"p8",
        value=b"{}",
        headers=[],
        error_type="ValidationError",
        error_message="event_type: Field required",
        failed_at=datetime.now(UTC),
    )
    await send(
        env,
        env.topic_name("dead-letters"),
        [(b"p7", encode_json(failed), []), (b"p8", encode_json(other), [])],
    )

    code, out, _ = await ops(capsys, "replay", "--dead-letters", "--reason", "decode", "--dry-run")
    assert code == 0
    assert f"would replay 1 records to {topic}" in out
    assert await consume(env, topic, 1, timeout=3) == []

    code, out, err = await ops(capsys, "replay", "--dead-letters", "--topic", "medication-events")
    assert code == 0, err
    assert f"replayed 1 records to {topic}" in out
    (record,) = await consume(env, topic, 1)
    assert (record.partition, record.key, record.value) == (1, b"p7", original)
    assert [tuple(h) for h in record.headers] == [("trace", b"abc"), ("none", None)]
    assert await consume(env, env.topic_name("schedule-events"), 1, timeout=2) == []
