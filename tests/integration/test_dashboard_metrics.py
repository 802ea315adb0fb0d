"""Every metric the Grafana dashboard and the alert rules query is on a real worker's /metrics.

A `medstream worker` process against the real broker gets a few events (a patient with a
webhook contact, two interacting drugs and a reminder due in seconds; a patient whose webhook
is refused; a record that cannot be decoded), so the labelled series exist: deliveries
delivered and failed, a dead letter, a reminder's lateness, lag per partition.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from streams.consumer_groups import wait_until_stable
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.integration.conftest import Receiver
from tests.integration.test_hostile_inputs import free_port, wait_ready
from tests.integration.test_notifier import contact, notifier_settings
from tests.integration.test_patient_state import Events, publish
from tests.integration.test_web import parse
from tests.kafka_helpers import produce
from tests.unit.test_alert_rules import (
    METRIC_NAME,
    alert_rules,
    dashboard,
    dashboard_queries,
    variable_queries,
)
from tests.worker_process import WorkerProcess

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def queried_names() -> set[str]:
    """The medstream sample names the dashboard's panels and variables and the alert rules
    query (the rules' `up` is Prometheus's, not the worker's)."""
    board = dashboard()
    queries = [
        *dashboard_queries(board),
        *variable_queries(board),
        *(rule["expr"] for rule in alert_rules()),
    ]
    return {name for query in queries for name in METRIC_NAME.findall(query)}


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(
        found
        for (sample, sample_labels), found in samples.items()
        if sample == name and set(labels.items()) <= set(sample_labels)
    )


def counted(samples: Samples) -> dict[str, float]:
    """What the wait looks for, for the message when it is not all there."""
    return {
        f"{name}{dict(labels)}": found
        for (name, labels), found in samples.items()
        if name
        in {
            "medstream_deliveries_total",
            "medstream_dead_letters_total",
            "medstream_reminder_lateness_seconds_count",
            "medstream_consumer_lag",
        }
    }


def has_series(samples: Samples, name: str) -> bool:
    return any(sample == name for sample, _ in samples)


async def test_every_metric_of_the_dashboard_and_the_alert_rules_is_on_a_workers_metrics(
    settings: Settings, receiver: Receiver, tmp_path: Path
) -> None:
    settings = notifier_settings(settings)
    await ensure_topics(settings)
    web_port = free_port()
    worker = WorkerProcess(
        settings,
        tmp_path / "worker",
        tmp_path / "worker.log",
        MEDSTREAM_WEB_ENABLED="true",
        MEDSTREAM_WEB_PORT=str(web_port),
    )
    told = Events("dash-told")
    refused = Events("dash-refused")
    # A slot in about 40 s (UTC): the worker's own timer reminds it, by the wall clock.
    slot = (datetime.now(UTC) + timedelta(seconds=40)).replace(microsecond=0)
    url = f"http://127.0.0.1:{web_port}/metrics"
    try:
        worker.start()
        await wait_ready(web_port, worker, timeout=180)
        await wait_until_stable(settings, settings.app_id, timeout=120)
        await publish(
            settings,
            "patient-events",
            contact(told, {"kind": "webhook", "target": f"{receiver.url}/{told.patient_id}"}),
            # A private address outside MEDSTREAM_NOTIFY_WEBHOOK_ALLOW: refused, failed.
            contact(refused, {"kind": "webhook", "target": "http://10.20.30.40/hook"}),
        )
        await publish(
            settings,
            "medication-events",
            told.prescribed("warfarin", "Coumadin"),
            told.prescribed("aspirin", "Aspirin 81 mg", rxnorm_code="1191"),
            refused.prescribed("warfarin", "Coumadin"),
            refused.prescribed("aspirin", "Aspirin 81 mg", rxnorm_code="1191"),
        )
        await publish(
            settings,
            "schedule-events",
            told.make(
                "ScheduleSet",
                medication_id="warfarin",
                timezone="UTC",
                times_of_day=[slot.strftime("%H:%M:%S")],
            ),
        )
        await produce(
            settings,
            settings.topic_name("medication-events"),
            [(b"dash-garbage", b"\xff not an event")],
        )

        samples: Samples = {}

        async def everything_counted(http: aiohttp.ClientSession) -> bool:
            nonlocal samples
            async with http.get(url) as response:
                assert response.status == 200
                samples = parse(await response.text())
            return (
                value(
                    samples,
                    "medstream_deliveries_total",
                    channel_kind="webhook",
                    status="delivered",
                )
                >= 2  # the interaction warning and the reminder
                and value(
                    samples, "medstream_deliveries_total", channel_kind="webhook", status="failed"
                )
                >= 1
                and value(samples, "medstream_dead_letters_total") >= 1
                and value(samples, "medstream_reminder_lateness_seconds_count") >= 1
                and has_series(samples, "medstream_consumer_lag")
            )

        deadline = time.monotonic() + 240
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            while not await everything_counted(http):
                assert worker.running, worker.log_tail()
                assert time.monotonic() < deadline, (
                    f"not everything was counted: {counted(samples)}\n{worker.log_tail()}"
                )
                await asyncio.sleep(1)
    finally:
        worker.stop(timeout=60)

    names = {name for name, _ in samples}
    queried = queried_names()
    assert len(queried) >= 10
    assert queried <= names, f"queried but not on /metrics: {sorted(queried - names)}"

    # The series the panels and rules group by carry the labels they group by.
    lag_labels = {
        frozenset(dict(labels)) for name, labels in samples if name == "medstream_consumer_lag"
    }
    assert lag_labels == {frozenset({"topic", "partition"})}
    assert (
        value(
            samples,
            "medstream_events_consumed_total",
            topic=settings.topic_name("medication-events"),
        )
        >= 5
    )
    assert (
        value(samples, "medstream_events_processed_total", event_type="MedicationPrescribed") >= 4
    )
    assert value(samples, "medstream_processing_seconds_count", agent="apply-patient-events") >= 1
    assert ("medstream_state_restored_records_total", ()) in samples
    assert samples[("medstream_ready", ())] == 1
    agents = {
        dict(labels)["agent"]: found
        for (name, labels), found in samples.items()
        if name == "medstream_agent_up"
    }
    assert agents
    assert set(agents.values()) == {1}
    # The reminder was acknowledged within seconds of its slot, by the worker's clock.
    assert 0 <= value(samples, "medstream_reminder_lateness_seconds_sum") < 30
    reasons = {
        dict(labels)["reason"] for name, labels in samples if name == "medstream_dead_letters_total"
    }
    assert reasons
    # What the webhook received: the warning and the reminder of the patient who is told.
    kinds = {request["body"]["event_type"] for request in receiver.for_path(told.patient_id)}
    assert {"InteractionWarning", "ReminderDue"} <= kinds, kinds
