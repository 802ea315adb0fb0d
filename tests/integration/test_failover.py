"""A three-node KRaft cluster under a steady load of patient events whose refill alerts are
delivered to a real webhook receiver: SIGKILL the leader of an input partition, the leader of a
changelog partition, a broker and a worker at once, and grow from one worker to three and back.
Each ends with every input settled and each notification delivered once.

MEDSTREAM_FAILOVER_LONG=1 (``make failover-long``) runs them with more patients and a longer load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaClient, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from streams.acls import leader_topic
from streams.consumer_groups import wait_until_stable
from streams.contracts.vocabulary import RefillReason
from streams.kafka_client import client_options
from streams.local_kafka import LocalKafka, probe_metadata
from streams.notify.decide import INTERRUPTED
from streams.settings import Settings
from streams.state.changelog import changelog_topic
from streams.topics import ensure_topics
from streams.topology import PATIENT_STATE_TABLE
from tests.integration.conftest import Receiver
from tests.integration.test_checkpoint_crash import (
    committed_everywhere,
    crash_settings,
    outcomes_of,
    refill_alert_id,
    until_notified,
    webhook_contact,
)
from tests.integration.test_patient_state import Events, publish
from tests.worker_process import WorkerProcess

LONG = os.environ.get("MEDSTREAM_FAILOVER_LONG") == "1"
# Each patient: a contact, a prescription and DOSES doses (the last raises two refill alerts).
PATIENTS = 200 if LONG else 40
DOSES = 6 if LONG else 4
# Seconds between two chunks of the load: it runs while brokers and workers are killed.
PACE = 0.5 if LONG else 0.25
CHUNK = 10

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900 if LONG else 420)]

log = logging.getLogger(__name__)

# Nobody else's ports: the session broker is on 19092, the demo on 9092.
FAILOVER_PORT = int(os.environ.get("MEDSTREAM_FAILOVER_PORT", "59092"))
DEADLINE = 240.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    settings = Settings(
        broker_port=FAILOVER_PORT,
        broker_controller_port=FAILOVER_PORT + 100,
        broker_data_dir=tmp_path_factory.mktemp("cluster"),
        broker_heap="384m",
        broker_start_timeout=180.0,
    )
    kafka = LocalKafka.cluster_from_settings(settings, 3)
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop()


@pytest.fixture
def three_nodes(cluster: LocalKafka) -> LocalKafka:
    """Every test starts with all three nodes running: the ones a test killed start again."""
    cluster.start()
    return cluster


@pytest.fixture
def failover_settings(three_nodes: LocalKafka, tmp_path: Path) -> Settings:
    unique = f"f{uuid.uuid4().hex[:10]}"
    return crash_settings(
        Settings(
            bootstrap_servers=three_nodes.bootstrap_servers,
            app_id=f"medstream-{unique}",
            topic_prefix=f"{unique}.",
            topic_replication_factor=3,
            store_url="rocksdb://",
            data_dir=tmp_path / "worker",
            web_enabled=False,
        )
    )


class Load:
    """The patients' contacts, then in the background their prescriptions and doses, chunk by
    chunk; the refill alerts they raise are the deliveries expected at the receiver."""

    def __init__(self, settings: Settings, receiver: Receiver, name: str) -> None:
        self.settings = settings
        self.receiver = receiver
        self.patients = [Events(f"{name}-{n}") for n in range(PATIENTS)]
        self.events: list[dict[str, Any]] = []
        self.expected: set[str] = set()
        for events in self.patients:
            self.events.append(
                events.prescribed("m1", "Metformin", supply_quantity=DOSES, refills_remaining=0)
            )
        # Round by round, so that every patient's alerts come near the end and throughout.
        for round_ in range(DOSES):
            for events in self.patients:
                dose = events.make("DoseTaken", medication_id="m1")
                self.events.append(dose)
                if round_ == DOSES - 1:
                    self.expected |= {
                        refill_alert_id(events, "m1", reason, dose["event_id"])
                        for reason in (
                            RefillReason.OUT_OF_SUPPLY,
                            RefillReason.NO_REFILLS_REMAINING,
                        )
                    }
        self.task: asyncio.Task[None] | None = None
        self.sent = 0

    async def contacts(self) -> None:
        contacts = [webhook_contact(events, self.receiver) for events in self.patients]
        await publish(self.settings, "patient-events", *contacts, pipelined=True)

    async def _run(self) -> None:
        for start in range(0, len(self.events), CHUNK):
            chunk = self.events[start : start + CHUNK]
            deadline = time.monotonic() + DEADLINE
            while True:
                try:
                    await publish(self.settings, "medication-events", *chunk, pipelined=True)
                    break
                except KafkaError:
                    # A leader gone mid-send: sent again; the worker drops a repeated event_id.
                    assert time.monotonic() < deadline, "the load could not publish"
                    await asyncio.sleep(0.5)
            self.sent += len(chunk)
            await asyncio.sleep(PACE)

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def until_sent(self, fraction: float) -> None:
        deadline = time.monotonic() + DEADLINE
        while self.sent < fraction * len(self.events):
            assert self.task is not None
            if self.task.done():
                self.task.result()  # its failure, if it failed
            assert time.monotonic() < deadline, self.sent
            await asyncio.sleep(0.05)

    async def finished(self) -> None:
        assert self.task is not None
        await asyncio.wait_for(self.task, DEADLINE)


async def leader_of(settings: Settings, topic: str, partition: int = 0) -> int:
    """The node id that leads a partition, from the cluster's metadata."""
    client = AIOKafkaClient(bootstrap_servers=settings.bootstrap_servers)
    await client.bootstrap()
    try:
        deadline = time.monotonic() + 60
        while True:
            await client.force_metadata_update()
            leader = client.cluster.leader_for_partition(TopicPartition(topic, partition))
            if leader is not None and leader >= 0:
                return int(leader)
            assert time.monotonic() < deadline, f"no leader for {topic}-{partition}"
            await asyncio.sleep(0.5)
    finally:
        await client.close()


