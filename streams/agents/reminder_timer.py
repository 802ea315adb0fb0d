"""The reminder timer: what is due for the patients of the active partitions, decided and sent."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import faust

from streams.agents.emitter import Emitter, Encoded
from streams.agents.patient_store import PatientStore
from streams.clock import Clock, utc_now
from streams.contracts.models import Event
from streams.domain.reminder_decide import (
    Drop,
    DueDecision,
    MarkMissedPending,
    PlanNext,
    SendReminder,
    Skip,
    decide_due,
    decide_fire,
    fired_late,
    follow_up,
)
from streams.domain.reminder_queue import DueEntry, DueKind, ReminderQueue
from streams.faust_transport import active_partitions, tables_recovered
from streams.settings import Settings
from streams.state.checkpoint import Restorer

log = logging.getLogger(__name__)


# Due entries are decided (and what they send encoded) this far ahead from the written state,
# so that a crowd of reminders due in the same second (everyone's 08:00 dose) costs only its
# batched sends when the second comes.
PREPARE_AHEAD = timedelta(minutes=2)
# Share of each tick the timer may spend deciding entries ahead; the agents need the rest.
PREPARE_SHARE = 0.4
# Due entries planned on between two yields to the event loop.
FOLLOW_UP_SLICE = 2_000


@dataclass(eq=False)
class _Prepared:
    """A due entry decided ahead of its time; valid until the patient's record is written."""

    entry: DueEntry
    decision: DueDecision
    # What the decision sends, encoded when it was decided (None: nothing to send).
    record: Encoded | None = None
    stale: bool = False


