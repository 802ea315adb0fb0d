"""Every Kafka topic of the public contract, declared once, and their creation on the brokers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    KafkaConnectionError,
    NodeNotReadyError,
    RequestTimedOutError,
    TopicAlreadyExistsError,
)

from streams.kafka_client import client_options
from streams.settings import Settings


class Direction(StrEnum):
    """Whether upstream writes a topic (in) or medstream does (out)."""

    IN = "in"
    OUT = "out"
    # medstream's own plumbing, not part of the public contract.
    INTERNAL = "internal"


@dataclass(frozen=True)
class TopicSpec:
    """One topic of ARCHITECTURE.md: its default name, direction and the events it carries."""

    base_name: str
    direction: Direction
    event_types: tuple[str, ...]
    # None: the deployment's MEDSTREAM_TOPIC_PARTITIONS.
    partitions: int | None = None
    compacted: bool = False
    # The setting (a field of Settings, in days) that bounds how long the topic keeps records,
    # for topics that hold patient data verbatim; None: the broker's log.retention.
    retention_days_setting: str | None = None
    # What a topic that carries no contract events holds instead (docs/events.md says it).
    carries: str | None = None

    def partition_count(self, settings: Settings) -> int:
        return self.partitions or settings.topic_partitions

    def configs(self, settings: Settings) -> dict[str, str]:
        """The configs the topic is created with."""
        retention_days = (
            None
            if self.retention_days_setting is None
            else int(getattr(settings, self.retention_days_setting))
        )
        return topic_configs(settings, compacted=self.compacted, retention_days=retention_days)


MEDICATION_EVENTS = TopicSpec(
    "medication-events",
    Direction.IN,
    (
        "MedicationPrescribed",
        "MedicationDiscontinued",
        "DoseTaken",
        "DoseSkipped",
        "RefillDispensed",
    ),
)
SCHEDULE_EVENTS = TopicSpec("schedule-events", Direction.IN, ("ScheduleSet", "ScheduleCleared"))
PATIENT_EVENTS = TopicSpec("patient-events", Direction.IN, ("ContactPreferencesSet",))
# FHIR R4 JSON resources and Bundles from EHRs and pharmacy systems (docs/fhir.md), not contract
# events: the FHIR intake maps them onto the two topics above.
FHIR_RESOURCES = TopicSpec(
    "fhir-resources",
    Direction.IN,
    (),
    carries=(
        "FHIR R4 JSON resources and Bundles, mapped onto the two topics above ([fhir.md](fhir.md))"
    ),
)
MEDICATION_REMINDERS = TopicSpec(
    "medication-reminders", Direction.OUT, ("ReminderDue", "DoseMissed")
)
REFILL_ALERTS = TopicSpec("refill-alerts", Direction.OUT, ("RefillAlert",))
INTERACTION_WARNINGS = TopicSpec("interaction-warnings", Direction.OUT, ("InteractionWarning",))
NOTIFICATIONS = TopicSpec("notifications", Direction.OUT, ("NotificationOutcome",))
# Raw payloads of refused records: patient data, kept no longer than the setting says.
DEAD_LETTERS = TopicSpec(
    "dead-letters",
    Direction.OUT,
    ("DeadLetter",),
    retention_days_setting="dead_letter_retention_days",
)
ADMIN_ALERTS = TopicSpec("admin-alerts", Direction.OUT, ("AdminAlert",))
AUDIT_LOG = TopicSpec("audit-log", Direction.OUT, ("AuditRecord",))

ALL_TOPICS: tuple[TopicSpec, ...] = (
    MEDICATION_EVENTS,
    SCHEDULE_EVENTS,
    PATIENT_EVENTS,
    FHIR_RESOURCES,
    MEDICATION_REMINDERS,
    REFILL_ALERTS,
    INTERACTION_WARNINGS,
    NOTIFICATIONS,
    DEAD_LETTERS,
    ADMIN_ALERTS,
    AUDIT_LOG,
)
# Deferred notifications whose quiet hours ended: a timer cannot write tables, so it sends a
# release here and an agent starts the delivery.
NOTIFICATION_RELEASES = TopicSpec(
    "medstream-notification-releases", Direction.INTERNAL, ("NotificationOutcome",)
)
# Pause and resume commands, keyed by topic: every worker reads all of it, so one partition,
# and compacted so that it holds the current state of each topic.
CONTROL = TopicSpec("medstream-control", Direction.INTERNAL, (), partitions=1, compacted=True)
INTERNAL_TOPICS: tuple[TopicSpec, ...] = (NOTIFICATION_RELEASES, CONTROL)
EVERY_TOPIC = ALL_TOPICS + INTERNAL_TOPICS
# Every topic upstream writes; of them, the ones that carry contract events.
INPUT_TOPICS = tuple(spec for spec in ALL_TOPICS if spec.direction is Direction.IN)
EVENT_INPUT_TOPICS = tuple(spec for spec in INPUT_TOPICS if spec.event_types)
OUTPUT_TOPICS = tuple(spec for spec in ALL_TOPICS if spec.direction is Direction.OUT)
# What downstream consumers read (the Subscriber, the downstream role's ACLs): the alerts, and
# the notifier's outcomes of delivering them.
ALERT_TOPICS: tuple[TopicSpec, ...] = (MEDICATION_REMINDERS, REFILL_ALERTS, INTERACTION_WARNINGS)
DOWNSTREAM_TOPICS: tuple[TopicSpec, ...] = (*ALERT_TOPICS, NOTIFICATIONS)


# How long topic creation tries again while a broker of the cluster is unreachable.
TOPIC_ADMIN_RETRY_SECONDS = 60.0


def topic_names(settings: Settings, specs: tuple[TopicSpec, ...] = ALL_TOPICS) -> list[str]:
    """The deployment's full names of the given topics."""
    return [settings.topic_name(spec.base_name) for spec in specs]


