"""One patient with hundreds or thousands of active prescriptions: the interaction check's cost."""

from __future__ import annotations

import json
import statistics
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka.partitioner import DefaultPartitioner

from bench.harness import (
    PARTITIONS,
    Context,
    EventFactory,
    fast_producer,
    prepare_topics,
    produce_all,
    record_of,
    wait_until,
)
from streams.agents.patient_store import dump_record, load_state
from streams.app import Medstream, create_app
from streams.contracts.models import MedicationPrescribed
from streams.domain.dedup import SeenEvents
from streams.domain.interactions import InteractionKnowledgeBase
from streams.domain.patient import PatientRules, PatientState, apply_input
from streams.notify.messages import Message
from streams.settings import Settings
from streams.worker import running

NAME = "many-medications"
# The sizes; the baseline is the same measurement with one medication.
MEDICATION_COUNTS = (200, 2_000)
BASELINE_COUNT = 1
# Further prescriptions timed against the N-medication state, each on its own copy of it.
PROBES = 21


def medication_counts(scale: float) -> tuple[int, ...]:
    if scale == 1:
        return MEDICATION_COUNTS
    return tuple(max(5, int(count * scale)) for count in MEDICATION_COUNTS)


def drug_names(kb: InteractionKnowledgeBase) -> list[str]:
    """Prescription-style names (strength, form, capitals) of the drugs the base has pairs for.

    Names rather than RxCUIs: a name goes through normalisation and the synonym table, the
    costly way a drug is resolved, and the one the issue's patient took.
    """
    bases = sorted({name for pair in kb.interactions for name in (pair.name_a, pair.name_b)})
    forms = ("tablet", "capsule")
    return [
        f"{bases[index % len(bases)].title()} {5 + index % 20} mg {forms[index % 2]}"
        for index in range(len(bases) * 2)
    ]


def prescription(
    factory: EventFactory, patient_id: str, medication_id: str, name: str
) -> dict[str, Any]:
    return factory.make(
        patient_id,
        "MedicationPrescribed",
        medication_id=medication_id,
        name=name,
        dose_quantity=1,
        dose_unit="tablet",
        supply_quantity=90,
        refills_remaining=3,
    )


# The caps on one patient's state (MEDSTREAM_MAX_ACTIVE_MEDICATIONS, default 200, and
# MEDSTREAM_MAX_PATIENT_RECORD_BYTES, default 512 KiB): a worker dead-letters a prescription
# beyond them, so the worker runs raise them, the record size to its upper bound.
RECORD_BYTES_SETTING = "max_patient_record_bytes"


def cap_overrides(medications: int) -> dict[str, int]:
    """The settings that cap a patient's medications, raised for ``medications`` of them (the
    ones this Settings has: trees from before the caps have none)."""
    overrides = {}
    for name, field in Settings.model_fields.items():
        if "medication" in name and any(word in name for word in ("max", "cap", "limit")):
            overrides[name] = medications + PROBES + 10
        elif name == RECORD_BYTES_SETTING:
            bounds = [getattr(rule, "le", None) for rule in field.metadata]
            overrides[name] = next((bound for bound in bounds if bound is not None), 900 * 1024)
    return overrides


@dataclass(frozen=True)
class PureFigures:
    """apply_input alone (no Kafka, no table) for one patient of N medications."""

    build_seconds: float
    next_prescription_ms: float
    state_round_trip_ms: float
    active: int


