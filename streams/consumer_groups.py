"""Consumer-group inspection: waiting until a group of workers has settled."""

from __future__ import annotations

import asyncio
import time

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from streams.kafka_client import client_options
from streams.settings import Settings


async def group_state(admin: AIOKafkaAdminClient, group_id: str) -> tuple[str, int]:
    """The group's state (e.g. 'Stable') and its number of members; ('Unknown', 0) if unknown."""
    try:
        descriptions = await admin.describe_consumer_groups([group_id])
    except KafkaError:  # the coordinator may still be being elected
        return "Unknown", 0
    for description in descriptions:
        for _error, name, state, _protocol_type, _protocol, members, *_ in description.groups:
            if name == group_id:
                return str(state), len(members)
    return "Unknown", 0


async def wait_until_stable(
    settings: Settings, group_id: str, timeout: float, members: int = 1
) -> None:
    """Wait until the group is Stable with at least ``members`` members."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state, count = await group_state(admin, group_id)
            if state == "Stable" and count >= members:
                return
            await asyncio.sleep(0.5)
        raise TimeoutError(f"consumer group did not settle within {timeout:.0f}s")
    finally:
        await admin.close()
