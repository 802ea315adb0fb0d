"""The agents that keep per-patient state: input events, recorded reminders, and the timer."""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import faust

from streams.agents.runtime import (
    BatchFullError,
    Emitter,
    Encoded,
    Handler,
    Intake,
    Outcome,
    RejectedEventError,
    declare_table,
)
from streams.clock import Clock, utc_now
from streams.contracts.models import (
    EVENT_MODELS,
    DoseMissed,
    Event,
    InteractionWarning,
    RefillAlert,
    ReminderDue,
)
from streams.domain.dedup import Admission, SeenEvents, admit
from streams.domain.limits import (
    ClockSkewError,
    LimitExceededError,
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
from streams.domain.reminder_decide import (
    Drop,
    DueDecision,
    MarkMissedPending,
    PlanNext,
    Skip,
    decide_due,
    decide_fire,
    fired_late,
    follow_up,
)
from streams.domain.reminder_queue import DueEntry, DueKind, ReminderQueue
from streams.domain.schedule import AnswerResult, reminder_id
from streams.faust_transport import active_partitions, tables_recovered
from streams.observability import tracing
from streams.observability.metrics import Metrics
from streams.settings import Settings
from streams.state.checkpoint import Restorer, checkpoint
from streams.state.table import ChangelogTable
from streams.topology import APPLY_PATIENT_EVENTS, FIRE_DUE_REMINDERS, RECORD_REMINDERS

log = logging.getLogger(__name__)

MILLIS_PER_DAY = 86_400_000


SEEN_KEY = "seen_events"
OUTBOX_KEY = "outbox"


def load_state(value: Any) -> PatientState:
    return PatientState() if not value else PatientState.model_validate(value)


def load_seen(value: Any) -> SeenEvents:
    return SeenEvents(dict(value[SEEN_KEY])) if value and SEEN_KEY in value else SeenEvents.empty()


def load_outbox(value: Any) -> list[Event]:
    if not value or not value.get(OUTBOX_KEY):
        return []
    return [EVENT_MODELS[item["event_type"]].model_validate(item) for item in value[OUTBOX_KEY]]


def dump_record(
    state: PatientState, seen: SeenEvents, outbox: Sequence[Event] = ()
) -> dict[str, Any]:
    """A patient's table record: the medication state, the event_ids it has seen, and the
    outputs its last write caused that may not be acknowledged yet."""
    record = state.model_dump(mode="json", exclude_defaults=True)
    if seen.entries:
        record[SEEN_KEY] = seen.entries
    if outbox:
        record[OUTBOX_KEY] = [output.model_dump(mode="json") for output in outbox]
    return record


@dataclass
class _Staged:
    """A patient's record as the current batches left it, not yet written to the table."""

    state: PatientState
    seen: SeenEvents
    # The table partition of the record: the partition the patient's events arrive on.
    partition: int
    # What this batch's events of the patient caused, sent once the record is written, each
    # with the trace context of the event that caused it.
    outputs: list[tuple[Event, tracing.Context | None]] = field(default_factory=list)
    # Their encoded size: they are written with the record, in its outbox.
    outputs_bytes: int = 0


# An upper bound of one remembered event id in the encoded record: '"<16 hex>": <ms>, '.
SEEN_ENTRY_BYTES = 40


def record_bytes(state: PatientState, seen: SeenEvents, outputs_bytes: int) -> int:
    """An upper bound of the encoded size of a patient's record, without encoding the seen ids
    (thousands of them per patient, the same size each)."""
    return len(state.model_dump_json(exclude_defaults=True)) + (
        len(seen.entries) * SEEN_ENTRY_BYTES + outputs_bytes
    )


@dataclass
class PatientStore:
    """The per-patient table, written back once per batch through the checkpoint.

    One record per patient holds the medication state and the event_ids seen, so a batch
    costs one table write per patient it touched, however many of its events it handled.
    Reads see staged records first, so the agents of this worker see the latest state.

    Outputs (alerts, warnings) are sent only after the record that caused them is written
    and acknowledged by the changelog (``streams.state.checkpoint``), so whoever receives one
    (the notifier of any worker) finds the state behind it. The record keeps them in an outbox
    until the broker acknowledged them: after a crash in between, the worker that takes the
    partition over sends them again (same ids) from the outbox instead of their being lost.
    """

    app: faust.App
    table: ChangelogTable
    emitter: Emitter
    output_topics: Mapping[str, faust.TopicT]
    # The largest record a patient may have: the changelog refuses records over the broker's
    # limit, and a refused write would stop the partition for good.
    max_record_bytes: int = 512 * 1024
    # Told the id of each patient whose record a write-back changed.
    on_written: list[Callable[[str], None]] = field(default_factory=list)
    _staged: dict[str, _Staged] = field(default_factory=dict)
    _writing: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Records read since the last write_back, parsed: an event reads its patient's state and
    # seen ids, and a table read (RocksDB get and JSON decode) costs more than the handling.
    _read: dict[str, tuple[PatientState, SeenEvents]] = field(default_factory=dict)
    _read_generation: int | None = None

    def _written(self, patient_id: str) -> tuple[PatientState, SeenEvents]:
        if self._read_generation != self.app.consumer_generation_id:
            # A rebalance may have restored other writers' records into the table.
            self._read.clear()
            self._read_generation = self.app.consumer_generation_id
        record = self._read.get(patient_id)
        if record is None:
            value = self.table.get(patient_id)
            record = self._read[patient_id] = (load_state(value), load_seen(value))
        return record

    def state(self, patient_id: str) -> PatientState:
        staged = self._staged.get(patient_id)
        if staged is not None:
            return staged.state
        return self._written(patient_id)[0]

    def written_state(self, patient_id: str) -> PatientState:
        """The state as written to the table, without what the current batches staged.

        What the timer sends must follow from written state only: a reminder based on a
        staged record could reach the notifier of another worker before that record does.
        """
        return self._written(patient_id)[0]

    def seen(self, patient_id: str) -> SeenEvents:
        staged = self._staged.get(patient_id)
        if staged is not None:
            return staged.seen
        return self._written(patient_id)[1]

    def stage(
        self,
        patient_id: str,
        state: PatientState,
        *,
        seen: SeenEvents | None = None,
        outputs: Iterable[Event] = (),
    ) -> None:
        """Keep the patient's new record (its ``partition`` set), and what it causes, until
        the next ``write_back``.

        Raises LimitExceededError, staging nothing, when the record would be larger than
        ``max_record_bytes``; BatchFullError when only the outputs that earlier events of the
        batch staged for this patient make it too large (written back, they leave the outbox).
        """
        if state.partition is None:
            raise RuntimeError("a patient record is staged with the partition it belongs to")
        previous = self._staged.get(patient_id)
        seen = seen if seen is not None else self.seen(patient_id)
        new_outputs = [(output, tracing.current_context()) for output in outputs]
        new_bytes = sum(len(output.model_dump_json()) for output, _ in new_outputs)
        earlier_bytes = previous.outputs_bytes if previous else 0
        size = record_bytes(state, seen, earlier_bytes + new_bytes)
        if size > self.max_record_bytes:
            if earlier_bytes and size - earlier_bytes <= self.max_record_bytes:
                raise BatchFullError
            raise LimitExceededError(
                "the patient's record would exceed the cap of "
                f"{self.max_record_bytes} bytes (MEDSTREAM_MAX_PATIENT_RECORD_BYTES)"
            )
        self._staged[patient_id] = _Staged(
            state=state,
            seen=seen,
            partition=state.partition,
            outputs=[*(previous.outputs if previous else ()), *new_outputs],
            outputs_bytes=earlier_bytes + new_bytes,
        )

    async def write_back(self) -> None:
        """Write every staged record, then send the outputs behind them.

        Two round trips per batch, whatever its size: the changelog's acknowledgements, and
        the outputs'. A record with outputs is written a second time, without its outbox,
        once they are acknowledged.
        """
        async with self._writing:
            staged_records, self._staged = self._staged, {}
            self._read.clear()
            if not staged_records:
                return
            try:
                await self._write(staged_records)
            except BaseException:
                # Staged again for the intake's next try of the batch end (records written
                # twice and outputs sent twice, with the same ids, are harmless; lost ones not).
                self._restage(staged_records)
                raise

    def _restage(self, staged_records: dict[str, _Staged]) -> None:
        for patient_id, older in staged_records.items():
            newer = self._staged.get(patient_id)
            if newer is None:
                self._staged[patient_id] = older
            else:
                # The newer record replaces the older one; both batches' outputs stay owed.
                newer.outputs[:0] = older.outputs
                newer.outputs_bytes += older.outputs_bytes

    async def _write(self, staged_records: dict[str, _Staged]) -> None:
        for patient_id, staged in staged_records.items():
            self.table.set(
                patient_id,
                dump_record(staged.state, staged.seen, [output for output, _ in staged.outputs]),
                staged.partition,
            )
        with_outputs = {pid: s for pid, s in staged_records.items() if s.outputs}

        async def send_outputs() -> None:
            for patient_id in staged_records:
                for listener in self.on_written:
                    listener(patient_id)
            await self._send(
                [output for staged in with_outputs.values() for output in staged.outputs]
            )

        await checkpoint([self.table], send_outputs)
        if not with_outputs:
            return
        for patient_id, staged in with_outputs.items():
            if patient_id in self._staged:
                continue  # staged again meanwhile: that write replaces the outbox
            self.table.set(patient_id, dump_record(staged.state, staged.seen), staged.partition)
        await checkpoint([self.table])

    def patients_of(
        self, partitions: Collection[int], unsent: list[Event]
    ) -> Iterator[tuple[str, PatientState]]:
        """The patients of these partitions, staged records in place of written ones, one at a
        time (a million parsed states held at once took gigabytes that Python never gave
        back). In the same pass, the outputs their outboxes still hold (their writer may have
        crashed before the broker acknowledged them) are added to ``unsent``."""
        for patient_id, value in self.table.items(partitions):
            if not value:
                continue
            unsent.extend(load_outbox(value))
            if patient_id not in self._staged:
                yield patient_id, load_state(value)
        for patient_id, staged in list(self._staged.items()):
            if staged.partition in partitions:
                yield patient_id, staged.state

    async def send_again(self, outputs: Sequence[Event]) -> None:
        """Send outputs again (same ids) and wait for their acknowledgements."""
        await self._send([(output, None) for output in outputs])

    async def _send(self, outputs: Sequence[tuple[Event, tracing.Context | None]]) -> None:
        sent = []
        for output, context in outputs:
            with tracing.within(context):
                sent.append(await self.emitter.emit(self.output_topics[output.event_type], output))
        for each in sent:
            await self.emitter.send_confirmed(
                each.topic, each.event, f"{each.event.event_type} output", sent=each
            )


def limits_from(settings: Settings) -> Limits:
    """The caps on what one patient's input may make, as the settings give them."""
    return Limits(
        max_active_medications=settings.max_active_medications,
        max_times_per_schedule=settings.max_times_per_schedule,
        max_name_length=settings.max_name_length,
        max_unit_length=settings.max_unit_length,
        max_clock_skew=timedelta(seconds=settings.max_clock_skew_seconds),
    )


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
        state = effects.state.model_copy(update={"partition": partition})
        # Sent once the new state is written: see PatientStore.
        self.store.stage(
            event.patient_id,
            state,
            seen=seen,
            outputs=[*effects.refill_alerts, *effects.interaction_warnings],
        )
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
        self.store.stage(event.patient_id, updated.model_copy(update={"partition": partition}))
        return Outcome.PROCESSED


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

    def replan_if_reassigned(self) -> list[Event] | None:
        """Rebuild the plan after a rebalance; if it did, returns what the outboxes of its
        patients still hold, to send again."""
        generation = self.app.consumer_generation_id
        if generation == self._planned_generation:
            return None
        active = self.active_partitions()
        unsent: list[Event] = []
        self.queue.rebuild(
            self.store.patients_of(active, unsent), self.clock(), self.catch_up, self.grace
        )
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
            unsent = self.replan_if_reassigned()
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
        for index, (prepared, sent) in enumerate(zip(to_send, acknowledged, strict=True)):
            if sent:
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
        metrics=intake.emitter.metrics,
    )
    recorder = ReminderRecorder(
        store=store, queue=queue, grace=rules.grace, limits=processor.limits, clock=clock
    )
    timer = ReminderTimer(
        app=app,
        settings=settings,
        store=store,
        emitter=intake.emitter,
        reminders_topic=reminders_topic,
        input_topic_name=input_topic_name,
        queue=queue,
        restorer=restorer,
        clock=clock,
    )

    store.on_written.append(timer.record_written)

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

    return PatientAgents(store=store, processor=processor, recorder=recorder, timer=timer)
