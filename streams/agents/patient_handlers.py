"""The patient agents' handlers: input events applied to the state, reminders recorded in it."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from datetime import timedelta

from streams.agents.intake import Outcome, RejectedEventError
from streams.agents.patient_store import PatientStore
from streams.clock import Clock, utc_now
from streams.contracts.models import DoseMissed, Event, ReminderDue
from streams.domain.dedup import Admission, admit
from streams.domain.limits import (
    ClockSkewError,
    Limits,
    check_clock_skew,
    check_limits,
)
from streams.domain.patient import (
    PatientRules,
    PatientState,
    apply_input,
    record_missed,
    record_reminder,
)
from streams.domain.reminder_queue import DueKind, ReminderQueue
from streams.domain.schedule import AnswerResult, reminder_id
from streams.observability.metrics import Metrics
from streams.settings import Settings

log = logging.getLogger(__name__)

MILLIS_PER_DAY = 86_400_000


def limits_from(settings: Settings) -> Limits:
    """The caps on what one patient's input may make, as the settings give them."""
    return Limits(
        max_active_medications=settings.max_active_medications,
        max_times_per_schedule=settings.max_times_per_schedule,
        max_name_length=settings.max_name_length,
        max_unit_length=settings.max_unit_length,
        max_clock_skew=timedelta(seconds=settings.max_clock_skew_seconds),
    )


def on_partition(state: PatientState, partition: int) -> PatientState:
    """The state with the partition its patient's events arrive on (a copy only when new)."""
    if state.partition == partition:
        return state
    return state.model_copy(update={"partition": partition})


@dataclass
class PatientEventProcessor:
    """Applies each new input event to the patient's state and publishes what follows."""

    settings: Settings
    store: PatientStore
    rules: PatientRules
    queue: ReminderQueue
    clock: Clock = utc_now
    metrics: Metrics | None = None

    @functools.cached_property
    def limits(self) -> Limits:
        return limits_from(self.settings)

    async def handle(self, event: Event, partition: int) -> Outcome:
        now = self.clock()
        limits = self.limits
        check_clock_skew(event, now, limits)
        admission, seen = admit(
            self.store.seen(event.patient_id),
            event.event_id,
            int(event.occurred_at.timestamp() * 1000),
            retention_ms=self.settings.dedup_retention_days * MILLIS_PER_DAY,
            max_entries=self.settings.dedup_max_ids_per_patient,
            not_after_ms=int((now + limits.max_clock_skew).timestamp() * 1000),
        )
        if admission is Admission.DUPLICATE:
            return Outcome.DUPLICATE
        if admission is Admission.TOO_OLD:
            raise RejectedEventError(
                f"{event.event_type} occurred more than {self.settings.dedup_retention_days} "
                "days before the newest event of its patient (outside the de-duplication window)"
            )
        before = self.store.state(event.patient_id)
        check_limits(before, event, limits)
        effects = apply_input(before, event, self.rules, now)
        if effects.dose_answer is not None:
            if effects.dose_answer is not AnswerResult.ANSWERED:
                # A duplicate or out-of-window answer changes nothing else: this is its record.
                log.info("%s answered no slot: %s", event.event_type, effects.dose_answer.value)
            if self.metrics is not None:
                self.metrics.dose_answer(effects.dose_answer.value)
        if effects.unresolved_medication is not None:
            # By id only: a drug name can carry patient data. The operator finds the name in
            # the patient's record and adds it to the knowledge base.
            log.warning(
                "medication %s: the drug name resolves to no known ingredient; no interaction "
                "check covers it",
                effects.unresolved_medication,
            )
            if self.metrics is not None:
                self.metrics.unresolved_medication_name()
        state = on_partition(effects.state, partition)
        for medication_id in effects.replan:
            # The timer decides again from written state when a slot comes: a plan made for
            # an event that is then refused does no harm.
            self.queue.plan_reminder(
                state,
                event.patient_id,
                medication_id,
                now,
                timedelta(minutes=self.settings.reminder_catch_up_minutes),
            )
        # Staged last, so that an event whose handling fails anywhere leaves nothing staged
        # (its id not remembered either): replayed after a fix, it is applied, not skipped.
        # Its outputs are sent once the new state is written: see PatientStore.
        self.store.stage(
            event.patient_id,
            state,
            seen=seen,
            outputs=[*effects.refill_alerts, *effects.interaction_warnings],
        )
        return Outcome.PROCESSED


@dataclass
class ReminderRecorder:
    """Records published reminders and missed doses in the patient's state (timers cannot)."""

    store: PatientStore
    queue: ReminderQueue
    grace: timedelta
    limits: Limits = field(default_factory=Limits)
    clock: Clock = utc_now

    async def handle(self, event: Event, partition: int) -> Outcome:
        state = self.store.state(event.patient_id)
        if isinstance(event, ReminderDue):
            # The topic is writable by more than this worker: a forged reminder for a slot
            # far ahead would mark every slot before it as reminded, and silence them.
            if event.reminder_id != reminder_id(
                event.patient_id, event.medication_id, event.scheduled_for
            ):
                raise RejectedEventError("ReminderDue: reminder_id is not its slot's id")
            if event.scheduled_for > self.clock() + self.limits.max_clock_skew:
                raise ClockSkewError("ReminderDue: scheduled_for is ahead of the worker's clock")
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
        self.store.stage(event.patient_id, on_partition(updated, partition))
        return Outcome.PROCESSED
