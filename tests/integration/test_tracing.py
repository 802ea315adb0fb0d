"""One trace from an upstream producer to the webhook call, across the real broker."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import get_current_span

from streams.app import create_app
from streams.kafka_client import client_options
from streams.observability import tracing
from streams.publish import check_events, publish_events
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.integration.conftest import Receiver
from tests.integration.test_notifier import notifier_settings, outcomes
from tests.integration.test_patient_state import Events, publish
from tests.kafka_helpers import consume, running

pytestmark = pytest.mark.integration

PATIENT_ID = "p-trace-7f3c2a"


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_tracer_provider(provider)
    try:
        yield provider, exporter
    finally:
        tracing.use_tracer_provider(None)
        provider.shutdown()


def _opaque_ids(event: dict[str, Any]) -> dict[str, Any]:
    # Upstream ids are often made from the patient id (as Events does); these are not.
    return {**event, "event_id": f"evt-{uuid.uuid4().hex}"}


async def _publish_with_headers(
    settings: Settings, topic: str, event: dict[str, Any], headers: list[tuple[str, bytes]]
) -> None:
    producer = AIOKafkaProducer(acks="all", **client_options(settings))
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topic_name(topic),
            json.dumps(event).encode(),
            key=event["patient_id"].encode(),
            headers=headers,
        )
    finally:
        await producer.stop()


async def _eventually(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def _texts(span: ReadableSpan) -> list[str]:
    """Everything a span exports that could carry data: name, attributes, status, events."""
    texts = [span.name, span.status.description or ""]
    texts += [str(value) for value in (span.attributes or {}).values()]
    for event in span.events:
        texts += [event.name, *(str(value) for value in (event.attributes or {}).values())]
    return texts


async def test_one_trace_from_the_upstream_producer_to_the_webhook_call(
    settings: Settings,
    receiver: Receiver,
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    settings = notifier_settings(settings)
    await ensure_topics(settings)
    medstream = create_app(settings)
    events = Events(PATIENT_ID)
    webhook_url = f"{receiver.url}/{PATIENT_ID}"
    async with running(medstream):
        await publish(
            settings,
            "patient-events",
            _opaque_ids(
                events.make(
                    "ContactPreferencesSet",
                    channels=[{"kind": "webhook", "target": webhook_url}],
                    timezone="Europe/Berlin",
                )
            ),
        )
        # Two input topics have no order between them: the contact must be applied first.
        await _eventually(
            lambda: medstream.patients.store.state(PATIENT_ID).contact is not None,
            30,
            "the contact preferences",
        )
        upstream_tracer = provider.get_tracer("upstream-ehr")
        with upstream_tracer.start_as_current_span("upstream publish") as upstream:
            headers = tracing.inject_headers()
        await _publish_with_headers(
            settings,
            "medication-events",
            _opaque_ids(events.prescribed("m1", "Metformin 500 mg", supply_quantity=0)),
            headers,
        )
        await _eventually(lambda: receiver.traceparents, 30, "the webhook call")
        (outcome,) = await outcomes(settings, 1)
        # The outcome's own consumption (record-deliveries) ends the chain.
        names = lambda: {span.name for span in exporter.get_finished_spans()}  # noqa: E731
        await _eventually(
            lambda: (
                f"consume {settings.topic_name('notifications')} NotificationOutcome" in names()
            ),
            30,
            "the outcome's consumption",
        )

    assert outcome["status"] == "delivered"
    trace_id = upstream.get_span_context().trace_id
    (traceparent,) = receiver.traceparents
    assert traceparent is not None
    assert traceparent.split("-")[1] == f"{trace_id:032x}"

    finished = exporter.get_finished_spans()
    in_trace = {span.name: span for span in finished if span.context.trace_id == trace_id}
    medication_events = settings.topic_name("medication-events")
    refill_alerts = settings.topic_name("refill-alerts")
    notifications = settings.topic_name("notifications")
    hops = [
        f"consume {medication_events} MedicationPrescribed",
        "process apply-patient-events MedicationPrescribed",
        f"produce {refill_alerts} RefillAlert",
        f"consume {refill_alerts} RefillAlert",
        "process notify-alerts RefillAlert",
        "notify RefillAlert",
        "deliver webhook RefillAlert",
        f"produce {notifications} NotificationOutcome",
        f"consume {notifications} NotificationOutcome",
    ]
    missing = [hop for hop in hops if hop not in in_trace]
    assert not missing, f"not in the upstream trace: {missing}; spans: {sorted(in_trace)}"

    # Each hop is the child of the one before (the channel call of the delivery's span).
    def parent_of(name: str) -> int | None:
        parent = in_trace[name].parent
        return None if parent is None else parent.span_id

    assert parent_of(hops[0]) == upstream.get_span_context().span_id
    for child, parent in [(1, 0), (2, 1), (3, 2), (4, 3), (5, 4), (6, 5), (7, 5), (8, 7)]:
        assert parent_of(hops[child]) == in_trace[hops[parent]].context.span_id, hops[child]
    assert traceparent.split("-")[2] == f"{in_trace[hops[6]].context.span_id:016x}"

    attributes = in_trace[hops[0]].attributes or {}
    assert attributes["messaging.system"] == "kafka"
    assert attributes["messaging.destination.name"] == medication_events
    assert "messaging.kafka.message.offset" in attributes

    leaks = [
        (span.name, text)
        for span in finished
        for text in _texts(span)
        if PATIENT_ID in text or receiver.url in text or "127.0.0.1" in text
    ]
    assert not leaks


async def test_publish_starts_a_trace_per_event_and_sends_its_traceparent(
    settings: Settings, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    _provider, exporter = spans
    await ensure_topics(settings)
    events = Events(PATIENT_ID)
    text = "\n".join(
        json.dumps(_opaque_ids(events.make("MedicationDiscontinued", medication_id=f"m{n}")))
        for n in range(2)
    )
    checked = check_events(text)
    assert not checked.invalid
    await publish_events(settings, checked.valid)
    records = await consume(settings, settings.topic_name("medication-events"), 2, 20)

    produced = exporter.get_finished_spans()
    assert [span.name for span in produced] == [
        f"produce {settings.topic_name('medication-events')} MedicationDiscontinued"
    ] * 2
    assert all(span.parent is None for span in produced)
    sent = [
        get_current_span(tracing.extract_context(record.headers)).get_span_context()
        for record in records
    ]
    assert [context.span_id for context in sent] == [span.context.span_id for span in produced]
    assert sent[0].trace_id != sent[1].trace_id