def measure_pure(kb: InteractionKnowledgeBase, names: list[str], medications: int) -> PureFigures:
    rules = PatientRules(knowledge_base=kb, grace=timedelta(minutes=30))
    factory = EventFactory(f"mm{uuid.uuid4().hex[:6]}")
    now = datetime.now(UTC)
    events = [
        MedicationPrescribed.model_validate(
            prescription(factory, "p-many", f"m{index}", names[index % len(names)])
        )
        for index in range(medications)
    ]
    state = PatientState()
    started = time.perf_counter()
    for event in events:
        state = apply_input(state, event, rules, now).state
    build = time.perf_counter() - started
    probes = [
        MedicationPrescribed.model_validate(
            prescription(factory, "p-many", f"probe{index}", names[(index * 7) % len(names)])
        )
        for index in range(PROBES)
    ]
    timings = []
    for probe in probes:
        began = time.perf_counter()
        apply_input(state, probe, rules, now)
        timings.append(time.perf_counter() - began)
    # What the worker adds around apply_input for each batch: the table record's JSON and back.
    seen = SeenEvents.empty()
    trips = []
    for _ in range(5):
        began = time.perf_counter()
        load_state(json.loads(json.dumps(dump_record(state, seen))))
        trips.append(time.perf_counter() - began)
    return PureFigures(
        build_seconds=build,
        next_prescription_ms=statistics.median(timings) * 1000,
        state_round_trip_ms=statistics.median(trips) * 1000,
        active=sum(1 for record in state.medications.values() if record.active),
    )


class PatientArrivals:
    """An in-process console channel that notes when each patient's first message arrived."""

    kind = "console"

    def __init__(self) -> None:
        self.delivered = 0
        self.first_arrival: dict[str, float] = {}

    async def deliver(self, target: str, message: Message) -> None:
        self.delivered += 1
        self.first_arrival.setdefault(str(message.body["patient_id"]), time.time())

    async def close(self) -> None:
        """Nothing to release."""


def same_partition_as(patient_id: str, prefix: str) -> str:
    """A patient id whose events share ``patient_id``'s partition (the producers' partitioner)."""
    partitioner = DefaultPartitioner()
    partitions = list(range(PARTITIONS))
    target = partitioner(patient_id.encode(), partitions, partitions)
    for index in range(10_000):
        candidate = f"{prefix}{index}"
        if partitioner(candidate.encode(), partitions, partitions) == target:
            return candidate
    raise RuntimeError(f"no patient id found on the partition of {patient_id}")


@dataclass(frozen=True)
class WorkerFigures:
    """One in-process worker on the broker: the big patient's prescriptions, then another's."""

    processing_seconds: float
    behind_latency_ms: float
    finished: bool
    warnings_delivered: int
    dead_lettered: int
    cap_setting: str


async def measure_worker(context: Context, names: list[str], medications: int) -> WorkerFigures:
    overrides = cap_overrides(medications)
    settings = context.settings(NAME, **overrides)
    await prepare_topics(settings)
    factory = EventFactory(f"mw{uuid.uuid4().hex[:6]}")
    many = "p-many"
    # The other patient is on the same partition, so its event is queued behind the big one's.
    other = same_partition_as(many, "p-other-")
    setup = [
        record_of(factory.contact(many)),
        record_of(factory.contact(other)),
        record_of(factory.prescribed(other, supply=1)),
    ]
    load = [
        record_of(prescription(factory, many, f"m{index}", names[index % len(names)]))
        for index in range(medications)
    ]
    # Its one DoseTaken runs its supply out: one RefillAlert, delivered to its console channel.
    behind = record_of(factory.dose(other))
    medstream: Medstream = create_app(settings)
    channel = PatientArrivals()
    medstream.notifier.channels = {"console": channel}
    stats = medstream.stats
    await produce_all(settings, setup)
    async with running(medstream):
        if not await wait_until(lambda: stats.total_settled >= len(setup), 120, 0.01):
            context.note(NAME, f"N={medications}: setup not settled ({stats.total_settled}/3)")
        producer = fast_producer(settings)
        await producer.start()
        try:
            started = time.perf_counter()
            pending = [
                await producer.send(settings.topic_name(topic), value, key=key)
                for topic, key, value in load
            ]
            for future in pending:
                await future
            topic, key, value = behind
            sent_at = time.time()
            await (await producer.send(settings.topic_name(topic), value, key=key))
        finally:
            await producer.stop()
        total = len(setup) + len(load)
        # Generous: the point is the figure, however slow; a timeout is noted, not raised.
        timeout = max(300.0, medications / 5)
        finished = await wait_until(lambda: stats.total_settled >= total, timeout, 0.005)
        processing = time.perf_counter() - started
        finished = finished and await wait_until(
            lambda: other in channel.first_arrival, timeout, 0.005
        )
        arrived = channel.first_arrival.get(other)
    if not finished:
        context.note(
            NAME,
            f"N={medications}: timed out, settled {stats.total_settled}/{total + 1}, "
            f"other patient's alert {'delivered' if arrived else 'not delivered'}",
        )
    return WorkerFigures(
        processing_seconds=processing,
        behind_latency_ms=float("nan") if arrived is None else (arrived - sent_at) * 1000,
        finished=finished,
        warnings_delivered=channel.delivered - (1 if arrived else 0),
        dead_lettered=sum(stats.dead_lettered.values()),
        cap_setting=", ".join(f"{k}={v}" for k, v in overrides.items()) or "none",
    )


