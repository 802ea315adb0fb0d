"""The agent-test harness: the real app with in-memory tables, fed record by record.

Records go in through Faust's ``agent.test_context()`` wrapper (``feeding``); what the agents
publish is captured by replacing ``Emitter.emit`` (the ``emitted`` fixture in conftest.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from faust.types import Message

from streams.app import Medstream
from streams.contracts.models import Event
from streams.domain.patient import PatientState

NOW = datetime(2025, 3, 10, 7, 0, tzinfo=UTC)
SLOT = datetime(2025, 3, 10, 8, 0, tzinfo=UTC)

Emitted = list[tuple[str, Event]]


def event(event_type: str, event_id: str, patient_id: str = "p1", **fields: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_type": event_type,
        "patient_id": patient_id,
        "occurred_at": fields.pop("occurred_at", NOW.isoformat()),
        **fields,
    }


def prescribed(event_id: str, medication_id: str, name: str, **fields: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "dose_quantity": 1,
        "dose_unit": "tablet",
        "supply_quantity": 100,
        "refills_remaining": 3,
    }
    return event(
        "MedicationPrescribed",
        event_id,
        medication_id=medication_id,
        name=name,
        **{**defaults, **fields},
    )


def encoded(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode("utf-8")


class Feed:
    """Puts raw records into one agent's test context and waits until each one is settled."""

    def __init__(self, medstream: Medstream, ctx: Any) -> None:
        self.medstream = medstream
        self.ctx = ctx
        self.topic = "<internal>"
        ctx.to_message = self._to_message

    def _to_message(
        self,
        key: bytes | None,
        value: bytes | None,
        *,
        partition: int | None = None,
        offset: int = 0,
        timestamp: float | None = None,
        timestamp_type: int = 0,
        headers: Any = None,
    ) -> Message:
        # AgentTestWrapper.to_message, with the topic a real consumer would report.
        return Message(
            topic=self.topic,
            partition=partition or 0,
            offset=offset,
            timestamp=timestamp or time.time(),
            timestamp_type=timestamp_type,
            headers=headers,
            key=key,
            value=value,
            checksum=b"",
            serialized_key_size=0,
            serialized_value_size=0,
            generation_id=self.medstream.app.consumer_generation_id,
        )

    async def put(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = b"p1",
        partition: int = 0,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Any:
        stats = self.medstream.stats
        settled = stats.total_settled
        self.topic = topic
        record = await self.ctx.put(value=value, key=key, partition=partition, headers=headers)
        # The wrapper wakes ``put`` when the stream hands the record on, which may be just
        # before the agent's body is done with it.
        async with asyncio.timeout(5):
            while stats.total_settled == settled:
                await asyncio.sleep(0)
        return record


@asynccontextmanager
async def feeding(medstream: Medstream, agent_name: str) -> AsyncIterator[Feed]:
    agent = medstream.app.agents[agent_name]
    async with agent.test_context() as ctx:
        yield Feed(medstream, ctx)


def of_type(emitted: Emitted, model: type[Event]) -> list[tuple[str, Any]]:
    return [(topic, sent) for topic, sent in emitted if isinstance(sent, model)]


def state(medstream: Medstream, patient_id: str = "p1") -> PatientState:
    return medstream.patients.store.state(patient_id)