@dataclass
class ReminderTimer:
    """Runs on every worker: emits what is due for the patients of its active partitions.

    Entries due within ``PREPARE_AHEAD`` are decided and encoded early, in a bounded share of
    each tick; when they come due they are sent in one batch per partition. A write of the
    patient's record in between makes a decided entry stale: it goes back to the queue (its
    encoded record dropped) and is decided again.
    """

    app: faust.App
    settings: Settings
    store: PatientStore
    emitter: Emitter
    reminders_topic: faust.TopicT
    input_topic_name: str
    queue: ReminderQueue
    restorer: Restorer
    clock: Clock = utc_now
    _planned_generation: int | None = None
    # Missed doses emitted but not yet recorded by the recorder: never emitted twice meanwhile.
    _missed_pending: set[str] = field(default_factory=set)
    # Entries decided ahead, by due time, and by patient (to mark them stale).
    _prepared: list[tuple[datetime, int, _Prepared]] = field(default_factory=list)
    _prepared_by_patient: dict[str, list[_Prepared]] = field(default_factory=dict)
    _prepared_sequence: Iterator[int] = field(default_factory=itertools.count)

    @property
    def grace(self) -> timedelta:
        return timedelta(minutes=self.settings.reminder_grace_minutes)

    @property
    def catch_up(self) -> timedelta:
        return timedelta(minutes=self.settings.reminder_catch_up_minutes)

    async def ready(self) -> bool:
        """Partitions assigned and their tables restored (until then they are incomplete)."""
        if not tables_recovered(self.app):
            return False
        try:
            await self.restorer.ready()
        except Exception as error:
            log.error(
                "restoring the tables failed (%s); retrying on the next tick", type(error).__name__
            )
            return False
        return True

    def active_partitions(self) -> set[int]:
        return active_partitions(self.app, self.input_topic_name)

    def record_written(self, patient_id: str) -> None:
        """The patient's record changed: what was decided from the old one is decided again
        (back in the queue, to be decided ahead again if there is time)."""
        for prepared in self._prepared_by_patient.pop(patient_id, ()):
            prepared.stale = True
            self._requeue(prepared.entry)

    async def replan_if_reassigned(self) -> list[Event] | None:
        """Rebuild the plan after a rebalance; if it did, returns what the outboxes of its
        patients still hold, to send again.

        The agents, /ready and the other timers get the loop every ``FOLLOW_UP_SLICE``
        patients: a million patients take tens of seconds to plan.
        """
        generation = self.app.consumer_generation_id
        if generation == self._planned_generation:
            return None
        active = self.active_partitions()
        unsent: list[Event] = []
        now = self.clock()
        self.queue.clear()
        patients = self.store.patients_of(active, unsent)
        for index, (patient_id, state) in enumerate(patients):
            self.queue.plan_patient(state, patient_id, now, self.catch_up, self.grace)
            if index % FOLLOW_UP_SLICE == FOLLOW_UP_SLICE - 1:
                await asyncio.sleep(0)
        self._prepared.clear()
        self._prepared_by_patient.clear()
        self._missed_pending.clear()
        self._planned_generation = generation
        log.info(
            "reminder plan rebuilt: partitions=%s entries=%d outbox outputs=%d",
            sorted(active),
            len(self.queue),
            len(unsent),
        )
        return unsent

    async def tick(self) -> None:
        if not await self.ready():
            return
        try:
            unsent = await self.replan_if_reassigned()
            if unsent:
                await self.store.send_again(unsent)
                log.info("sent %d outputs again from outboxes after a rebalance", len(unsent))
        except Exception:
            # An exception escaping a Faust timer stops the worker; retry on the next tick.
            log.exception("rebuilding the reminder plan failed; retrying")
            self._planned_generation = None
            return
        now = self.clock()
        if self._prepared:
            wait = (self._prepared[0][0] - now).total_seconds()
            if 0 < wait < self.settings.reminder_tick_seconds:
                # Due before the next tick: fired at its time, not up to a tick after it.
                await asyncio.sleep(wait)
                now = self.clock()
        started = time.perf_counter()
        active = self.active_partitions()
        due: list[_Prepared] = []
        while self._prepared and self._prepared[0][0] <= now:
            prepared = heapq.heappop(self._prepared)[2]
            if not prepared.stale:  # else it is back in the queue
                due.append(prepared)
        undecided = self.queue.pop_due(now)
        try:
            due.extend(self._decide(entry) for entry in undecided)
        except Exception:
            log.exception("deciding due reminder entries failed; retrying on the next tick")
            for prepared in due:
                self._forget_prepared(prepared)
            # Each entry once: those decided here are in both lists.
            entries = {id(each): each for each in (*(p.entry for p in due), *undecided)}
            for entry in entries.values():
                self._requeue(entry)
            return
        try:
            await self._fire(due, now, active)
        except Exception:
            # An exception escaping a Faust timer stops the worker.
            log.exception("firing due reminder entries failed")
        self._prepare_ahead(now, started)

    def _prepare_ahead(self, now: datetime, started: float) -> None:
        budget = self.settings.reminder_tick_seconds * PREPARE_SHARE
        horizon = now + PREPARE_AHEAD
        while time.perf_counter() - started < budget:
            entry = self.queue.pop_next(horizon)
            if entry is None:
                return
            prepared = self._decide(entry)
            heapq.heappush(self._prepared, (entry.due_at, next(self._prepared_sequence), prepared))
            self._prepared_by_patient.setdefault(entry.patient_id, []).append(prepared)

    def _decide(self, entry: DueEntry) -> _Prepared:
        decision = decide_due(
            entry, self.store.written_state(entry.patient_id), self.grace, self.catch_up
        )
        record = (
            None
            if isinstance(decision.send, Skip)
            else self.emitter.encode(self.reminders_topic, decision.send.event)
        )
        return _Prepared(entry, decision, record)

    async def _fire(self, due: Sequence[_Prepared], now: datetime, active: set[int]) -> None:
        """Send what is due in batches, then plan what follows each entry sent (or with
        nothing to send). An entry whose send failed goes back to the queue: a failed send
        must not lose a reminder (sent again, it has the same id, which consumers de-duplicate)."""
        to_send: list[_Prepared] = []
        for prepared in due:
            self._forget_prepared(prepared)
            action = decide_fire(prepared.entry, prepared.decision, active, self._missed_pending)
            if isinstance(action, Skip):
                self._follow(prepared, now, sent=False)
            elif not isinstance(action, Drop):
                to_send.append(prepared)
        if not to_send:
            return
        acknowledged = await self._send(to_send)
        acknowledged_at = self.clock()
        for index, (prepared, sent) in enumerate(zip(to_send, acknowledged, strict=True)):
            if sent:
                send = prepared.decision.send
                if isinstance(send, SendReminder):
                    self.emitter.metrics.observe_reminder_lateness(
                        (acknowledged_at - send.event.scheduled_for).total_seconds()
                    )
                self._follow(prepared, now, sent=True)
            else:
                self._requeue(prepared.entry)
            if index % FOLLOW_UP_SLICE == FOLLOW_UP_SLICE - 1:
                # A crowd's follow-ups take a while: the agents (recording and notifying these
                # very reminders) get the loop in between.
                await asyncio.sleep(0)

    async def _send(self, prepared: Sequence[_Prepared]) -> list[bool]:
        """Whether the broker acknowledged each entry's record."""
        records = [each.record for each in prepared if each.record is not None]
        failed: set[int] = set()
        try:
            batches = await self.emitter.emit_encoded_batch(self.reminders_topic, records)
        except Exception:
            log.exception(
                "sending %d reminder records failed; retrying on the next tick", len(records)
            )
            return [False] * len(prepared)
        for batch in batches:
            try:
                await batch.acknowledged
            except Exception as error:
                log.error(
                    "a batch of %d reminder records was not stored (%s); retrying on the next tick",
                    len(batch.records),
                    type(error).__name__,
                )
                failed.update(id(record) for record in batch.records)
        return [id(each.record) not in failed for each in prepared]

    def _follow(self, prepared: _Prepared, now: datetime, *, sent: bool) -> None:
        entry = prepared.entry
        # Read only when needed: a crowd's follow-ups would otherwise each parse a record.
        written = (
            self.store.written_state(entry.patient_id)
            if entry.kind is DueKind.REMINDER and fired_late(entry, now, self.catch_up)
            else None
        )
        effect = follow_up(
            entry, prepared.decision, sent=sent, now=now, catch_up=self.catch_up, written=written
        )
        if isinstance(effect, PlanNext):
            self.queue.push(
                effect.slot,
                DueKind.REMINDER,
                entry.patient_id,
                entry.medication_id,
                effect.reminder_id,
            )
        elif isinstance(effect, MarkMissedPending):
            self._missed_pending.add(effect.reminder_id)

    def _forget_prepared(self, prepared: _Prepared) -> None:
        siblings = self._prepared_by_patient.get(prepared.entry.patient_id)
        if siblings is None:
            return
        for index, sibling in enumerate(siblings):
            if sibling.entry is prepared.entry:
                del siblings[index]
                break
        if not siblings:
            del self._prepared_by_patient[prepared.entry.patient_id]

    def _requeue(self, entry: DueEntry) -> None:
        self.queue.push(
            entry.due_at, entry.kind, entry.patient_id, entry.medication_id, entry.reminder_id
        )

    def forget_recorded_missed(self, reminder_id: str) -> None:
        self._missed_pending.discard(reminder_id)
