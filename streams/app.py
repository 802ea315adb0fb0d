"""The Faust application factory: one app, its topics and its agents, built from Settings."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import faust

from streams.agents.emitter import Emitter
from streams.agents.fhir_intake import FhirIntake, install_fhir_intake
from streams.agents.intake import Intake
from streams.agents.notifier import Notifier, build_channels, install_notifier
from streams.agents.patient_events import install_patient_agents
from streams.agents.patient_parts import PatientAgents, declare_patient_tables
from streams.agents.tables import declare_table
from streams.contracts.codecs import EventDecoder, EventEncoder
from streams.contracts.registry import SchemaRegistry
from streams.contracts.schemas import default_catalog
from streams.domain.interactions import InteractionKnowledgeBase
from streams.domain.patient import PatientRules
from streams.faust_transport import active_partitions, install_transport
from streams.fhir import FhirRules
from streams.kafka_client import ssl_context
from streams.observability.liveness import Liveness, crash_aware_supervisor
from streams.observability.metrics import Metrics
from streams.observability.web import default_readiness, install_liveness, install_web
from streams.ops.admin_http import ADMIN_BODY_MAX_BYTES, install_admin
from streams.ops.control import install_control
from streams.settings import SecurityProtocol, Settings
from streams.state.checkpoint import Restorer
from streams.stats import PipelineStats
from streams.topics import (
    ADMIN_ALERTS,
    AUDIT_LOG,
    DEAD_LETTERS,
    FHIR_RESOURCES,
    INTERACTION_WARNINGS,
    MEDICATION_EVENTS,
    MEDICATION_REMINDERS,
    NOTIFICATION_RELEASES,
    NOTIFICATIONS,
    PATIENT_EVENTS,
    REFILL_ALERTS,
    SCHEDULE_EVENTS,
    TopicSpec,
    topic_names,
)
from streams.topology import (
    APPLY_PATIENT_EVENTS,
    DELIVERY_LEDGER_TABLE,
    MAP_FHIR_RESOURCES,
    NOTIFY_ALERTS,
    RECORD_DELIVERIES,
    RECORD_REMINDERS,
    RELEASE_DEFERRED_NOTIFICATIONS,
    AgentSpec,
    pausable_topics,
)


@dataclass(frozen=True)
class Topics:
    """The app's Faust topic objects, one per topic of the contract.

    Keys and values travel as raw bytes: decoding is medstream's own step, so that an event that
    cannot be decoded still reaches an agent and can be dead-lettered with its reason.
    """

    medication_events_topic: faust.TopicT
    schedule_events_topic: faust.TopicT
    patient_events_topic: faust.TopicT
    medication_reminders_topic: faust.TopicT
    refill_alerts_topic: faust.TopicT
    interaction_warnings_topic: faust.TopicT
    notifications_topic: faust.TopicT
    dead_letters_topic: faust.TopicT
    admin_alerts_topic: faust.TopicT
    audit_log_topic: faust.TopicT


@dataclass(frozen=True)
class Medstream:
    """A configured medstream application."""

    app: faust.App
    topics: Topics
    settings: Settings
    stats: PipelineStats
    patients: PatientAgents
    notifier: Notifier
    metrics: Metrics
    liveness: Liveness
    restorer: Restorer


def _credentials(settings: Settings) -> Any:
    context = ssl_context(settings)
    if settings.security_protocol in (SecurityProtocol.SASL_PLAINTEXT, SecurityProtocol.SASL_SSL):
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password.get_secret_value() if settings.sasl_password else None,
            mechanism=settings.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def create_app(settings: Settings) -> Medstream:
    """Build the Faust app, its topics and its agents from the settings."""
    broker_urls = ";".join(f"kafka://{server}" for server in settings.bootstrap_server_list)
    liveness = Liveness(
        stall_seconds=settings.partition_stall_seconds,
        crash_window_seconds=settings.agent_crash_window_seconds,
    )
    app = faust.App(
        settings.app_id,
        broker=broker_urls,
        broker_credentials=_credentials(settings),
        store=settings.store_url,
        datadir=str(settings.data_dir),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        web_enabled=settings.web_enabled,
        web_host=settings.web_host,
        # Faust binds web_bind (default 0.0.0.0); web_host only names the server in links.
        web_bind=settings.web_host,
        web_port=settings.web_port,
        # Faust's own pages read tables (patient data), the cluster's topology, sensor
        # counters and the service graph, without authentication: none of them is served.
        web_tables_enabled=False,
        web_router_enabled=False,
        web_stats_enabled=False,
        web_graph_enabled=False,
        web_metrics_enabled=False,
        # aiohttp refuses larger bodies with 413 before a view reads them.
        web_application_options={"client_max_size": ADMIN_BODY_MAX_BYTES},
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_session_timeout=settings.consumer_session_timeout,
        broker_heartbeat_interval=min(3.0, settings.consumer_session_timeout / 3),
        autodiscover=False,
        # Faust's own strategy (restart the crashed actor), telling /ready and the worker.
        agent_supervisor=crash_aware_supervisor(liveness),
    )
    install_transport(app)

    declared: dict[TopicSpec, faust.TopicT] = {}

    def declare(spec: TopicSpec) -> faust.TopicT:
        declared[spec] = app.topic(
            settings.topic_name(spec.base_name),
            key_type=bytes,
            value_type=bytes,
            partitions=settings.topic_partitions,
        )
        return declared[spec]

    def reads(agent: AgentSpec) -> faust.TopicT:
        """The channel of ``agent``: the topics the topology says it reads."""
        if len(agent.reads) == 1:
            return declared[agent.reads[0]]
        return app.topic(
            *topic_names(settings, agent.reads),
            key_type=bytes,
            value_type=bytes,
            partitions=settings.topic_partitions,
        )

    declare(FHIR_RESOURCES)
    topics = Topics(
        medication_events_topic=declare(MEDICATION_EVENTS),
        schedule_events_topic=declare(SCHEDULE_EVENTS),
        patient_events_topic=declare(PATIENT_EVENTS),
        medication_reminders_topic=declare(MEDICATION_REMINDERS),
        refill_alerts_topic=declare(REFILL_ALERTS),
        interaction_warnings_topic=declare(INTERACTION_WARNINGS),
        notifications_topic=declare(NOTIFICATIONS),
        dead_letters_topic=declare(DEAD_LETTERS),
        admin_alerts_topic=declare(ADMIN_ALERTS),
        audit_log_topic=declare(AUDIT_LOG),
    )
    catalog = default_catalog()
    registry = (
        SchemaRegistry(settings.schema_registry_url, settings.schema_registry_timeout)
        if settings.schema_registry_url
        else None
    )
    metrics = Metrics()
    emitter = Emitter(EventEncoder(catalog, settings.output_encoding), metrics)
    intake = Intake(
        decoder=EventDecoder(catalog, registry),
        emitter=emitter,
        dead_letters_topic=topics.dead_letters_topic,
        allowed_types={
            settings.topic_name(spec.base_name): spec.event_types
            for spec in APPLY_PATIENT_EVENTS.reads
        },
        metrics=metrics,
        registry=registry,
        agent=APPLY_PATIENT_EVENTS.name,
        batch_max_events=settings.batch_max_events,
        batch_window_seconds=settings.batch_window_ms / 1000,
        dead_letter_max_value_bytes=settings.dead_letter_max_value_bytes,
    )

    def intake_for(agent: AgentSpec) -> Intake:
        return replace(
            intake,
            agent=agent.name,
            allowed_types={
                settings.topic_name(spec.base_name): spec.event_types for spec in agent.reads
            },
        )

    store = declare_patient_tables(
        app,
        settings,
        emitter,
        refill_alerts_topic=topics.refill_alerts_topic,
        interaction_warnings_topic=topics.interaction_warnings_topic,
    )
    ledger = declare_table(app, settings, DELIVERY_LEDGER_TABLE)
    input_topic_name = settings.topic_name(MEDICATION_EVENTS.base_name)
    restorer = Restorer(
        tables=(store.table, ledger),
        generation=lambda: app.consumer_generation_id,
        active_partitions=lambda: active_partitions(app, input_topic_name),
    )
    restorer.on_restored.append(metrics.restored)
    intake = replace(intake, ready=restorer.ready)
    releases_topic = declare(NOTIFICATION_RELEASES)
    notifier = Notifier(
        app=app,
        settings=settings,
        patient_state=store.state,
        restorer=restorer,
        ledger=ledger,
        emitter=emitter,
        notifications_topic=topics.notifications_topic,
        admin_alerts_topic=topics.admin_alerts_topic,
        releases_topic=releases_topic,
        input_topic_name=input_topic_name,
        channels=build_channels(settings),
    )
    install_notifier(
        app,
        settings=settings,
        notifier=notifier,
        alerts_topic=reads(NOTIFY_ALERTS),
        notifications_source=reads(RECORD_DELIVERIES),
        releases_source=reads(RELEASE_DEFERRED_NOTIFICATIONS),
        notifications_intake=intake_for(RECORD_DELIVERIES),
        alerts_intake=intake_for(NOTIFY_ALERTS),
        releases_intake=intake_for(RELEASE_DEFERRED_NOTIFICATIONS),
    )
    knowledge_base = InteractionKnowledgeBase.load_default()
    if settings.interactions_ddinter_csv is not None:
        knowledge_base = knowledge_base.with_ddinter_csv(settings.interactions_ddinter_csv)
    patients = install_patient_agents(
        app,
        settings=settings,
        input_topic=reads(APPLY_PATIENT_EVENTS),
        input_topic_name=input_topic_name,
        restorer=restorer,
        reminders_topic=topics.medication_reminders_topic,
        reminders_source=reads(RECORD_REMINDERS),
        intake=intake,
        reminders_intake=intake_for(RECORD_REMINDERS),
        store=store,
        notify=notifier.handle,
        notify_batch_end=notifier.start_planned,
        rules=PatientRules(
            knowledge_base=knowledge_base,
            grace=timedelta(minutes=settings.reminder_grace_minutes),
        ),
    )
    install_fhir_intake(
        app,
        reads(MAP_FHIR_RESOURCES),
        FhirIntake(
            rules=FhirRules.from_settings(settings),
            emitter=emitter,
            intake=intake_for(MAP_FHIR_RESOURCES),
            topics=declared,
            metrics=metrics,
        ),
    )
    install_control(app, settings, pausable_topics())
    liveness.agents.update(app.agents)
    install_liveness(app, liveness)
    tables = {table.name: table for table in restorer.tables}
    install_web(app, metrics, default_readiness(app, restorer, liveness), tables, liveness)
    install_admin(app, settings)
    return Medstream(
        app=app,
        topics=topics,
        settings=settings,
        stats=PipelineStats(metrics),
        patients=patients,
        notifier=notifier,
        metrics=metrics,
        liveness=liveness,
        restorer=restorer,
    )
