"""Consumer-group inspection: its members and their partitions, and waiting until a group of
workers has settled."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import KafkaError

from streams.kafka_client import client_options
from streams.settings import Settings


@dataclass(frozen=True)
class GroupMember:
    """One consumer of a group, as the group coordinator describes it."""

    member_id: str
    client_id: str
    host: str
    partitions: tuple[TopicPartition, ...]


async def group_members(
    admin: AIOKafkaAdminClient, group_id: str
) -> tuple[str, tuple[GroupMember, ...]]:
    """The group's state (e.g. 'Stable') and its members; ('Unknown', ()) if unknown."""
    try:
        descriptions = await admin.describe_consumer_groups([group_id])
    except KafkaError:  # the coordinator may still be being elected
        return "Unknown", ()
    for description in descriptions:
        for _error, name, state, _protocol_type, _protocol, members, *_ in description.groups:
            if name == group_id:
                return str(state), tuple(_member(*member) for member in members)
    return "Unknown", ()


def _member(
    member_id: str, client_id: str, host: str, _metadata: bytes, assignment: bytes, *_: object
) -> GroupMember:
    partitions: tuple[TopicPartition, ...] = ()
    if assignment:
        try:
            decoded = ConsumerProtocolMemberAssignment.decode(assignment)
            partitions = tuple(sorted(decoded.partitions()))
        except Exception:  # a member of another protocol: its assignment is not ours to read
            partitions = ()
    return GroupMember(member_id, client_id, host, partitions)


async def group_state(admin: AIOKafkaAdminClient, group_id: str) -> tuple[str, int]:
    """The group's state (e.g. 'Stable') and its number of members; ('Unknown', 0) if unknown."""
    state, members = await group_members(admin, group_id)
    return state, len(members)


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