async def min_insync_replicas(settings: Settings, topic: str) -> str | None:
    """The topic's own ``min.insync.replicas`` (None: it takes the broker's default)."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        # (A topic not there yet answers with an error and no entries: None.)
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"min.insync.replicas": None})]
        )
        for _error, _message, _type, _name, entries in response.resources:
            for name, value, _read_only, source, *_ in entries:
                # Source 1 is a topic's own config (DYNAMIC_TOPIC_CONFIG).
                if name == "min.insync.replicas" and source == 1:
                    return str(value)
        return None
    finally:
        await admin.close()


async def until_fenced(kafka: LocalKafka, node_id: int) -> None:
    """Until the cluster's metadata no longer lists a killed node: before that, a client (this
    test's admin helpers too) may still send a request to it."""
    deadline = time.monotonic() + 120
    while node_id in (await probe_metadata(kafka.bootstrap_servers) or [node_id]):
        assert time.monotonic() < deadline, f"node {node_id} still listed"
        await asyncio.sleep(0.5)


async def settled_once(
    settings: Settings, receiver: Receiver, worker: WorkerProcess, load: Load
) -> set[str]:
    """Every input handled and committed, every expected alert with a final outcome, and no
    notification delivered twice. Returns the alerts reported interrupted (a worker killed
    mid-delivery: judged interrupted and never resent, as streams.notify.decide says)."""
    await load.finished()
    found = await until_notified(settings, worker, load.expected)
    await committed_everywhere(settings)
    found = await outcomes_of(settings)
    by_key = Counter(request["idempotency_key"] for request in receiver.requests)
    twice = {key: count for key, count in by_key.items() if count > 1}
    assert not twice, f"delivered more than once: {twice}"
    by_event = Counter(request["body"]["event_id"] for request in receiver.requests)
    assert set(by_event) <= load.expected, set(by_event) - load.expected
    assert all(count == 1 for count in by_event.values()), by_event.most_common(3)
    assert set(found) == load.expected, set(found) ^ load.expected
    interrupted = set()
    for source in load.expected:
        statuses = {(o["status"], o.get("error")) for o in found[source]}
        if ("failed", INTERRUPTED) in statuses:
            interrupted.add(source)
            assert statuses <= {("failed", INTERRUPTED), ("delivered", None)}, statuses
        else:
            assert statuses == {("delivered", None)}, (source, statuses)
    assert load.expected - set(by_event) <= interrupted, load.expected - set(by_event)
    log.info(
        "%d events, %d alerts: %d delivered once, %d interrupted",
        len(load.events),
        len(load.expected),
        len(by_event),
        len(interrupted),
    )
    return interrupted


@contextlib.asynccontextmanager
async def workers(
    settings: Settings, tmp_path: Path, count: int
) -> AsyncIterator[list[WorkerProcess]]:
    started = [
        WorkerProcess(settings, tmp_path / f"worker-{n}", tmp_path / f"worker-{n}.log")
        for n in range(1, count + 1)
    ]
    try:
        for worker in started:
            worker.start()
        await wait_until_stable(settings, settings.app_id, timeout=180, members=count)
        yield started
    finally:
        # In threads: WorkerProcess.stop waits for the exit, and the receiver shares this event
        # loop; blocked while a worker drains, it would answer late, the deliveries in flight
        # would time out and be retried (the same notification arriving twice).
        await asyncio.gather(*(asyncio.to_thread(worker.stop) for worker in started))


