"""The Quix Streams peer: medstream's refill pipeline written as a Quix Streams Application."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.harness import Context, prepare_topics, produce_all
from bench.outcomes import OutcomeWatcher
from bench.pipeline import patients_in, pipeline_records
from streams.agents.patient_handlers import MILLIS_PER_DAY
from streams.agents.patient_store import dump_record, load_seen, load_state
from streams.contracts.codecs import ContractError, validate_event
from streams.contracts.models import Event, NotificationOutcome, RefillAlert
from streams.contracts.vocabulary import DeliveryStatus
from streams.domain.dedup import Admission, admit
from streams.domain.interactions import InteractionKnowledgeBase
from streams.domain.patient import PatientRules, apply_input, stable_id
from streams.notify.ledger import notification_id
from streams.settings import Settings
from streams.topics import MEDICATION_EVENTS, NOTIFICATIONS, PATIENT_EVENTS, REFILL_ALERTS

if TYPE_CHECKING:
    from quixstreams import Application, State

NAME = "quix-peer"
RECORD_KEY = "record"
CHANNEL = "console"
GUARANTEES = ("at-least-once", "exactly-once")

log = logging.getLogger(__name__)


def available() -> bool:
    return importlib.util.find_spec("quixstreams") is not None


class RefillStage:
    """Stage one, per patient: de-duplicate by event_id, apply the event, emit RefillAlerts.

    The patient's record is medstream's own (state, seen ids) in one Quix state key, so each
    event pays the same (de)serialisation as in medstream's table.
    """

    def __init__(self, settings: Settings, started_file: Path) -> None:
        self.settings = settings
        self.rules = PatientRules(
            knowledge_base=InteractionKnowledgeBase.load_default(),
            grace=timedelta(minutes=settings.reminder_grace_minutes),
        )
        self.started_file = started_file
        self.started = False

    def decoder(self, allowed: Collection[str], topic: str) -> Callable[[bytes], Event | None]:
        def decode(value: bytes) -> Event | None:
            if not self.started:
                # The figure is timed from the first record consumed, as medstream's pipeline is.
                self.started = True
                self.started_file.write_text(repr(time.time()))
            try:
                return validate_event(json.loads(value), allowed, topic)
            except (ContractError, ValueError) as error:
                # medstream dead-letters such a record; the benchmark's input has none.
                log.warning("invalid input dropped: %s", error)
                return None

        return decode

    def __call__(self, event: Event, state: State[str, Any]) -> list[dict[str, Any]]:
        from quixstreams import message_context

        now = datetime.now(UTC)
        record = state.get(RECORD_KEY)
        admission, seen = admit(
            load_seen(record),
            event.event_id,
            int(event.occurred_at.timestamp() * 1000),
            retention_ms=self.settings.dedup_retention_days * MILLIS_PER_DAY,
            max_entries=self.settings.dedup_max_ids_per_patient,
        )
        if admission is not Admission.NEW:
            return []
        effects = apply_input(load_state(record), event, self.rules, now)
        patient = effects.state.model_copy(update={"partition": message_context().partition})
        state.set(RECORD_KEY, dump_record(patient, seen))
        return [alert.model_dump(mode="json") for alert in effects.refill_alerts]


def deliver(value: dict[str, Any], state: State[str, Any]) -> dict[str, Any] | None:
    """Stage two, per patient: deliver an alert once on a no-op channel, record the delivery in
    state and return its NotificationOutcome (None for an alert delivered before)."""
    alert = validate_event(value, (RefillAlert.EVENT_TYPE,))
    nid = notification_id(alert.event_id, CHANNEL)
    if state.exists(nid):
        return None
    state.set(nid, {"status": DeliveryStatus.DELIVERED.value, "attempts": 1})
    outcome = NotificationOutcome(
        event_id=stable_id("outcome", nid),
        patient_id=alert.patient_id,
        occurred_at=datetime.now(UTC),
        notification_id=nid,
        source_event_id=alert.event_id,
        source_event_type=alert.event_type,
        channel=CHANNEL,
        status=DeliveryStatus.DELIVERED,
        attempts=1,
    )
    return outcome.model_dump(mode="json")


def build_application(
    settings: Settings, guarantee: str, state_dir: Path, started_file: Path
) -> Application:
    """Both stages in one Application, as medstream runs its notifier in the same worker."""
    from quixstreams import Application

    app = Application(
        broker_address=settings.bootstrap_servers,
        consumer_group=settings.app_id,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        processing_guarantee=guarantee,  # type: ignore[arg-type]
        # Exactly-once outputs are visible at their transaction's commit, and the outcome is two
        # commits behind its input: Quix's default 5 s interval would add up to 10 s to the end.
        commit_interval=1.0 if guarantee == "exactly-once" else 5.0,
        producer_extra_config={"acks": "all"},  # as medstream's producer
        loglevel="WARNING",
    )
    stage = RefillStage(settings, started_file)
    inputs = []
    for spec in (PATIENT_EVENTS, MEDICATION_EVENTS):
        name = settings.topic_name(spec.base_name)
        topic = app.topic(name, key_deserializer="str", value_deserializer="bytes")
        inputs.append(
            app.dataframe(topic)
            .apply(stage.decoder(spec.event_types, name))
            .filter(lambda event: event is not None)
        )
    alerts_topic = app.topic(
        settings.topic_name(REFILL_ALERTS.base_name),
        key_serializer="str",
        value_serializer="json",
        key_deserializer="str",
        value_deserializer="json",
    )
    outcomes_topic = app.topic(
        settings.topic_name(NOTIFICATIONS.base_name), key_serializer="str", value_serializer="json"
    )
    # Both input topics are keyed by patient_id: one state store for the merged stream.
    events = inputs[0].concat(inputs[1])
    events.apply(stage, stateful=True, expand=True).to_topic(alerts_topic)
    (
        app.dataframe(alerts_topic)
        .apply(deliver, stateful=True)
        .filter(lambda outcome: outcome is not None)
        .to_topic(outcomes_topic)
    )
    return app


def serve(argv: list[str] | None = None) -> None:
    """The peer's process: runs until SIGTERM (settings from the MEDSTREAM_* environment)."""
    parser = argparse.ArgumentParser(prog="python -m bench.quix_peer")
    parser.add_argument("--guarantee", choices=GUARANTEES, default=GUARANTEES[0])
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--started-file", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    build_application(Settings(), args.guarantee, args.state_dir, args.started_file).run()


