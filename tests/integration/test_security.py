"""Kafka security end to end on a real broker: SASL_SSL (SCRAM-SHA-512 over TLS), the KRaft
StandardAuthorizer denying what no ACL allows, and the ACLs of streams/acls.py per principal:
a worker process holding only its ACLs processes events (raw records, and the typed client's
Publisher and Subscriber with the publisher's and downstream's credentials, a FHIR Bundle
included), a client without credentials is refused, the publisher writes only the inputs, the
operator runs the operators' commands but cannot write the state topics."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)
from pydantic import SecretStr

from streams import acls
from streams.client import Publisher, Subscriber
from streams.contracts.models import InteractionWarning, RefillAlert
from streams.kafka_client import client_options
from streams.local_credentials import write_tls
from streams.local_kafka import (
    ClusterSpec,
    LocalKafka,
    NodeSpec,
    ensure_classpath,
    secured_properties,
)
from streams.settings import SecurityProtocol, Settings
from streams.topics import ensure_named_topics, ensure_topics
from streams.topology import DELIVERY_LEDGER_TABLE, PATIENT_STATE_TABLE
from tests import fhir_scenarios
from tests.integration.test_patient_state import Events, publish
from tests.worker_process import WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PORT = 49092
CONTROLLER_PORT = 49093
HOST = "127.0.0.1"
MECHANISM = "SCRAM-SHA-512"
USERS = {role: role for role in acls.ROLES}
TIMEOUT = 120.0


@dataclass
class Secured:
    tls_dir: Path
    passwords: dict[str, str]
    base: Settings

    def settings(self, user: str | None) -> Settings:
        """Settings of a client connecting as ``user`` (over SASL_SSL with the CA)."""
        return self.base.model_copy(
            update={
                "security_protocol": SecurityProtocol.SASL_SSL,
                "sasl_mechanism": MECHANISM,
                "sasl_username": user,
                "sasl_password": SecretStr(self.passwords.get(user or "", "unknown")),
                "ssl_cafile": self.tls_dir / "ca.pem",
            }
        )


def admin_properties(secured: Secured, path: Path) -> None:
    password = secured.passwords["admin"]
    path.write_text(
        f"bootstrap.servers={HOST}:{PORT}\n"
        "security.protocol=SASL_SSL\n"
        f"sasl.mechanism={MECHANISM}\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="admin" password="{password}";\n'
        "ssl.truststore.type=PEM\n"
        f"ssl.truststore.location={secured.tls_dir / 'ca.pem'}\n"
    )


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    root = tmp_path_factory.mktemp("secured-kafka")
    tls_dir = root / "tls"
    write_tls(tls_dir, [HOST, "localhost"])
    passwords = {name: f"{name}-secret-{os.getpid()}" for name in ("admin", *USERS.values())}
    defaults = Settings()
    base = Settings(
        bootstrap_servers=f"{HOST}:{PORT}",
        app_id="medstream-sec",
        topic_prefix="sec.",
        topic_partitions=2,
        store_url="rocksdb://",
        data_dir=root / "worker",
        web_enabled=False,
    )
    state = Secured(tls_dir, passwords, base)
    admin_settings = state.settings("admin")
    cluster = ClusterSpec(
        nodes=(NodeSpec(1, HOST, PORT, CONTROLLER_PORT, root / "broker"),),
        kafka_version=defaults.broker_kafka_version,
        cache_dir=defaults.broker_cache_dir,
        heap="512m",
        start_timeout=180.0,
        extra_properties=secured_properties(tls_dir, "admin", passwords["admin"], MECHANISM),
        scram_credentials=tuple(
            f"{MECHANISM}=[name={name},password={password}]" for name, password in passwords.items()
        ),
        probe_options={
            k: v for k, v in client_options(admin_settings).items() if k != "bootstrap_servers"
        },
    )
    broker = LocalKafka(cluster)
    broker.start()
    try:
        asyncio.run(ensure_topics(admin_settings))
        compacted = {"cleanup.policy": "compact"}
        asyncio.run(
            ensure_named_topics(
                admin_settings,
                {
                    acls.changelog_topic(base, PATIENT_STATE_TABLE): (2, compacted),
                    acls.changelog_topic(base, DELIVERY_LEDGER_TABLE): (2, compacted),
                    acls.leader_topic(base): (1, {}),
                },
            )
        )
        properties = root / "admin.properties"
        admin_properties(state, properties)
        acls.create_acls(base, USERS, ensure_classpath(cluster), properties)
        yield state
    finally:
        broker.stop()


async def read_all(settings: Settings, topic: str, group: str | None, want: int) -> list[dict]:
    consumer = AIOKafkaConsumer(
        settings.topic_name(topic),
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **client_options(settings),
    )
    await consumer.start()
    found: list[dict] = []
    try:
        deadline = time.monotonic() + TIMEOUT
        while len(found) < want and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000)
            found.extend(json.loads(r.value) for rs in batches.values() for r in rs)
    finally:
        await consumer.stop()
    return found


async def produce_one(settings: Settings, topic: str) -> None:
    producer = AIOKafkaProducer(acks="all", request_timeout_ms=30_000, **client_options(settings))
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"{}", key=b"k")
    finally:
        await producer.stop()


async def test_a_worker_with_only_its_acls_processes_events_end_to_end(
    secured: Secured, tmp_path: Path
) -> None:
    worker_settings = secured.settings("worker")
    worker = WorkerProcess(worker_settings, tmp_path / "worker", tmp_path / "worker.log")
    events = Events("sec-patient-1")
    try:
        worker.start()
        await publish(
            secured.settings("publisher"),
            "medication-events",
            events.prescribed("m1", "Metformin", supply_quantity=2, refills_remaining=0),
            events.make("DoseTaken", medication_id="m1"),
            events.make("DoseTaken", medication_id="m1"),
        )
        alerts = await read_all(
            secured.settings("downstream"), "refill-alerts", acls.downstream_group(secured.base), 1
        )
        assert alerts, worker.log_tail()
        assert {alert["patient_id"] for alert in alerts} == {events.patient_id}
        await the_typed_client_round_trips(secured)
        assert worker.running, worker.log_tail()
        # Its ACLs stop at what the topology writes: no Write on the control topic nor on the
        # inputs its FHIR intake does not map onto.
        for topic in ("patient-events", "fhir-resources", "medstream-control"):
            with pytest.raises(TopicAuthorizationFailedError):
                await produce_one(worker_settings, worker_settings.topic_name(topic))
    finally:
        worker.stop()


async def the_typed_client_round_trips(secured: Secured) -> None:
    """Publisher (idempotent, as the publisher role) and Subscriber (the downstream group, as
    the downstream role) over SASL_SSL: typed events and a FHIR Bundle in, typed alerts out."""
    typed_patient = "sec-patient-typed"
    async with Publisher(secured.settings("publisher")) as publisher:
        await publisher.prescribe(
            key="rx-1",
            patient_id=typed_patient,
            medication_id="m1",
            name="Metformin",
            dose_quantity=1,
            dose_unit="tablet",
            supply_quantity=2,
            refills_remaining=0,
        )
        for dose in ("dose-1", "dose-2"):
            await publisher.dose_taken(key=dose, patient_id=typed_patient, medication_id="m1")
        # Warfarin with aspirin, from an EHR's Bundle: the worker maps it onto medication-events
        # (its own Write ACL there), then warns of the interaction.
        await publisher.publish_fhir(
            fhir_scenarios.bundle(
                fhir_scenarios.patient(), fhir_scenarios.warfarin(), fhir_scenarios.aspirin()
            )
        )
    wanted = {
        (RefillAlert, typed_patient),
        (InteractionWarning, fhir_scenarios.PATIENT),
    }
    downstream = secured.settings("downstream")
    # The default group, and a service's own group named after it: both allowed.
    for group in (None, f"{acls.downstream_group(downstream)}-billing"):
        seen: set[tuple[type, str]] = set()
        subscriber = Subscriber(downstream, group_id=group, idle_timeout=TIMEOUT)
        async with subscriber:
            async for alert in subscriber:
                seen.add((type(alert), alert.patient_id))
                if wanted <= seen:
                    break
        assert wanted <= seen, (group, seen)
    # The workers' group is not the downstream role's.
    with pytest.raises(GroupAuthorizationFailedError):
        async with Subscriber(downstream, group_id=downstream.app_id, idle_timeout=30) as stolen:
            await asyncio.wait_for(anext(stolen), 60)


async def test_a_client_without_credentials_is_refused(secured: Secured) -> None:
    # PLAINTEXT against the SASL_SSL listener: no TLS handshake, no metadata, no produce.
    plaintext = secured.base
    with pytest.raises((KafkaConnectionError, asyncio.TimeoutError)):
        await asyncio.wait_for(
            produce_one(plaintext, plaintext.topic_name("medication-events")), 60
        )
    # TLS and SASL, but a user the broker does not know: authentication fails.
    stranger = secured.settings("stranger")
    with pytest.raises(KafkaConnectionError):
        await asyncio.wait_for(produce_one(stranger, stranger.topic_name("medication-events")), 60)
    # A known user with a wrong password is refused the same way.
    wrong = secured.settings("publisher").model_copy(update={"sasl_password": SecretStr("no")})
    with pytest.raises(KafkaConnectionError):
        await asyncio.wait_for(produce_one(wrong, wrong.topic_name("medication-events")), 60)


async def test_the_publisher_writes_the_inputs_and_is_refused_an_output(secured: Secured) -> None:
    publisher = secured.settings("publisher")
    for topic in ("medication-events", "schedule-events", "patient-events", "fhir-resources"):
        await produce_one(publisher, publisher.topic_name(topic))
    with pytest.raises(TopicAuthorizationFailedError):
        await produce_one(publisher, publisher.topic_name("refill-alerts"))


def run_cli(settings: Settings, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams", *argv],
        env={**os.environ, **settings.environment()},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


async def test_the_operator_runs_the_ops_commands_but_cannot_write_the_state(
    secured: Secured,
) -> None:
    operator = secured.settings("operator")
    for argv in (
        ("status", "--stall-sample", "0"),
        ("tail", "medication-events", "--from-beginning", "--max", "1", "--timeout", "10"),
        ("dlq", "list"),
        ("pause", "--topic", "medication-events", "--actor", "security-test"),
        ("resume", "--topic", "medication-events", "--actor", "security-test"),
    ):
        result = run_cli(operator, *argv)
        assert result.returncode == 0, (argv, result.stdout, result.stderr[-3000:])
    for topic in (
        acls.changelog_topic(operator, PATIENT_STATE_TABLE),
        acls.changelog_topic(operator, DELIVERY_LEDGER_TABLE),
        acls.leader_topic(operator),
        operator.topic_name("refill-alerts"),
    ):
        with pytest.raises(TopicAuthorizationFailedError):
            await produce_one(operator, topic)


def test_medstream_broker_start_sasl_ssl_dir_starts_a_secured_broker_with_the_acls(
    tmp_path: Path,
) -> None:
    secrets = tmp_path / "secrets"
    write_tls(secrets, [HOST, "localhost"])
    (secrets / "users.properties").write_text(
        "# name=password\nadmin=admin-pw-1\npublisher=publisher-pw-1\n"
    )
    base = Settings(
        bootstrap_servers=f"{HOST}:49192",
        app_id="medstream-cli",
        topic_prefix="cli.",
        topic_partitions=1,
        broker_port=49192,
        broker_controller_port=49193,
        broker_data_dir=tmp_path / "broker",
        broker_heap="512m",
        broker_start_timeout=180.0,
    )
    state = Secured(secrets, {"admin": "admin-pw-1", "publisher": "publisher-pw-1"}, base)
    broker = ("broker", "start", "--sasl-ssl-dir", str(secrets))
    started = run_cli(base, *broker)
    try:
        assert started.returncode == 0, started.stderr[-3000:]
        assert "ACLs of publisher created" in started.stdout
        status = run_cli(base, "broker", "status", "--sasl-ssl-dir", str(secrets))
        assert status.returncode == 0, status.stdout + status.stderr[-3000:]
        created = run_cli(state.settings("admin"), "topics", "create")
        assert created.returncode == 0, created.stderr[-3000:]
        publisher = state.settings("publisher")
        asyncio.run(produce_one(publisher, publisher.topic_name("medication-events")))
        with pytest.raises(TopicAuthorizationFailedError):
            asyncio.run(produce_one(publisher, publisher.topic_name("refill-alerts")))
    finally:
        stopped = run_cli(base, "broker", "stop", "--sasl-ssl-dir", str(secrets))
        assert stopped.returncode == 0, stopped.stderr[-3000:]
