"""SIGTERM ends a real worker within 30 s, broker up or gone, and loses nothing."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from streams.consumer_groups import wait_until_stable
from streams.local_kafka import LocalKafka
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.integration.test_patient_state import Events, publish, values
from tests.kafka_helpers import consume
from tests.worker_process import WorkerProcess

pytestmark = pytest.mark.integration

# Ports of the broker this test starts and stops (never the session's broker).
OWN_BROKER_PORT = 19492


def sigterm_and_time(worker: WorkerProcess, limit: float = 30.0) -> float:
    assert worker.process is not None
    started = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)
    try:
        worker.process.wait(timeout=limit + 30)
    finally:
        if worker.running:
            worker.process.kill()
    return time.monotonic() - started


async def test_sigterm_with_the_broker_gone_exits_within_30_seconds(
    settings: Settings, tmp_path: Path
) -> None:
    broker = LocalKafka.from_settings(
        Settings(
            broker_port=OWN_BROKER_PORT,
            broker_controller_port=OWN_BROKER_PORT + 1,
            broker_data_dir=tmp_path / "kafka",
            broker_heap="384m",
        )
    )
    await asyncio.to_thread(broker.start)
    worker = None
    try:
        own = settings.model_copy(update={"bootstrap_servers": broker.bootstrap_servers})
        await ensure_topics(own)
        worker = WorkerProcess(own, tmp_path / "worker", tmp_path / "worker.log")
        worker.start()
        await wait_until_stable(own, own.app_id, timeout=120)
    finally:
        await asyncio.to_thread(broker.stop)
    assert worker is not None
    assert worker.running, worker.log_tail()
    took = sigterm_and_time(worker)
    assert took < 30, worker.log_tail()


async def test_sigterm_mid_stream_then_a_new_worker_handles_the_rest_exactly_once(
    settings: Settings, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"consumer_session_timeout": 8.0})
    await ensure_topics(settings)
    patients = [f"term-patient-{n}" for n in range(40)]
    first = WorkerProcess(settings, tmp_path / "worker-1", tmp_path / "worker-1.log")
    second = WorkerProcess(settings, tmp_path / "worker-2", tmp_path / "worker-2.log")
    try:
        first.start()
        await wait_until_stable(settings, settings.app_id, timeout=120)
        for patient in patients:
            events = Events(patient)
            await publish(
                settings,
                "medication-events",
                events.prescribed("warfarin", "Coumadin"),
                events.prescribed("aspirin", "Aspirin 81 mg", rxnorm_code="1191"),
            )
        # Some handled, likely not all: the stop comes in the middle of the stream.
        await consume(settings, settings.topic_name("interaction-warnings"), 1, 60)
        took = sigterm_and_time(first)
        assert took < 30, first.log_tail()
        second.start()
        warnings = values(
            await consume(settings, settings.topic_name("interaction-warnings"), len(patients), 120)
        )
        assert sorted(w["patient_id"] for w in warnings) == sorted(patients), second.log_tail()
        assert len({w["warning_id"] for w in warnings}) == len(patients)
    finally:
        first.stop()
        second.stop()
