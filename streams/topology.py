"""The topology as data: which agent reads which topic and writes which, and the timers."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from streams.topics import (
    ADMIN_ALERTS,
    DEAD_LETTERS,
    EVENT_INPUT_TOPICS,
    FHIR_RESOURCES,
    INTERACTION_WARNINGS,
    MEDICATION_EVENTS,
    MEDICATION_REMINDERS,
    NOTIFICATION_RELEASES,
    NOTIFICATIONS,
    REFILL_ALERTS,
    SCHEDULE_EVENTS,
    TopicSpec,
)

# The two changelog-backed tables; their changelog topics are Faust's, named after them.
PATIENT_STATE_TABLE = "state-by-patient"
DELIVERY_LEDGER_TABLE = "deliveries-by-notification"


class AgentKind(StrEnum):
    """What an agent is for."""

    # Takes upstream's events: the contract's input topics.
    INTAKE = "intake"
    # Writes into a table what medstream itself published (a timer cannot write tables).
    RECORDER = "recorder"
    # Plans the deliveries of alerts to the patients' channels.
    NOTIFIER = "notifier"
    # Carries out what a timer decided, on a topic only that timer writes.
    TIMER_DRIVEN = "timer-driven"


@dataclass(frozen=True)
class AgentSpec:
    """One agent: its name in ``@app.agent(name=...)``, the topics it reads and writes."""

    name: str
    kind: AgentKind
    reads: tuple[TopicSpec, ...]
    # Every topic it may publish to, directly or through the deliveries it starts.
    writes: tuple[TopicSpec, ...]
    tables: tuple[str, ...]
    # Whether `medstream pause --agent` (and /admin/pause) may hold its topics.
    pausable: bool = True

    @property
    def read_names(self) -> tuple[str, ...]:
        """The base names of the topics it reads: what pausing it pauses."""
        return tuple(spec.base_name for spec in self.reads)


@dataclass(frozen=True)
class TimerSpec:
    """One timer: its name in ``@app.timer(name=...)`` and the topics it writes.

    Every timer runs on every worker (``on_leader=False``): each scans only the state of its
    own active partitions.
    """

    name: str
    writes: tuple[TopicSpec, ...]
    tables: tuple[str, ...]
    # The setting its interval follows, or None for a fixed one.
    interval_setting: str | None = None


# What a delivery writes: its outcome, and an AdminAlert when it failed.
_DELIVERY_OUTPUTS = (NOTIFICATIONS, ADMIN_ALERTS)
# What the patient store sends once a patient's record is written: the outbox is shared, so
# whoever writes the store sends the alerts staged in it.
_PATIENT_OUTPUTS = (REFILL_ALERTS, INTERACTION_WARNINGS)

APPLY_PATIENT_EVENTS = AgentSpec(
    "apply-patient-events",
    AgentKind.INTAKE,
    reads=EVENT_INPUT_TOPICS,
    writes=(*_PATIENT_OUTPUTS, DEAD_LETTERS),
    tables=(PATIENT_STATE_TABLE,),
)
RECORD_REMINDERS = AgentSpec(
    "record-reminders",
    AgentKind.RECORDER,
    reads=(MEDICATION_REMINDERS,),
    writes=(*_PATIENT_OUTPUTS, *_DELIVERY_OUTPUTS, DEAD_LETTERS),
    tables=(PATIENT_STATE_TABLE, DELIVERY_LEDGER_TABLE),
)
# FHIR resources become contract events on the input topics, keyed by patient: the patient
# agent then applies them like any publisher's, de-duplicated by their derived event_ids.
MAP_FHIR_RESOURCES = AgentSpec(
    "map-fhir-resources",
    AgentKind.INTAKE,
    reads=(FHIR_RESOURCES,),
    writes=(MEDICATION_EVENTS, SCHEDULE_EVENTS, DEAD_LETTERS),
    tables=(),
)
NOTIFY_ALERTS = AgentSpec(
    "notify-alerts",
    AgentKind.NOTIFIER,
    reads=(REFILL_ALERTS, INTERACTION_WARNINGS),
    writes=(*_DELIVERY_OUTPUTS, DEAD_LETTERS),
    tables=(DELIVERY_LEDGER_TABLE,),
)
RECORD_DELIVERIES = AgentSpec(
    "record-deliveries",
    AgentKind.RECORDER,
    reads=(NOTIFICATIONS,),
    writes=(DEAD_LETTERS,),
    tables=(DELIVERY_LEDGER_TABLE,),
)
RELEASE_DEFERRED_NOTIFICATIONS = AgentSpec(
    "release-deferred-notifications",
    AgentKind.TIMER_DRIVEN,
    reads=(NOTIFICATION_RELEASES,),
    writes=(*_DELIVERY_OUTPUTS, DEAD_LETTERS),
    tables=(DELIVERY_LEDGER_TABLE,),
)
AGENTS: tuple[AgentSpec, ...] = (
    APPLY_PATIENT_EVENTS,
    MAP_FHIR_RESOURCES,
    RECORD_REMINDERS,
    NOTIFY_ALERTS,
    RECORD_DELIVERIES,
    RELEASE_DEFERRED_NOTIFICATIONS,
)

# Also sends again the alerts a crashed worker left in the outboxes of its new partitions.
FIRE_DUE_REMINDERS = TimerSpec(
    "fire-due-reminders",
    writes=(MEDICATION_REMINDERS, *_PATIENT_OUTPUTS),
    tables=(PATIENT_STATE_TABLE,),
    interval_setting="MEDSTREAM_REMINDER_TICK_SECONDS",
)
# Releases deferred deliveries, prunes the ledger and reports deliveries cut off by a crash.
RESUME_NOTIFICATIONS = TimerSpec(
    "resume-notifications",
    writes=(NOTIFICATION_RELEASES, *_DELIVERY_OUTPUTS),
    tables=(DELIVERY_LEDGER_TABLE,),
)
# Liveness: samples the assigned partitions' positions, so that stalls show between requests.
SAMPLE_PARTITION_PROGRESS = TimerSpec(
    "sample-partition-progress",
    writes=(),
    tables=(),
    interval_setting="MEDSTREAM_PARTITION_STALL_SECONDS",
)
TIMERS: tuple[TimerSpec, ...] = (
    FIRE_DUE_REMINDERS,
    RESUME_NOTIFICATIONS,
    SAMPLE_PARTITION_PROGRESS,
)


def agent(name: str) -> AgentSpec:
    """The agent called ``name``; ValueError naming the agents otherwise."""
    for spec in AGENTS:
        if spec.name == name:
            return spec
    raise ValueError(f"no agent {name!r}; agents: {', '.join(spec.name for spec in AGENTS)}")


def consumed_topics(agents: Iterable[AgentSpec] = AGENTS) -> tuple[str, ...]:
    """The base names of the topics the agents read, in order: the consumer group's."""
    return tuple(dict.fromkeys(topic for spec in agents for topic in spec.read_names))


