"""Watching a NotificationOutcome topic from outside the workers: when did the last one arrive."""

from __future__ import annotations

import asyncio
import json
import time

from aiokafka import AIOKafkaConsumer

from streams.kafka_client import client_options
from streams.settings import Settings


class OutcomeWatcher:
    """Counts distinct delivered RefillAlert outcomes on one topic, with the wall-clock time the
    last new one was seen (an at-least-once worker may send an outcome twice)."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(
            topic,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            # An exactly-once peer's outcomes count once their transaction is committed.
            isolation_level="read_committed",
            # Short fetch waits: the time a last outcome waits here is added to the figure.
            fetch_max_wait_ms=20,
            **client_options(settings),
        )
        self.notification_ids: set[str] = set()
        self.last_seen = 0.0

    async def start(self) -> None:
        await self.consumer.start()

    async def stop(self) -> None:
        await self.consumer.stop()

    async def wait_for(self, count: int, timeout: float) -> bool:
        """Consume until ``count`` distinct outcomes were seen; False on timeout."""
        deadline = time.monotonic() + timeout
        while len(self.notification_ids) < count:
            if time.monotonic() > deadline:
                return False
            batches = await self.consumer.getmany(timeout_ms=50)
            for records in batches.values():
                for record in records:
                    outcome = json.loads(record.value) if record.value else {}
                    if outcome.get("source_event_type") != "RefillAlert":
                        continue
                    if outcome["notification_id"] not in self.notification_ids:
                        self.notification_ids.add(outcome["notification_id"])
                        self.last_seen = time.time()
            await asyncio.sleep(0)
        return True
