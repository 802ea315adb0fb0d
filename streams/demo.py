"""The demo: a broker, a worker, one patient's scenario fed in, and everything that comes out."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from streams.consumer_groups import wait_until_stable
from streams.kafka_client import client_options
from streams.local_kafka import LocalKafka
from streams.publish import check_events, publish_events
from streams.settings import Settings
from streams.topics import ALL_TOPICS, INPUT_TOPICS, ensure_topics

DEMO_TIMEZONE = "America/New_York"
DEMO_PATIENT_ID = "demo-patient-1"
WARFARIN_RXNORM = "11289"
METFORMIN_RXNORM = "6809"
ASPIRIN_RXNORM = "1191"


def build_scenario(now: datetime, run_id: str) -> list[dict[str, Any]]:
    """The demo patient's story, timed relative to ``now`` (an aware datetime).

    Two medications on a schedule one minute ahead; metformin doses are taken until its supply
    runs low (no refills left); then aspirin, which interacts with warfarin, is prescribed.
    """
    zone = ZoneInfo(DEMO_TIMEZONE)
    first_slot = (now + timedelta(minutes=1)).astimezone(zone).replace(microsecond=0)
    counter = iter(range(1, 1000))

    def event(event_type: str, at: datetime, **fields: Any) -> dict[str, Any]:
        envelope = {
            "event_id": f"{run_id}-{next(counter):03d}",
            "event_type": event_type,
            "patient_id": DEMO_PATIENT_ID,
            "occurred_at": at.astimezone(UTC).isoformat(),
        }
        return {**envelope, **fields}

    at = now - timedelta(seconds=30)
    story = [
        event(
            "ContactPreferencesSet",
            at,
            channels=[{"kind": "console", "target": "patient"}],
            timezone=DEMO_TIMEZONE,
            caregiver_channels=[{"kind": "console", "target": "caregiver"}],
        ),
        event(
            "MedicationPrescribed",
            at,
            medication_id="med-warfarin",
            name="Warfarin sodium",
            rxnorm_code=WARFARIN_RXNORM,
            dose_quantity=5,
            dose_unit="mg",
            supply_quantity=150,
            refills_remaining=2,
        ),
        event(
            "MedicationPrescribed",
            at,
            medication_id="med-metformin",
            name="Metformin",
            rxnorm_code=METFORMIN_RXNORM,
            dose_quantity=1,
            dose_unit="tablet",
            supply_quantity=20,
            refills_remaining=0,
            refill_threshold_days=7,
        ),
        event(
            "ScheduleSet",
            at,
            medication_id="med-warfarin",
            timezone=DEMO_TIMEZONE,
            times_of_day=[first_slot.strftime("%H:%M:%S")],
        ),
        event(
            "ScheduleSet",
            at,
            medication_id="med-metformin",
            timezone=DEMO_TIMEZONE,
            times_of_day=[
                first_slot.strftime("%H:%M:%S"),
                (first_slot + timedelta(hours=12)).strftime("%H:%M:%S"),
            ],
        ),
    ]
    # Twice a day from 20 tablets is 10 days of supply; after 7 doses 13 remain (6.5 days),
    # below the 7-day threshold, and with no refills left.
    for dose in range(7):
        taken = now - timedelta(seconds=20) + timedelta(seconds=dose)
        story.append(event("DoseTaken", taken, medication_id="med-metformin"))
    story.append(
        event(
            "MedicationPrescribed",
            now,
            medication_id="med-aspirin",
            name="Aspirin",
            rxnorm_code=ASPIRIN_RXNORM,
            dose_quantity=81,
            dose_unit="mg",
            supply_quantity=2430,
            refills_remaining=3,
        )
    )
    return story


def describe(topic: str, value: bytes) -> str:
    """One readable line for a record read from a topic."""
    try:
        event = json.loads(value)
    except ValueError:
        return f"{topic:<21} <{len(value)} bytes, not JSON>"
    if not isinstance(event, dict):
        return f"{topic:<21} {event!r}"
    event_type = event.get("event_type", "?")
    details = {
        key: item
        for key, item in event.items()
        if key not in {"event_id", "event_type", "patient_id", "occurred_at"}
    }
    return f"{topic:<21} {event_type:<22} {json.dumps(details, default=str)}"


async def _delete_demo_topics(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        names = [
            name
            for name in await admin.list_topics()
            if name.startswith((settings.topic_prefix, f"{settings.app_id}-"))
        ]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


CONSOLE_MARK = "[medstream → "


def console_deliveries(log_file: Path, offset: int) -> tuple[list[str], int]:
    """Console-channel messages the worker wrote to its log since ``offset``."""
    with log_file.open("rb") as handle:
        handle.seek(offset)
        chunk = handle.read()
    complete = chunk[: chunk.rfind(b"\n") + 1]
    lines = []
    for line in complete.decode("utf-8", errors="replace").splitlines():
        # The worker logs JSON lines; the console channel's output is a log message.
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and isinstance(entry.get("message"), str):
                line = entry["message"]
        if CONSOLE_MARK in line:
            lines.append(line[line.index(CONSOLE_MARK) :])
    return lines, offset + len(complete)


async def _feed_and_follow(
    settings: Settings,
    worker: subprocess.Popen[bytes],
    worker_log: Path,
    duration: float | None,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    consumer = AIOKafkaConsumer(
        *[settings.topic_name(spec.base_name) for spec in ALL_TOPICS],
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **client_options(settings),
    )
    await consumer.start()
    input_names = {settings.topic_name(spec.base_name) for spec in INPUT_TOPICS}
    try:
        run_id = settings.topic_prefix.rstrip(".")
        scenario = build_scenario(datetime.now(UTC), run_id)
        checked = check_events("\n".join(json.dumps(event) for event in scenario))
        if checked.invalid:
            raise RuntimeError(f"the demo scenario breaks the contract: {checked.invalid}")
        print(f"feeding {len(scenario)} events for {DEMO_PATIENT_ID}; Ctrl-C stops the demo\n")
        await publish_events(settings, checked.valid)
        deadline = None if duration is None else time.monotonic() + duration
        log_offset = 0
        while not stop.is_set():
            if worker.poll() is not None:
                print(f"the worker exited with {worker.returncode}; see its log", file=sys.stderr)
                return
            if deadline is not None and time.monotonic() > deadline:
                return
            batches = await consumer.getmany(timeout_ms=500)
            for partition, records in batches.items():
                for record in records:
                    arrow = "in  →" if partition.topic in input_names else "out ←"
                    stamp = datetime.now().strftime("%H:%M:%S")
                    topic = partition.topic.removeprefix(settings.topic_prefix)
                    print(f"{stamp} {arrow} {describe(topic, record.value or b'')}")
            delivered, log_offset = console_deliveries(worker_log, log_offset)
            for line in delivered:
                print(f"{datetime.now().strftime('%H:%M:%S')} sent  {line}")
            sys.stdout.flush()
    finally:
        await consumer.stop()


def run_demo(settings: Settings, duration: float | None = None) -> int:
    """Run the whole demo; returns the process exit code."""
    run_id = f"demo-{datetime.now(UTC).strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:4]}"
    demo_dir = Path("var") / "demo"
    demo_settings = settings.model_copy(
        update={
            "topic_prefix": f"{run_id}.",
            "app_id": f"medstream-{run_id}",
            "data_dir": demo_dir / run_id,
            "store_url": "memory://" if settings.store_url == "memory://" else settings.store_url,
        }
    )
    broker = LocalKafka.from_settings(settings)
    external_broker = settings.bootstrap_servers != broker.bootstrap_servers
    started_broker = False
    if not external_broker:
        print(f"starting Kafka {settings.broker_kafka_version} at {broker.bootstrap_servers} ...")
        started_broker = broker.start()
    worker: subprocess.Popen[bytes] | None = None
    try:
        asyncio.run(ensure_topics(demo_settings))
        demo_dir.mkdir(parents=True, exist_ok=True)
        worker_log = demo_dir / f"{run_id}-worker.log"
        env = {
            **os.environ,
            "MEDSTREAM_TOPIC_PREFIX": demo_settings.topic_prefix,
            "MEDSTREAM_APP_ID": demo_settings.app_id,
            "MEDSTREAM_DATA_DIR": str(demo_settings.data_dir),
            "MEDSTREAM_BOOTSTRAP_SERVERS": demo_settings.bootstrap_servers,
            # A one-minute grace window, so the demo also shows a missed dose.
            "MEDSTREAM_REMINDER_GRACE_MINUTES": "1",
            "MEDSTREAM_WEB_ENABLED": "false",
            # The demo patient's channel: its messages, names included, go to the worker log.
            "MEDSTREAM_NOTIFY_CONSOLE_ENABLED": "true",
        }
        print(f"starting a worker (log: {worker_log}) ...")
        with worker_log.open("ab") as log_handle:
            worker = subprocess.Popen(
                [sys.executable, "-m", "streams", "worker"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        asyncio.run(wait_until_stable(demo_settings, demo_settings.app_id, timeout=120))
        asyncio.run(_feed_and_follow(demo_settings, worker, worker_log, duration))
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        _say("\nstopping ...")
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        with contextlib.suppress(Exception):
            asyncio.run(_delete_demo_topics(demo_settings))
        if started_broker:
            broker.stop()
            _say("worker and broker stopped")
        else:
            _say("worker stopped (the broker was already running and is left running)")


def _say(text: str) -> None:
    # Shutdown must finish even when whatever read our output (a pipe, a pager) is gone.
    with contextlib.suppress(OSError):
        print(text, flush=True)