def start_peer(
    settings: Settings, guarantee: str, started_file: Path, log_file: Path
) -> subprocess.Popen[bytes]:
    """The peer's process, its output in ``log_file``."""
    with log_file.open("ab") as log_stream:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.quix_peer",
                "--guarantee",
                guarantee,
                "--state-dir",
                str(settings.data_dir / "state"),
                "--started-file",
                str(started_file),
            ],
            env={**os.environ, **settings.environment()},
            stdin=subprocess.DEVNULL,
            stdout=log_stream,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def measure(
    context: Context, records: list[tuple[str, bytes, bytes]], guarantee: str
) -> dict[str, float]:
    """Run the pre-published input through the peer's process; events per second."""
    settings = context.settings(f"quix-{guarantee}")
    await prepare_topics(settings)
    await produce_all(settings, records)
    patients = patients_in(records)
    started_file = settings.data_dir / "started"
    watcher = OutcomeWatcher(settings, settings.topic_name(NOTIFICATIONS.base_name))
    await watcher.start()
    log_file = settings.data_dir.parent / f"{settings.app_id}.log"
    process = start_peer(settings, guarantee, started_file, log_file)
    try:
        # Generous: a slow machine must still give a figure, not a timeout.
        finished = await watcher.wait_for(patients, max(300.0, len(records) / 50))
        if process.poll() is not None:
            raise RuntimeError(f"the Quix peer exited: {log_file.read_text()[-2000:]}")
    finally:
        await watcher.stop()
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 60)
    if not finished:
        context.note(NAME, f"{guarantee}: timed out, {len(watcher.notification_ids)}/{patients}")
    elapsed = watcher.last_seen - float(started_file.read_text())
    delivered = len(watcher.notification_ids)
    return {
        # Every patient's last event is the one that runs its supply out: the last outcome comes
        # after (nearly) all of the input. A timed-out run counts only its share.
        "eps": len(records) * delivered / patients / elapsed,
        "delivered": delivered,
        "patients": patients,
        "seconds": elapsed,
    }


def _figure(context: Context, benchmark: str, name: str) -> float | None:
    for figure in context.figures:
        if figure.benchmark == benchmark and figure.name == name:
            return figure.value
    return None


async def run(context: Context) -> None:
    if not available():
        message = "skipped: quixstreams is not installed (pip install -e '.[peer]')"
        print(f"   {message}", flush=True)
        context.note(NAME, message)
        return
    sizes = context.sizes
    records = pipeline_records(sizes.pipeline_events, sizes.doses_per_patient)
    medstream = _figure(context, "pipeline", "throughput")
    for guarantee in GUARANTEES:
        result = await measure(context, records, guarantee)
        eps = result["eps"]
        context.add(NAME, f"{guarantee} throughput", eps, "events/s", ratio=context.ratio(eps))
        context.add(NAME, f"{guarantee} outcomes", result["delivered"], "outcomes")
        versus = None if medstream is None or not eps else medstream / eps
        first = guarantee == GUARANTEES[0]
        context.add(
            NAME,
            f"medstream / peer, {guarantee}",
            versus,
            "x",
            target=">= 1 (issue 14)" if first else None,
            met=None if versus is None or not first else versus >= 1,
        )
    share = context.ratio(medstream) if medstream is not None else None
    context.add(
        NAME,
        "medstream pipeline / baseline",
        share,
        "x",
        target=">= 0.15 (issue 14)",
        met=None if share is None else share >= 0.15,
    )
    context.note(
        NAME,
        f"the pipeline's input ({len(records)} events) through a Quix Streams "
        f"{_version()} Application in its own process: JSON decode, medstream's validate_event, "
        "de-duplication by event_id and apply_input on medstream's patient record in Quix "
        "state (RocksDB, changelog), RefillAlert; a second stage records each delivery in "
        "state and produces a NotificationOutcome (no-op channel). Timed from the first record "
        "consumed to the last outcome seen by a consumer in the runner",
    )


def _version() -> str:
    import importlib.metadata

    return importlib.metadata.version("quixstreams")


if __name__ == "__main__":
    serve()
