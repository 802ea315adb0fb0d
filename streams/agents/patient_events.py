"""The agents that keep per-patient state: input events, recorded reminders, and the timer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import faust

from streams.agents.intake import Handler, Intake, Outcome
from streams.agents.patient_parts import PatientAgents, build_patient_parts
from streams.agents.patient_store import PatientStore
from streams.clock import Clock, utc_now
from streams.contracts.models import DoseMissed, Event
from streams.domain.patient import PatientRules
from streams.settings import Settings
from streams.state.checkpoint import Restorer
from streams.topology import APPLY_PATIENT_EVENTS, FIRE_DUE_REMINDERS, RECORD_REMINDERS


def install_patient_agents(
    app: faust.App,
    *,
    settings: Settings,
    input_topic: faust.TopicT,
    input_topic_name: str,
    restorer: Restorer,
    reminders_topic: faust.TopicT,
    intake: Intake,
    reminders_intake: Intake,
    reminders_source: faust.TopicT,
    rules: PatientRules,
    store: PatientStore,
    notify: Handler | None = None,
    notify_batch_end: Callable[[], Awaitable[None]] | None = None,
    clock: Clock = utc_now,
) -> PatientAgents:
    """Declare the two agents and the timer, named as in ``streams.topology``.

    ``input_topic`` and ``reminders_source`` are the agents' channels (the topology's reads);
    the timer writes ``reminders_topic``. ``notify`` receives every ReminderDue and DoseMissed
    once recorded (the notifier), and ``notify_batch_end`` is called at the end of each batch:
    one agent per topic, because two agents on one topic race for its offsets.
    """
    parts = build_patient_parts(
        app,
        settings=settings,
        store=store,
        rules=rules,
        restorer=restorer,
        emitter=intake.emitter,
        reminders_topic=reminders_topic,
        input_topic_name=input_topic_name,
        clock=clock,
    )
    processor, recorder, timer = parts.processor, parts.recorder, parts.timer

    async def record(event: Event, partition: int) -> Outcome:
        outcome = await recorder.handle(event, partition)
        if isinstance(event, DoseMissed):
            timer.forget_recorded_missed(event.reminder_id)
        if notify is not None:
            # Also for a duplicate: a crash may have come between recording and notifying;
            # the notifier's ledger makes a second call harmless.
            await notify(event, partition)
        return outcome

    async def finish_recording() -> None:
        await store.write_back()
        if notify_batch_end is not None:
            await notify_batch_end()

    @app.agent(input_topic, name=APPLY_PATIENT_EVENTS.name)
    async def apply_patient_events(stream: faust.StreamT[Any]) -> None:
        await intake.run(stream, processor.handle, store.write_back)

    @app.agent(reminders_source, name=RECORD_REMINDERS.name)
    async def record_reminders(stream: faust.StreamT[Any]) -> None:
        await reminders_intake.run(stream, record, finish_recording)

    @app.timer(  # type: ignore[untyped-decorator]
        interval=settings.reminder_tick_seconds, on_leader=False, name=FIRE_DUE_REMINDERS.name
    )
    async def fire_due_reminders() -> None:
        await timer.tick()

    return parts
