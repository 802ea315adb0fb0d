"""What every benchmark shares: sizes per mode, fresh settings, events, figures and the table."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import math
import os
import platform
import socket
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
from aiokafka import AIOKafkaProducer
from aiokafka.client import AIOKafkaClient

from streams.app import Medstream
from streams.kafka_client import client_options
from streams.notify.messages import Message
from streams.settings import Settings
from streams.topics import ensure_topics

PARTITIONS = 4


@dataclass(frozen=True)
class Sizes:
    """How big each benchmark is in one mode."""

    pipeline_events: int
    doses_per_patient: int
    latency_rate: int
    latency_seconds: float
    schedules: int
    codec_events: int
    memory_patients: int
    soak_seconds: float
    soak_rate: int
    recovery_entries: int


QUICK = Sizes(
    pipeline_events=4_000,
    doses_per_patient=10,
    latency_rate=500,
    latency_seconds=1.5,
    schedules=500,
    codec_events=5_000,
    memory_patients=5_000,
    soak_seconds=8.0,
    soak_rate=200,
    recovery_entries=5_000,
)
FULL = Sizes(
    pipeline_events=200_000,
    doses_per_patient=10,
    latency_rate=500,
    latency_seconds=60.0,
    schedules=50_000,
    codec_events=50_000,
    memory_patients=1_000_000,
    soak_seconds=600.0,
    soak_rate=200,
    recovery_entries=1_000_000,
)


def scaled(sizes: Sizes, factor: float) -> Sizes:
    """The sizes times ``factor`` (rates and doses per patient unchanged); for CI smoke runs."""
    if factor == 1:
        return sizes

    def times(value: int, least: int) -> int:
        return max(least, int(value * factor))

    return replace(
        sizes,
        pipeline_events=times(sizes.pipeline_events, 120),
        latency_seconds=max(0.5, sizes.latency_seconds * factor),
        schedules=times(sizes.schedules, 20),
        codec_events=times(sizes.codec_events, 200),
        memory_patients=times(sizes.memory_patients, 100),
        soak_seconds=max(3.0, sizes.soak_seconds * factor),
        recovery_entries=times(sizes.recovery_entries, 100),
    )


@dataclass
class Figure:
    """One measured figure, with its unit and, when there is one, the target it is held to."""

    benchmark: str
    name: str
    value: float | None
    unit: str
    ratio_to_baseline: float | None = None
    target: str | None = None
    met: bool | None = None
    note: str | None = None


@dataclass
class Context:
    """One run of the runner: the broker, the mode, the sizes and every figure so far."""

    bootstrap_servers: str
    mode: str
    sizes: Sizes
    workdir: Path
    figures: list[Figure] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)
    baseline_eps: float | None = None
    scale: float = 1.0

    def settings(self, benchmark: str, **overrides: Any) -> Settings:
        """Fresh topics (prefix), consumer group (app id) and data directory for one benchmark."""
        run = f"b{uuid.uuid4().hex[:8]}"
        data_dir = self.workdir / f"{benchmark}-{run}"
        data_dir.mkdir(parents=True, exist_ok=True)
        return Settings(
            bootstrap_servers=self.bootstrap_servers,
            app_id=f"bench-{benchmark}-{run}",
            topic_prefix=f"{run}.",
            topic_partitions=PARTITIONS,
            store_url="rocksdb://",
            data_dir=data_dir,
            web_enabled=False,
            log_level="warning",
            **overrides,
        )

    def add(
        self,
        benchmark: str,
        name: str,
        value: float | None,
        unit: str,
        *,
        ratio: float | None = None,
        target: str | None = None,
        met: bool | None = None,
        note: str | None = None,
    ) -> Figure:
        figure = Figure(benchmark, name, value, unit, ratio, target, met, note)
        self.figures.append(figure)
        return figure

    def note(self, benchmark: str, text: str) -> None:
        self.notes.setdefault(benchmark, []).append(text)

    def ratio(self, events_per_second: float) -> float | None:
        if not self.baseline_eps:
            return None
        return events_per_second / self.baseline_eps


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class EventFactory:
    """Valid input events as upstream services publish them (JSON, keyed by patient_id)."""

    def __init__(self, run: str) -> None:
        self.run = run
        self._next = 0

    def make(self, patient_id: str, event_type: str, **fields: Any) -> dict[str, Any]:
        self._next += 1
        return {
            "event_id": f"{self.run}-{self._next}",
            "event_type": event_type,
            "patient_id": patient_id,
            "occurred_at": datetime.now(UTC).isoformat(),
            **fields,
        }

    def contact(self, patient_id: str) -> dict[str, Any]:
        return self.make(
            patient_id,
            "ContactPreferencesSet",
            channels=[{"kind": "console", "target": "patient"}],
            timezone="UTC",
        )

    def prescribed(
        self, patient_id: str, supply: float, medication_id: str = "m1"
    ) -> dict[str, Any]:
        return self.make(
            patient_id,
            "MedicationPrescribed",
            medication_id=medication_id,
            name="Metformin 500 mg tablet",
            rxnorm_code="6809",
            dose_quantity=1,
            dose_unit="tablet",
            supply_quantity=supply,
            refills_remaining=3,
        )

    def dose(self, patient_id: str, medication_id: str = "m1") -> dict[str, Any]:
        return self.make(patient_id, "DoseTaken", medication_id=medication_id)

    def schedule(self, patient_id: str, at: str, medication_id: str = "m1") -> dict[str, Any]:
        return self.make(
            patient_id,
            "ScheduleSet",
            medication_id=medication_id,
            timezone="UTC",
            times_of_day=[at],
        )


TOPIC_OF = {
    "ContactPreferencesSet": "patient-events",
    "MedicationPrescribed": "medication-events",
    "DoseTaken": "medication-events",
    "ScheduleSet": "schedule-events",
}


def record_of(event: dict[str, Any]) -> tuple[str, bytes, bytes]:
    """(base topic, key, value) exactly as `medstream publish` sends a JSON event."""
    return (
        TOPIC_OF[event["event_type"]],
        event["patient_id"].encode("utf-8"),
        json.dumps(event).encode("utf-8"),
    )


def fast_producer(settings: Settings, **options: Any) -> AIOKafkaProducer:
    """A batching producer for loading topics quickly (acks from every replica, as the app)."""
    return AIOKafkaProducer(
        acks="all", linger_ms=5, max_batch_size=512 * 1024, **options, **client_options(settings)
    )


async def produce_all(
    settings: Settings,
    records: Iterable[tuple[str, bytes, bytes] | tuple[str, bytes, bytes, int]],
    *,
    prefixed: bool = True,
) -> int:
    """Send (topic, key, value[, partition]) records, not waiting for each; return once acked."""
    producer = fast_producer(settings)
    await producer.start()
    count = 0
    try:
        pending: list[asyncio.Future[Any]] = []
        for topic, key, value, *partition in records:
            name = settings.topic_name(topic) if prefixed else topic
            pending.append(
                await producer.send(
                    name, value, key=key, partition=partition[0] if partition else None
                )
            )
            count += 1
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return count


class CountingChannel:
    """An in-process delivery channel: counts messages and when each arrived."""

    kind = "console"

    def __init__(self) -> None:
        self.delivered = 0
        self.arrivals: dict[str, float] = {}

    async def deliver(self, target: str, message: Message) -> None:
        self.delivered += 1
        self.arrivals[message.notification_id] = time.time()

    async def close(self) -> None:
        """Nothing to release."""


def counting_channel(medstream: Medstream) -> CountingChannel:
    """Replace the notifier's channels with one counting console channel (benchmark only)."""
    channel = CountingChannel()
    medstream.notifier.channels = {"console": channel}
    return channel


