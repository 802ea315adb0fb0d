"""Pause and resume: commands on a compacted control topic that every worker follows, and audit."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.contracts.codecs import EventEncoder
from streams.contracts.models import AuditRecord
from streams.contracts.schemas import default_catalog
from streams.faust_transport import hold_until_known
from streams.kafka_client import client_options
from streams.settings import Settings
from streams.topics import AUDIT_LOG, CONTROL

log = logging.getLogger(__name__)

_KEY_PREFIX = "topic:"


@dataclass(frozen=True)
class PauseCommand:
    """Pause or resume one topic (by its base name); the latest command per topic wins."""

    topic: str
    paused: bool
    actor: str
    at: datetime

    def encode(self) -> tuple[bytes, bytes]:
        value = {"paused": self.paused, "actor": self.actor, "at": self.at.isoformat()}
        return f"{_KEY_PREFIX}{self.topic}".encode(), json.dumps(value).encode()

    @classmethod
    def decode(cls, key: bytes | None, value: bytes | None) -> PauseCommand | None:
        """The command in a control record, or None for anything else (ignored)."""
        if key is None or value is None or not key.startswith(_KEY_PREFIX.encode()):
            return None
        try:
            body = json.loads(value)
            return cls(
                topic=key.decode()[len(_KEY_PREFIX) :],
                paused=bool(body["paused"]),
                actor=str(body.get("actor", "")),
                at=datetime.fromisoformat(body["at"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


def agent_topics(app: faust.App, settings: Settings) -> dict[str, tuple[str, ...]]:
    """Each agent of a built app and the topics (base names) it consumes, as wired.

    The commands read ``streams.topology`` instead, which a test holds equal to this.
    """
    return {
        name: tuple(
            topic.removeprefix(settings.topic_prefix)
            for topic in getattr(agent.channel, "topics", ())
        )
        for name, agent in app.agents.items()
    }


async def write_audit(
    settings: Settings,
    *,
    actor: str,
    action: str,
    target: str,
    outcome: str,
    parameters: Mapping[str, str] | None = None,
    producer: AIOKafkaProducer | None = None,
) -> AuditRecord:
    """Append one admin action to `audit-log` and wait for the broker's acknowledgement.

    Without a ``producer`` it opens one of its own for this record.
    """
    if producer is None:
        own = AIOKafkaProducer(acks="all", **client_options(settings))
        await own.start()
        try:
            return await write_audit(
                settings,
                actor=actor,
                action=action,
                target=target,
                outcome=outcome,
                parameters=parameters,
                producer=own,
            )
        finally:
            await own.stop()
    audit_id = f"audit-{uuid.uuid4()}"
    record = AuditRecord(
        event_id=audit_id,
        occurred_at=datetime.now(UTC),
        audit_id=audit_id,
        actor=actor,
        action=action,
        target=target,
        parameters=dict(parameters or {}),
        outcome=outcome,
    )
    encoder = EventEncoder(default_catalog(), settings.output_encoding)
    await producer.send_and_wait(
        settings.topic_name(AUDIT_LOG.base_name), encoder.encode(record), key=target.encode()
    )
    return record


async def send_pause_commands(
    settings: Settings, topics: Iterable[str], *, paused: bool, actor: str
) -> list[PauseCommand]:
    """Publish a pause (or resume) command per topic, each with its AuditRecord."""
    now = datetime.now(UTC)
    commands = [PauseCommand(topic, paused, actor, now) for topic in topics]
    producer = AIOKafkaProducer(acks="all", **client_options(settings))
    await producer.start()
    try:
        for command in commands:
            key, value = command.encode()
            await producer.send_and_wait(settings.topic_name(CONTROL.base_name), value, key=key)
            await write_audit(
                settings,
                producer=producer,
                actor=actor,
                action="pause" if paused else "resume",
                target=f"topic:{command.topic}",
                outcome="ok",
            )
    finally:
        await producer.stop()
    return commands


def paused_topics(commands: Iterable[PauseCommand]) -> frozenset[str]:
    """The topics paused after applying the commands in order."""
    state: dict[str, bool] = {}
    for command in commands:
        state[command.topic] = command.paused
    return frozenset(topic for topic, paused in state.items() if paused)


class ControlReader:
    """Reads the whole control topic without a consumer group, so every reader sees it all."""

    def __init__(self, settings: Settings) -> None:
        self.partition = TopicPartition(settings.topic_name(CONTROL.base_name), 0)
        self.consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_options(settings))
        self.end = 0

    async def __aenter__(self) -> ControlReader:
        await self.consumer.start()
        self.consumer.assign([self.partition])
        await self.consumer.seek_to_beginning(self.partition)
        self.end = (await self.consumer.end_offsets([self.partition]))[self.partition]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.consumer.stop()

    async def next_commands(self) -> list[PauseCommand]:
        """The commands that arrived since the last call (waits up to 200 ms)."""
        batches = await self.consumer.getmany(timeout_ms=200)
        return [
            command
            for records in batches.values()
            for record in records
            if (command := PauseCommand.decode(record.key, record.value)) is not None
        ]

    async def caught_up(self) -> bool:
        """Has it read every command that existed when it started?"""
        position: int = await self.consumer.position(self.partition)
        return position >= self.end


async def read_pause_state(settings: Settings) -> dict[str, PauseCommand]:
    """The latest command per topic (base name)."""
    latest: dict[str, PauseCommand] = {}
    async with ControlReader(settings) as reader:
        while not await reader.caught_up():
            for command in await reader.next_commands():
                latest[command.topic] = command
    return latest


class ControlFollower:
    """Runs in each worker: follows the control topic and holds the paused topics' partitions.

    Until it has read the whole topic the consumer holds every pausable topic (see
    ``install_transport``), so a worker started while a topic is paused never touches it.
    """

    def __init__(self, app: faust.App, settings: Settings, pausable: Iterable[str]) -> None:
        self.app = app
        self.settings = settings
        self.pausable = frozenset(pausable)
        self.commands: list[PauseCommand] = []

    def held(self) -> frozenset[str]:
        """The full names of the topics to hold now."""
        return frozenset(
            self.settings.topic_name(topic)
            for topic in paused_topics(self.commands)
            if topic in self.pausable
        )

    async def run(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the broker went away: keep the last state, retry
                log.warning("control topic unreadable (%s); retrying", type(error).__name__)
                await asyncio.sleep(1.0)

    async def _follow(self) -> None:
        self.commands = []
        applied: frozenset[str] | None = None
        async with ControlReader(self.settings) as reader:
            while True:
                self.commands.extend(await reader.next_commands())
                if not await reader.caught_up():
                    continue
                held = self.held()
                if held != applied:
                    self.app.consumer.hold(held)  # type: ignore[attr-defined]
                    log.info("paused topics: %s", ", ".join(sorted(held)) or "none")
                    applied = held


def install_control(app: faust.App, settings: Settings, pausable: Iterable[str]) -> None:
    """Run a :class:`ControlFollower` in the worker for the pausable topics (base names)."""
    follower = ControlFollower(app, settings, pausable)
    hold_until_known(app, {settings.topic_name(topic) for topic in pausable})

    @app.task  # type: ignore[untyped-decorator]
    async def follow_pause_commands() -> None:
        await follower.run()