async def ensure_topics(
    settings: Settings, specs: tuple[TopicSpec, ...] = EVERY_TOPIC
) -> list[str]:
    """Create the topics that do not exist yet; return the names it created.

    Existing topics are left as they are: changing a live topic's partition count would move
    patients between partitions and break per-patient ordering.
    """
    return await ensure_named_topics(
        settings,
        {
            settings.topic_name(spec.base_name): (
                spec.partition_count(settings),
                spec.configs(settings),
            )
            for spec in specs
        },
    )


def topic_configs(
    settings: Settings, *, compacted: bool, retention_days: int | None = None
) -> dict[str, str]:
    """The configs of a topic medstream creates: compaction when asked, a retention when given,
    and with three or more replicas ``min.insync.replicas=2``, so that an acknowledged write
    (acks=all) is on two brokers and survives losing any one of them."""
    configs: dict[str, str] = {}
    if compacted:
        configs["cleanup.policy"] = "compact"
    if retention_days is not None:
        configs["retention.ms"] = str(retention_days * 24 * 3600 * 1000)
    return configs | durability_configs(settings.topic_replication_factor)


def durability_configs(replication_factor: int) -> dict[str, str]:
    """``min.insync.replicas=2`` from three replicas on; nothing below (one of two brokers down
    would otherwise stop every write)."""
    return {"min.insync.replicas": "2"} if replication_factor >= 3 else {}


def is_unreachable_broker(error: BaseException) -> bool:
    """A request that failed because a broker it went to is down or cut off, not because the
    cluster refused it: worth sending again once the metadata no longer lists that broker."""
    return isinstance(error, (NodeNotReadyError, KafkaConnectionError, RequestTimedOutError))


async def ensure_named_topics(
    settings: Settings, wanted: Mapping[str, tuple[int, Mapping[str, str]]]
) -> list[str]:
    """Create those of ``wanted`` (full name: partitions, configs) that do not exist yet; an
    existing topic keeps its configs.

    A broker that just died is still in the cluster's metadata until the controller fences it
    (seconds), and the admin client sends each request to a random broker of it: a connection
    error is tried again, for up to ``TOPIC_ADMIN_RETRY_SECONDS``, instead of failing the
    worker that starts while one of three brokers is down.
    """
    deadline = time.monotonic() + TOPIC_ADMIN_RETRY_SECONDS
    while True:
        try:
            return await _ensure_named_topics_once(settings, wanted)
        except Exception as error:
            if not is_unreachable_broker(error) or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def _ensure_named_topics_once(
    settings: Settings, wanted: Mapping[str, tuple[int, Mapping[str, str]]]
) -> list[str]:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        if missing:
            # Another worker may create them at the same moment.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [
                        NewTopic(
                            name,
                            num_partitions=wanted[name][0],
                            replication_factor=settings.topic_replication_factor,
                            topic_configs=dict(wanted[name][1]),
                        )
                        for name in missing
                    ]
                )
            await _wait_until_listed(admin, missing)
        return missing
    finally:
        await admin.close()


async def _wait_until_listed(admin: AIOKafkaAdminClient, names: list[str]) -> None:
    for _ in range(100):
        if set(names) <= set(await admin.list_topics()):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"topics not visible after creation: {sorted(names)}")
