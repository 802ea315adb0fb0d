"""The patient agents' parts, built from the settings: the store, the handlers, the timer."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta

import faust

from streams.agents.emitter import Emitter
from streams.agents.patient_handlers import PatientEventProcessor, ReminderRecorder
from streams.agents.patient_store import PatientStore
from streams.agents.reminder_timer import ReminderTimer
from streams.agents.tables import declare_table
from streams.clock import Clock, utc_now
from streams.contracts.models import InteractionWarning, RefillAlert
from streams.domain.patient import PatientRules
from streams.domain.reminder_queue import ReminderQueue
from streams.settings import Settings
from streams.state.checkpoint import Restorer


def declare_patient_tables(
    app: faust.App,
    settings: Settings,
    emitter: Emitter,
    *,
    refill_alerts_topic: faust.TopicT,
    interaction_warnings_topic: faust.TopicT,
) -> PatientStore:
    """The per-patient table."""
    return PatientStore(
        app=app,
        table=declare_table(app, settings, "state-by-patient"),
        emitter=emitter,
        max_record_bytes=settings.max_patient_record_bytes,
        cached_patients=settings.state_cache_patients,
        output_topics={
            RefillAlert.EVENT_TYPE: refill_alerts_topic,
            InteractionWarning.EVENT_TYPE: interaction_warnings_topic,
        },
    )


@dataclass(frozen=True)
class PatientAgents:
    """What install_patient_agents made, for the app and for tests."""

    store: PatientStore
    processor: PatientEventProcessor
    recorder: ReminderRecorder
    timer: ReminderTimer


def build_patient_parts(
    app: faust.App,
    *,
    settings: Settings,
    store: PatientStore,
    rules: PatientRules,
    restorer: Restorer,
    emitter: Emitter,
    reminders_topic: faust.TopicT,
    input_topic_name: str,
    clock: Clock = utc_now,
) -> PatientAgents:
    """The handlers and the timer of the patient agents, sharing one store and one queue."""
    queue = ReminderQueue()
    # The answer window and how long answers are kept follow the settings, whoever built the
    # rules (the grace window comes with them).
    rules = replace(
        rules,
        early=timedelta(minutes=settings.dose_answer_early_minutes),
        catch_up=timedelta(minutes=settings.reminder_catch_up_minutes),
    )
    processor = PatientEventProcessor(
        settings=settings,
        store=store,
        rules=rules,
        queue=queue,
        clock=clock,
        metrics=emitter.metrics,
    )
    recorder = ReminderRecorder(
        store=store, queue=queue, grace=rules.grace, limits=processor.limits, clock=clock
    )
    timer = ReminderTimer(
        app=app,
        settings=settings,
        store=store,
        emitter=emitter,
        reminders_topic=reminders_topic,
        input_topic_name=input_topic_name,
        queue=queue,
        restorer=restorer,
        clock=clock,
    )

    store.on_written.append(timer.record_written)
    return PatientAgents(store=store, processor=processor, recorder=recorder, timer=timer)
