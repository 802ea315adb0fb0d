"""The agents that keep per-patient state: input events, recorded reminders, and the timer."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import faust
from faust.types import TableT

from streams.agents.runtime import (
    Emitter,
    Handler,
    Intake,
    Outcome,
    RejectedEventError,
    active_partitions,
    tables_recovered,
)
from streams.contracts.models import DoseMissed, Event, ReminderDue
from streams.domain.dedup import Admission, SeenEvents, admit
from streams.domain.patient import (
    PatientRules,
    PatientState,
    apply_input,
    missed_dose_for,
    record_missed,
    record_reminder,
    reminder_for,
)
from streams.domain.reminder_queue import DueEntry, DueKind, ReminderQueue
from streams.settings import Settings

log = logging.getLogger(__name__)

MILLIS_PER_DAY = 86_400_000
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def load_state(value: Any) -> PatientState:
    return PatientState() if not value else PatientState.model_validate(value)


def dump_state(state: PatientState) -> dict[str, Any]:
    return state.model_dump(mode="json", exclude_defaults=True)


@dataclass
class PatientStore:
    """The two per-patient tables: event_ids seen, and the medication state."""

    seen_events_by_patient: TableT[str, Any]
    state_by_patient: TableT[str, Any]

    def state(self, patient_id: str) -> PatientState:
        return load_state(self.state_by_patient.get(patient_id))

    def save(self, patient_id: str, state: PatientState) -> None:
        self.state_by_patient[patient_id] = dump_state(state)


@dataclass
class PatientEventProcessor:
    """Applies each new input event to the patient's state and publishes what follows."""

    settings: Settings
    store: PatientStore
    rules: PatientRules
    emitter: Emitter
    refill_alerts_topic: faust.TopicT
    interaction_warnings_topic: faust.TopicT
    queue: ReminderQueue
    clock: Clock = utc_now

    async def handle(self, event: Event, partition: int) -> Outcome:
        seen = self.store.seen_events_by_patient.get(event.patient_id)
        admission, updated = admit(
            SeenEvents.empty() if not seen else SeenEvents(dict(seen)),
            event.event_id,
            int(event.occurred_at.timestamp() * 1000),
            retention_ms=self.settings.dedup_retention_days * MILLIS_PER_DAY,
            max_entries=self.settings.dedup_max_ids_per_patient,
        )
        if admission is Admission.DUPLICATE:
            return Outcome.DUPLICATE
        if admission is Admission.TOO_OLD:
            raise RejectedEventError(
                f"{event.event_type} occurred more than {self.settings.dedup_retention_days} "
                "days before the newest event of its patient (outside the de-duplication window)"
            )
        now = self.clock()
        effects = apply_input(self.store.state(event.patient_id), event, self.rules, now)
        state = effects.state.model_copy(update={"partition": partition})
        # Outputs are acknowledged before the event is marked as seen: after a crash between
        # the two, the event is applied again (same ids) instead of its alerts being lost.
        for alert in effects.refill_alerts:
            await self.emitter.emit(self.refill_alerts_topic, alert, wait=True)
        for warning in effects.interaction_warnings:
            await self.emitter.emit(self.interaction_warnings_topic, warning, wait=True)
        self.store.save(event.patient_id, state)
        self.store.seen_events_by_patient[event.patient_id] = updated.entries
        for medication_id in effects.replan:
            self.queue.plan_reminder(
                state,
                event.patient_id,
                medication_id,
                now,
                timedelta(minutes=self.settings.reminder_catch_up_minutes),
            )
        return Outcome.PROCESSED


@dataclass
class ReminderRecorder:
    """Records published reminders and missed doses in the patient's state (timers cannot)."""

    store: PatientStore
    queue: ReminderQueue
    grace: timedelta

    async def handle(self, event: Event, partition: int) -> Outcome:
        state = self.store.state(event.patient_id)
        if isinstance(event, ReminderDue):
            updated = record_reminder(state, event)
            if updated is state:
                return Outcome.DUPLICATE
            self.queue.push(
                event.scheduled_for + self.grace,
                DueKind.MISSED_CHECK,
                event.patient_id,
                event.medication_id,
                event.reminder_id,
            )
        elif isinstance(event, DoseMissed):
            updated = record_missed(state, event)
            if updated == state:
                return Outcome.DUPLICATE
        else:  # the intake admits only the two types above on this topic
            raise TypeError(type(event).__name__)
        self.store.save(event.patient_id, updated.model_copy(update={"partition": partition}))
        return Outcome.PROCESSED


