"""Trace context in Kafka and HTTP headers, the hop spans, and the SDK set-up from OTEL_*."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, get_current_span

from streams.observability import tracing

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
PARENT_SPAN_ID = 0xB7AD6B7169203331


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_tracer_provider(provider)
    try:
        yield exporter
    finally:
        tracing.use_tracer_provider(None)


@pytest.fixture
def no_sdk() -> Iterator[None]:
    # Stand-in for "no SDK configured", whatever another test did to the global provider.
    from opentelemetry.trace import NoOpTracerProvider

    tracing.use_tracer_provider(NoOpTracerProvider())
    try:
        yield
    finally:
        tracing.use_tracer_provider(None)


def test_extract_reads_traceparent_from_a_list_of_byte_headers() -> None:
    headers = [("other", b"x"), ("traceparent", TRACEPARENT.encode())]
    context = tracing.extract_context(headers)
    parent = get_current_span(context).get_span_context()
    assert parent.trace_id == TRACE_ID
    assert parent.span_id == PARENT_SPAN_ID
    assert parent.is_remote


def test_extract_reads_a_mapping_and_tolerates_missing_or_bad_headers() -> None:
    mapping = {"traceparent": TRACEPARENT.encode()}
    assert get_current_span(tracing.extract_context(mapping)).get_span_context().trace_id == (
        TRACE_ID
    )
    for headers in (None, [], [("traceparent", None)], [("traceparent", b"garbage")]):
        span_context = get_current_span(tracing.extract_context(headers)).get_span_context()
        assert not span_context.is_valid


def test_inject_then_extract_round_trips_and_replaces_an_old_traceparent(
    spans: InMemorySpanExporter,
) -> None:
    old = [("traceparent", TRACEPARENT.encode()), ("keep", b"1")]
    with tracing.span("hop") as current:
        headers = tracing.inject_headers(old)
    assert ("keep", b"1") in headers
    assert [name for name, _ in headers].count("traceparent") == 1
    assert all(isinstance(value, bytes) for _, value in headers)
    extracted = get_current_span(tracing.extract_context(headers)).get_span_context()
    assert extracted.trace_id == current.get_span_context().trace_id
    assert extracted.span_id == current.get_span_context().span_id


def test_http_headers_get_a_traceparent_of_the_current_span(
    spans: InMemorySpanExporter,
) -> None:
    headers: dict[str, str] = {"Content-Type": "application/json"}
    with tracing.span("deliver") as current:
        tracing.inject_http_headers(headers)
    trace_id = f"{current.get_span_context().trace_id:032x}"
    assert headers["traceparent"].split("-")[1] == trace_id


def test_consume_span_continues_the_producers_trace_and_is_named_by_event(
    spans: InMemorySpanExporter,
) -> None:
    with tracing.consume_span(
        "medication-events", 1, 42, [("traceparent", TRACEPARENT.encode())]
    ) as current:
        tracing.name_event(current, "consume medication-events", "MedicationPrescribed")
        with tracing.produce_span("refill-alerts", "RefillAlert", "alert-1") as headers:
            pass
    produced, consumed = spans.get_finished_spans()
    assert consumed.name == "consume medication-events MedicationPrescribed"
    assert consumed.kind is SpanKind.CONSUMER
    assert consumed.context is not None
    assert consumed.context.trace_id == TRACE_ID
    assert consumed.parent is not None
    assert consumed.parent.span_id == PARENT_SPAN_ID
    assert consumed.attributes is not None
    assert consumed.attributes["messaging.destination.name"] == "medication-events"
    assert consumed.attributes["messaging.destination.partition.id"] == "1"
    assert consumed.attributes["messaging.kafka.message.offset"] == 42
    assert produced.name == "produce refill-alerts RefillAlert"
    assert produced.kind is SpanKind.PRODUCER
    assert produced.context is not None
    assert produced.context.trace_id == TRACE_ID
    downstream = get_current_span(tracing.extract_context(headers)).get_span_context()
    assert downstream.span_id == produced.context.span_id


def test_a_failing_span_keeps_the_exception_type_but_not_its_text(
    spans: InMemorySpanExporter,
) -> None:
    with pytest.raises(ValueError, match="patient"), tracing.span("deliver webhook"):
        raise ValueError("could not reach patient@example.org")
    (failed,) = spans.get_finished_spans()
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "ValueError"
    assert not failed.events
    assert "example.org" not in repr(dict(failed.attributes or {}))


def test_without_an_sdk_spans_cost_nothing_and_inject_nothing(no_sdk: None) -> None:
    with tracing.span("hop") as current:
        assert not current.is_recording()
        assert tracing.inject_headers() == []


def test_an_upstream_producer_starts_a_trace_even_without_an_sdk(no_sdk: None) -> None:
    with tracing.produce_span("medication-events", "DoseTaken", new_trace=True) as headers:
        pass
    (name, _value), *_ = headers
    assert name == "traceparent"
    assert get_current_span(tracing.extract_context(headers)).get_span_context().is_valid


def test_an_upstream_producer_starts_a_new_trace_not_a_child(
    spans: InMemorySpanExporter,
) -> None:
    with (
        tracing.span("unrelated") as outer,
        tracing.produce_span("medication-events", "DoseTaken", new_trace=True),
    ):
        pass
    produced = spans.get_finished_spans()[0]
    assert produced.parent is None
    assert produced.context is not None
    assert produced.context.trace_id != outer.get_span_context().trace_id


def test_configure_tracing_follows_otel_traces_exporter() -> None:
    assert tracing.configure_tracing({}, set_global=False) is None
    assert tracing.configure_tracing({"OTEL_TRACES_EXPORTER": "none"}, set_global=False) is None
    provider = tracing.configure_tracing(
        {"OTEL_TRACES_EXPORTER": "console,otlp", "OTEL_SERVICE_NAME": "medstream-test"},
        set_global=False,
    )
    assert isinstance(provider, TracerProvider)
    assert provider.resource.attributes["service.name"] == "medstream-test"
    exporters = [
        type(processor.span_exporter).__name__  # type: ignore[attr-defined]
        for processor in provider._active_span_processor._span_processors
    ]
    assert exporters == ["ConsoleSpanExporter", "OTLPSpanExporter"]
    provider.shutdown()
    default = tracing.configure_tracing({"OTEL_TRACES_EXPORTER": "console"}, set_global=False)
    assert isinstance(default, TracerProvider)
    assert default.resource.attributes["service.name"] == "medstream"
    default.shutdown()


def test_extract_ignores_the_current_context() -> None:
    # A record without traceparent starts a new trace, whatever span is current.
    assert tracing.extract_context([]) == Context()


def test_without_an_sdk_an_upstream_traceparent_passes_through_a_hop(no_sdk: None) -> None:
    upstream = [("traceparent", TRACEPARENT.encode())]
    with (
        tracing.consume_span("medication-events", 0, 7, upstream),
        tracing.span("process apply-patient-events MedicationPrescribed"),
        tracing.produce_span("refill-alerts", "RefillAlert", "alert-1") as headers,
    ):
        http: dict[str, str] = {}
        tracing.inject_http_headers(http)
    assert headers == upstream
    assert http == {"traceparent": TRACEPARENT}
    # Nothing stays attached after the hop.
    assert not get_current_span().get_span_context().is_valid
