"""The per-patient table: each patient's record, staged per batch, and the outbox behind it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import faust

from streams.agents.emitter import Emitter
from streams.agents.intake import BatchFullError
from streams.contracts.models import EVENT_MODELS, Event
from streams.domain.dedup import SeenEvents
from streams.domain.limits import LimitExceededError
from streams.domain.patient import PatientState
from streams.observability import tracing
from streams.state.checkpoint import checkpoint
from streams.state.table import ChangelogTable

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
    # How many written records are kept parsed (oldest written forgotten first).
    cached_patients: int = 10_000
    # Told the id of each patient whose record a write-back changed.
    on_written: list[Callable[[str], None]] = field(default_factory=list)
    _staged: dict[str, _Staged] = field(default_factory=dict)
    _writing: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Records as the table holds them, parsed, for patients read or written lately: an event
    # reads its patient's state and seen ids, and a table read (RocksDB get and JSON decode)
    # costs more than handling the event. With each, the outputs its outbox still holds.
    _read: dict[str, tuple[PatientState, SeenEvents, list[Event]]] = field(default_factory=dict)
    _read_generation: int | None = None
    # The records a write-back is writing, until it is done: their outputs are that
    # write-back's to send, so a record staged meanwhile does not take them up again.
    _inflight: dict[str, _Staged] = field(default_factory=dict)

    def _written(self, patient_id: str) -> tuple[PatientState, SeenEvents, list[Event]]:
        if self._read_generation != self.app.consumer_generation_id:
            # A rebalance may have restored other writers' records into the table.
            self._read.clear()
            self._read_generation = self.app.consumer_generation_id
        record = self._read.get(patient_id)
        if record is None:
            inflight = self._inflight.get(patient_id)
            if inflight is not None:
                return inflight.state, inflight.seen, []
            value = self.table.get(patient_id)
            record = (load_state(value), load_seen(value), load_outbox(value))
            self._remember(patient_id, record)
        return record

    def _remember(
        self, patient_id: str, record: tuple[PatientState, SeenEvents, list[Event]]
    ) -> None:
        self._read[patient_id] = record
        while len(self._read) > self.cached_patients:
            del self._read[next(iter(self._read))]

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
        new_outputs: list[tuple[Event, tracing.Context | None]] = [
            (output, tracing.current_context()) for output in outputs
        ]
        if previous is None:
            # Outputs a crashed writer left in the outbox stay owed: this write replaces the
            # record, so they go with it (sent again with their ids, which consumers know).
            left = [(output, None) for output in self._written(patient_id)[2]]
            new_outputs[:0] = left
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
            if not staged_records:
                return
            for patient_id in staged_records:
                self._read.pop(patient_id, None)
            self._inflight = staged_records
            try:
                cleared = await self._write(staged_records)
            except BaseException:
                # Staged again for the intake's next try of the batch end (records written
                # twice and outputs sent twice, with the same ids, are harmless; lost ones not).
                self._read.clear()
                self._restage(staged_records)
                raise
            finally:
                self._inflight = {}
            for patient_id in cleared:
                staged = staged_records[patient_id]
                self._remember(patient_id, (staged.state, staged.seen, []))

    def _restage(self, staged_records: dict[str, _Staged]) -> None:
        for patient_id, older in staged_records.items():
            newer = self._staged.get(patient_id)
            if newer is None:
                self._staged[patient_id] = older
            else:
                # The newer record replaces the older one; both batches' outputs stay owed.
                newer.outputs[:0] = older.outputs
                newer.outputs_bytes += older.outputs_bytes

    async def _write(self, staged_records: dict[str, _Staged]) -> list[str]:
        """Write the records, send their outputs, clear their outboxes; the patients whose
        table record now is exactly their staged state with an empty outbox."""
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
        cleared = [pid for pid, staged in staged_records.items() if not staged.outputs]
        if not with_outputs:
            return cleared
        for patient_id, staged in with_outputs.items():
            if patient_id in self._staged:
                continue  # staged again meanwhile: that write replaces the outbox
            self.table.set(patient_id, dump_record(staged.state, staged.seen), staged.partition)
            cleared.append(patient_id)
        await checkpoint([self.table])
        return cleared

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