async def prepare_topics(settings: Settings) -> None:
    await ensure_topics(settings)


async def wait_until(predicate: Any, timeout: float, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)
    return True


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


async def broker_version(bootstrap_servers: str) -> str:
    """The newest Produce and Fetch versions the broker offers (its ApiVersions answer)."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap_servers)
    try:
        await client.bootstrap()
        node = next(iter(client.cluster.brokers())).nodeId
        connection = await client._get_conn(node)
        versions = getattr(connection, "_versions", None) or {}
        produce, fetch = versions.get(0, (0, "?"))[1], versions.get(1, (0, "?"))[1]
        return f"Produce v{produce}, Fetch v{fetch} (ApiVersions)"
    except Exception as error:  # the machine details must not stop the run
        return f"unknown ({type(error).__name__})"
    finally:
        await client.close()


async def machine(bootstrap_servers: str) -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "ram_bytes": psutil.virtual_memory().total,
        "load_average_1m": os.getloadavg()[0],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "faust_streaming": _version("faust-streaming"),
        "aiokafka": _version("aiokafka"),
        "rocksdict": _version("rocksdict"),
        "pydantic": _version("pydantic"),
        "fastavro": _version("fastavro"),
        "broker_version": await broker_version(bootstrap_servers),
        # The release `medstream broker start` runs (the benchmarks' broker, unless told otherwise).
        "local_broker_release": Settings().broker_kafka_version,
    }


def make_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="medstream-bench-"))


def _shown(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def table(figures: Sequence[Figure]) -> str:
    """The figures as a plain-text table: value with unit, ratio to baseline, target."""
    rows = [("benchmark", "figure", "value", "x baseline", "target", "met")]
    for f in figures:
        rows.append(
            (
                f.benchmark,
                f.name,
                f"{_shown(f.value)} {f.unit}",
                "" if f.ratio_to_baseline is None else f"{f.ratio_to_baseline:.2f}x",
                f.target or "",
                "" if f.met is None else ("yes" if f.met else "NO"),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def results(
    context: Context, machine_details: dict[str, Any], started: float, errors: dict[str, str]
) -> dict[str, Any]:
    """The JSON document the runner writes."""
    targets = [asdict(f) for f in context.figures if f.target is not None]
    return {
        "date": datetime.now(UTC).isoformat(),
        "mode": context.mode,
        "scale": context.scale,
        "sizes": asdict(context.sizes),
        "machine": machine_details,
        "duration_seconds": round(time.monotonic() - started, 1),
        "figures": [asdict(f) for f in context.figures],
        "targets": targets,
        "all_targets_met": all(t["met"] for t in targets) if targets else None,
        "notes": context.notes,
        "errors": errors,
    }
