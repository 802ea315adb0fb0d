"""Real `medstream worker` processes for the memory and recovery benchmarks, and table filling."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import psutil  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner
from faust.serializers import codecs

from bench.harness import EventFactory, free_port, produce_all
from streams.agents.patient_store import dump_record, load_state
from streams.contracts.codecs import validate_event
from streams.domain.dedup import SeenEvents
from streams.domain.interactions import InteractionKnowledgeBase
from streams.domain.patient import PatientRules, apply_input
from streams.kafka_client import client_options
from streams.settings import Settings
from streams.topics import ensure_topics

STATE_TABLE = "state-by-patient"


def patient_state(patient_id: str) -> dict[str, Any]:
    """One patient's state-by-patient value as the worker stores it: contact, drug, schedule."""
    factory = EventFactory("fill")
    rules = PatientRules(
        knowledge_base=InteractionKnowledgeBase.load_default(), grace=timedelta(minutes=30)
    )
    now = datetime.now(UTC)
    state = load_state(None)
    for event in (
        factory.contact(patient_id),
        factory.prescribed(patient_id, supply=1_000_000),
        factory.schedule(patient_id, "03:00"),
    ):
        state = apply_input(state, validate_event(event), rules, now).state
    return dump_record(state, SeenEvents.empty())


async def fill_state_table(settings: Settings, patients: int) -> float:
    """Write ``patients`` entries straight into the state table's changelog; return seconds.

    Keys and values are encoded as Faust encodes this table (JSON, no key or value type), on the
    partition the patient's events would go to, with the state's own `partition` field set.
    """
    started = time.monotonic()
    topic = f"{settings.app_id}-{STATE_TABLE}-changelog"
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    topic,
                    num_partitions=settings.topic_partitions,
                    replication_factor=1,
                    topic_configs={"cleanup.policy": "compact"},
                )
            ]
        )
    finally:
        await admin.close()
    template = patient_state("p0")
    partitioner = DefaultPartitioner()
    partitions = list(range(settings.topic_partitions))

    def records() -> Any:
        for index in range(patients):
            patient_id = f"p{index}"
            partition = partitioner(patient_id.encode(), partitions, partitions)
            value = {**template, "partition": partition}
            yield topic, codecs.dumps("json", patient_id), codecs.dumps("json", value), partition

    await produce_all(settings, records(), prefixed=False)
    return time.monotonic() - started


class BenchWorker:
    """One `medstream worker` process with its web server on, for /ready and its RSS."""

    def __init__(self, settings: Settings, data_dir: Path, log_file: Path) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.log_file = log_file
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            **self.settings.environment(),
            "MEDSTREAM_DATA_DIR": str(self.data_dir),
            "MEDSTREAM_WEB_ENABLED": "true",
            "MEDSTREAM_WEB_HOST": "127.0.0.1",
            "MEDSTREAM_WEB_PORT": str(self.port),
            "MEDSTREAM_LOG_LEVEL": "warning",
        }

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.started_at = time.monotonic()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams", "worker"],
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def wait_ready(self, timeout: float) -> float:
        """Seconds from process start until /ready answered 200."""
        url = f"http://127.0.0.1:{self.port}/ready"
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"the worker exited: {self.log_tail()}")
                try:
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as answer:
                        if answer.status == 200:
                            return time.monotonic() - self.started_at
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.05)
        raise TimeoutError(f"the worker was not ready in {timeout:g}s: {self.log_tail()}")

    async def metric_total(self, name: str) -> float:
        """The sum of one Prometheus metric's samples on the worker's /metrics page."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        async with aiohttp.ClientSession() as session, session.get(url) as answer:
            text = await answer.text()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and not line.startswith(f"{name}_created"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def rss(self) -> int:
        assert self.process is not None
        return int(psutil.Process(self.process.pid).memory_info().rss)

    def stop(self, timeout: float = 60.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, characters: int = 2000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-characters:]
        except OSError:
            return ""


async def started_worker(
    settings: Settings, name: str, timeout: float
) -> tuple[BenchWorker, float]:
    await ensure_topics(settings)
    worker = BenchWorker(settings, settings.data_dir, settings.data_dir.parent / f"{name}.log")
    worker.start()
    try:
        return worker, await worker.wait_ready(timeout)
    except BaseException:
        worker.stop()
        raise