def pausable_topics() -> tuple[str, ...]:
    """The base names of the topics the pausable agents read, in order."""
    return consumed_topics(spec for spec in AGENTS if spec.pausable)


def pause_targets(topics: Iterable[str], agent_names: Iterable[str]) -> list[str]:
    """The topics (base names) that pausing these topics and agents pauses, in order.

    Raises ValueError for a topic no pausable agent reads or an unknown or unpausable agent.
    """
    pausable = pausable_topics()
    wanted: list[str] = []
    for topic in topics:
        if topic not in pausable:
            raise ValueError(f"no agent consumes {topic!r}; pausable: {', '.join(pausable)}")
        wanted.append(topic)
    for name in agent_names:
        spec = agent(name)
        if not spec.pausable:
            raise ValueError(f"agent {name!r} cannot be paused")
        wanted.extend(spec.read_names)
    return list(dict.fromkeys(wanted))


def render_markdown() -> str:
    """The README's table of agents and timers: what each reads and writes."""

    def names(specs: Iterable[TopicSpec]) -> str:
        return ", ".join(f"`{spec.base_name}`" for spec in specs)

    def tables(found: Iterable[str]) -> str:
        return ", ".join(f"`{table}`" for table in found)

    lines = [
        "| agent | kind | reads | writes | tables |",
        "|---|---|---|---|---|",
        *(
            f"| `{spec.name}` | {spec.kind} | {names(spec.reads)} | {names(spec.writes)} "
            f"| {tables(spec.tables)} |"
            for spec in AGENTS
        ),
        *(
            f"| `{spec.name}` | timer | - | {names(spec.writes) or '-'} "
            f"| {tables(spec.tables) or '-'} |"
            for spec in TIMERS
        ),
    ]
    return "\n".join(lines) + "\n"