async def prepared(settings: Settings, receiver: Receiver, name: str) -> Load:
    await ensure_topics(settings)
    return Load(settings, receiver, name)


async def contacts_settled(load: Load) -> None:
    await load.contacts()
    await committed_everywhere(load.settings)


async def test_killing_the_leader_of_an_input_partition(
    three_nodes: LocalKafka, failover_settings: Settings, receiver: Receiver, tmp_path: Path
) -> None:
    settings = failover_settings
    load = await prepared(settings, receiver, "input")
    async with workers(settings, tmp_path, 1) as (worker,):
        await contacts_settled(load)
        load.start()
        await load.until_sent(0.3)
        leader = await leader_of(settings, settings.topic_name("medication-events"))
        assert three_nodes.kill_node(leader) is not None
        await until_fenced(three_nodes, leader)
        interrupted = await settled_once(settings, receiver, worker, load)
        assert worker.running, worker.log_tail()
        # Every topic was created with two replicas in sync: those medstream creates, the
        # changelog (at its first write) and Faust's own leader topic.
        for topic in (
            settings.topic_name("medication-events"),
            changelog_topic(settings, PATIENT_STATE_TABLE),
            leader_topic(settings),
        ):
            assert await min_insync_replicas(settings, topic) == "2", topic
    # The worker lived on: nothing of it was cut off mid-delivery.
    assert not interrupted


async def test_killing_the_leader_of_a_changelog_partition(
    three_nodes: LocalKafka, failover_settings: Settings, receiver: Receiver, tmp_path: Path
) -> None:
    settings = failover_settings
    load = await prepared(settings, receiver, "changelog")
    async with workers(settings, tmp_path, 1) as (worker,):
        await contacts_settled(load)
        load.start()
        await load.until_sent(0.3)
        leader = await leader_of(settings, changelog_topic(settings, PATIENT_STATE_TABLE))
        assert three_nodes.kill_node(leader) is not None
        await until_fenced(three_nodes, leader)
        interrupted = await settled_once(settings, receiver, worker, load)
        assert worker.running, worker.log_tail()
    assert not interrupted


async def test_killing_a_broker_and_a_worker_at_once(
    three_nodes: LocalKafka, failover_settings: Settings, receiver: Receiver, tmp_path: Path
) -> None:
    settings = failover_settings
    load = await prepared(settings, receiver, "both")
    first = WorkerProcess(settings, tmp_path / "worker-1", tmp_path / "worker-1.log")
    # An empty data directory: its state comes from the changelog, on the two brokers left.
    second = WorkerProcess(settings, tmp_path / "worker-2", tmp_path / "worker-2.log")
    try:
        first.start()
        await wait_until_stable(settings, settings.app_id, timeout=180)
        await contacts_settled(load)
        load.start()
        await load.until_sent(0.3)
        leader = await leader_of(settings, settings.topic_name("medication-events"))
        first.kill()
        assert three_nodes.kill_node(leader) is not None
        # At once, while the dead broker is still in the metadata: its topic creation must
        # not fail on it.
        second.start()
        await until_fenced(three_nodes, leader)
        await wait_until_stable(settings, settings.app_id, timeout=180)
        interrupted = await settled_once(settings, receiver, second, load)
        assert second.running, second.log_tail()
    finally:
        first.stop()
        second.stop()
    assert len(interrupted) <= settings.notify_concurrency, len(interrupted)


async def test_growing_from_one_worker_to_three_and_back(
    three_nodes: LocalKafka, failover_settings: Settings, receiver: Receiver, tmp_path: Path
) -> None:
    settings = failover_settings
    load = await prepared(settings, receiver, "scale")
    async with workers(settings, tmp_path, 1) as (first,):
        await contacts_settled(load)
        load.start()
        await load.until_sent(0.2)
        async with workers(settings, tmp_path / "more", 2) as more:
            await wait_until_stable(settings, settings.app_id, timeout=180, members=3)
            await load.until_sent(0.5)
            assert all(worker.running for worker in more)
        # The two stopped (SIGTERM, a graceful leave): their partitions come back to the first.
        await wait_until_stable(settings, settings.app_id, timeout=180)
        interrupted = await settled_once(settings, receiver, first, load)
        assert first.running, first.log_tail()
    assert not interrupted