def _ratio(value: float, base: float) -> float | None:
    return value / base if base > 0 else None


async def run(context: Context) -> None:
    kb = InteractionKnowledgeBase.load_default()
    names = drug_names(kb)
    counts = medication_counts(context.scale)

    base = measure_pure(kb, names, BASELINE_COUNT)
    context.add(NAME, "pure: next prescription, 1 medication", base.next_prescription_ms, "ms")
    for count in counts:
        pure = measure_pure(kb, names, count)
        context.add(
            NAME,
            f"pure: next prescription, {count} medications",
            pure.next_prescription_ms,
            "ms",
            ratio=_ratio(pure.next_prescription_ms, base.next_prescription_ms),
        )
        context.add(NAME, f"pure: {count} prescriptions in turn", pure.build_seconds, "s")
        context.add(
            NAME,
            f"pure: state record round trip, {count} medications",
            pure.state_round_trip_ms,
            "ms",
            ratio=_ratio(pure.state_round_trip_ms, base.state_round_trip_ms),
        )
        if pure.active != count:
            context.note(NAME, f"pure N={count}: only {pure.active} medications stayed active")

    worker_base = await measure_worker(context, names, BASELINE_COUNT)
    context.add(NAME, "worker: 1 prescription processed", worker_base.processing_seconds, "s")
    context.add(NAME, "worker: alert behind 1 prescription", worker_base.behind_latency_ms, "ms")
    for count in counts:
        worker = await measure_worker(context, names, count)
        context.add(
            NAME,
            f"worker: {count} prescriptions processed",
            worker.processing_seconds,
            "s",
            ratio=_ratio(worker.processing_seconds, worker_base.processing_seconds),
        )
        context.add(
            NAME,
            f"worker: alert behind {count} prescriptions",
            worker.behind_latency_ms,
            "ms",
            ratio=_ratio(worker.behind_latency_ms, worker_base.behind_latency_ms),
        )
        context.add(
            NAME,
            f"worker: interaction warnings delivered, {count} medications",
            worker.warnings_delivered,
            "deliveries",
            note="those delivered by the time the other patient's alert was",
        )
        context.add(
            NAME, f"worker: dead-lettered, {count} medications", worker.dead_lettered, "events"
        )
        context.note(NAME, f"worker N={count}: caps raised: {worker.cap_setting}")
    context.note(
        NAME,
        f"one patient prescribed N drugs by name ({len(names)} names cycled, strengths and forms "
        f"varied); 'pure' = apply_input alone, the next prescription timed {PROBES} times on "
        "the N-medication state (median); 'worker' = one in-process worker on the broker, the N "
        "prescriptions published at once, then another patient's DoseTaken on the same "
        "partition whose RefillAlert delivery is timed from its send; ratios are to the same "
        "figure with 1 medication",
    )