@dataclass
class ReminderTimer:
    """Runs on every worker: emits what is due for the patients of its active partitions."""

    app: faust.App
    settings: Settings
    store: PatientStore
    emitter: Emitter
    reminders_topic: faust.TopicT
    input_topic_name: str
    queue: ReminderQueue
    clock: Clock = utc_now
    _planned_generation: int | None = None
    # Missed doses emitted but not yet recorded by the recorder: never emitted twice meanwhile.
    _missed_pending: set[str] = field(default_factory=set)

    @property
    def grace(self) -> timedelta:
        return timedelta(minutes=self.settings.reminder_grace_minutes)

    @property
    def catch_up(self) -> timedelta:
        return timedelta(minutes=self.settings.reminder_catch_up_minutes)

    def ready(self) -> bool:
        """Partitions assigned and tables recovered (until then the tables are incomplete)."""
        return tables_recovered(self.app)

    def active_partitions(self) -> set[int]:
        return active_partitions(self.app, self.input_topic_name)

    def replan_if_reassigned(self) -> None:
        generation = self.app.consumer_generation_id
        if generation == self._planned_generation:
            return
        active = self.active_partitions()
        patients = []
        for patient_id, value in self.store.state_by_patient.items():
            state = load_state(value)
            if state.partition in active:
                patients.append((patient_id, state))
        self.queue.rebuild(patients, self.clock(), self.catch_up, self.grace)
        self._missed_pending.clear()
        self._planned_generation = generation
        log.info(
            "reminder plan rebuilt: partitions=%s patients=%d entries=%d",
            sorted(active),
            len(patients),
            len(self.queue),
        )

    async def tick(self) -> None:
        if not self.ready():
            return
        try:
            self.replan_if_reassigned()
        except Exception:
            # An exception escaping a Faust timer stops the worker; retry on the next tick.
            log.exception("rebuilding the reminder plan failed; retrying")
            return
        now = self.clock()
        for entry in self.queue.pop_due(now):
            try:
                await self._fire(entry, now)
            except Exception:
                # Put it back: a failed send must not lose a reminder.
                log.exception("reminder entry failed; retrying on the next tick")
                self.queue.push(
                    entry.due_at,
                    entry.kind,
                    entry.patient_id,
                    entry.medication_id,
                    entry.reminder_id,
                )
                return

    async def _fire(self, entry: DueEntry, now: datetime) -> None:
        state = self.store.state(entry.patient_id)
        if state.partition not in self.active_partitions():
            return  # moved to another worker
        if entry.kind is DueKind.REMINDER:
            reminder = reminder_for(
                state, entry.patient_id, entry.medication_id, entry.due_at, entry.reminder_id
            )
            if reminder is not None:
                await self.emitter.emit(self.reminders_topic, reminder)
            # The next slot of this schedule, strictly after the one just handled.
            self.queue.plan_reminder(
                state.model_copy(
                    update={
                        "schedules": {
                            **state.schedules,
                            **(
                                {
                                    entry.medication_id: state.schedules[
                                        entry.medication_id
                                    ].model_copy(update={"last_emitted": entry.due_at})
                                }
                                if entry.medication_id in state.schedules
                                else {}
                            ),
                        }
                    }
                ),
                entry.patient_id,
                entry.medication_id,
                now,
                self.catch_up,
            )
        elif entry.reminder_id not in self._missed_pending:
            missed = missed_dose_for(state, entry.patient_id, entry.reminder_id, self.grace)
            if missed is not None:
                await self.emitter.emit(self.reminders_topic, missed)
                self._missed_pending.add(entry.reminder_id)

    def forget_recorded_missed(self, reminder_id: str) -> None:
        self._missed_pending.discard(reminder_id)


def declare_patient_tables(app: faust.App, settings: Settings) -> PatientStore:
    """The per-patient tables. They declare no key or value type: records are plain JSON
    (Faust's default codec), validated into PatientState when read."""
    return PatientStore(
        seen_events_by_patient=app.Table(
            "seen-events-by-patient", default=None, partitions=settings.topic_partitions
        ),
        state_by_patient=app.Table(
            "state-by-patient", default=None, partitions=settings.topic_partitions
        ),
    )


@dataclass(frozen=True)
class PatientAgents:
    """What install_patient_agents made, for the app and for tests."""

    store: PatientStore
    processor: PatientEventProcessor
    recorder: ReminderRecorder
    timer: ReminderTimer


def install_patient_agents(
    app: faust.App,
    *,
    settings: Settings,
    input_topic: faust.TopicT,
    input_topic_name: str,
    reminders_topic: faust.TopicT,
    refill_alerts_topic: faust.TopicT,
    interaction_warnings_topic: faust.TopicT,
    intake: Intake,
    reminders_intake: Intake,
    rules: PatientRules,
    store: PatientStore,
    notify: Handler | None = None,
    clock: Clock = utc_now,
) -> PatientAgents:
    """Declare the two agents and the timer.

    ``notify`` receives every ReminderDue and DoseMissed once recorded (the notifier): one
    agent per topic, because two agents on one topic race for its offsets.
    """
    queue = ReminderQueue()
    processor = PatientEventProcessor(
        settings=settings,
        store=store,
        rules=rules,
        emitter=intake.emitter,
        refill_alerts_topic=refill_alerts_topic,
        interaction_warnings_topic=interaction_warnings_topic,
        queue=queue,
        clock=clock,
    )
    recorder = ReminderRecorder(store=store, queue=queue, grace=rules.grace)
    timer = ReminderTimer(
        app=app,
        settings=settings,
        store=store,
        emitter=intake.emitter,
        reminders_topic=reminders_topic,
        input_topic_name=input_topic_name,
        queue=queue,
        clock=clock,
    )

    async def record(event: Event, partition: int) -> Outcome:
        outcome = await recorder.handle(event, partition)
        if isinstance(event, DoseMissed):
            timer.forget_recorded_missed(event.reminder_id)
        if notify is not None:
            # Also for a duplicate: a crash may have come between recording and notifying;
            # the notifier's ledger makes a second call harmless.
            await notify(event, partition)
        return outcome

    @app.agent(input_topic, name="apply-patient-events")
    async def apply_patient_events(stream: faust.StreamT[Any]) -> None:
        await intake.run(stream, processor.handle)

    @app.agent(reminders_topic, name="record-reminders")
    async def record_reminders(stream: faust.StreamT[Any]) -> None:
        await reminders_intake.run(stream, record)

    @app.timer(interval=settings.reminder_tick_seconds, on_leader=False)  # type: ignore[untyped-decorator]
    async def fire_due_reminders() -> None:
        await timer.tick()

    return PatientAgents(store=store, processor=processor, recorder=recorder, timer=timer)
