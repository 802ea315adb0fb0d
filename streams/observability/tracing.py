"""OpenTelemetry tracing across Kafka hops: W3C trace context in record headers, spans per hop."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "Context",
    "KafkaHeaders",
    "Span",
    "SpanKind",
    "configure_tracing",
    "consume_span",
    "current_context",
    "extract_context",
    "inject_headers",
    "inject_http_headers",
    "name_event",
    "produce_span",
    "span",
    "tracer",
    "use_tracer_provider",
    "within",
]

log = logging.getLogger(__name__)

INSTRUMENTATION_NAME = "medstream"
DEFAULT_SERVICE_NAME = "medstream"

# Kafka record headers as Faust and aiokafka hand them over: (name, bytes) pairs, or a mapping.
KafkaHeaders = Sequence[tuple[str, bytes | None]] | Mapping[str, bytes | None]

# Only W3C trace context (traceparent, tracestate) crosses a hop: baggage could carry anything,
# patient data included, so it is neither read nor written whatever OTEL_PROPAGATORS says.
_PROPAGATOR = TraceContextTextMapPropagator()

_provider: TracerProvider | None = None
_configured: TracerProvider | None = None
_tracer: Tracer | None = None
# Whether spans record, once known: asking the API reads the environment each time while no
# global provider is set, several times per event. Reset by use_tracer_provider.
_records: bool | None = None


class _KafkaHeadersGetter(Getter[KafkaHeaders]):
    def get(self, carrier: KafkaHeaders, key: str) -> list[str] | None:
        items = carrier.items() if isinstance(carrier, Mapping) else carrier
        for name, value in items:
            if name.lower() == key and value is not None:
                return [value.decode("ascii", "replace")]
        return None

    def keys(self, carrier: KafkaHeaders) -> list[str]:
        return [name for name, _ in (carrier.items() if isinstance(carrier, Mapping) else carrier)]


class _KafkaHeadersSetter(Setter[list[tuple[str, bytes]]]):
    def set(self, carrier: list[tuple[str, bytes]], key: str, value: str) -> None:
        # Replaced, not appended: a second traceparent would make the parent ambiguous.
        carrier[:] = [(name, item) for name, item in carrier if name.lower() != key]
        carrier.append((key, value.encode("ascii")))


_GETTER = _KafkaHeadersGetter()
_SETTER = _KafkaHeadersSetter()


def use_tracer_provider(provider: TracerProvider | None) -> None:
    """Make medstream's spans go to ``provider`` (None: back to the global one).

    The global provider can be set once per process; tests set their own here instead.
    """
    global _provider, _tracer, _records
    _provider = provider
    _tracer = None
    _records = None


def tracer() -> Tracer:
    """medstream's tracer: a no-op until a provider is configured."""
    global _tracer
    if _tracer is None:
        # Without a configured SDK this is the API's proxy tracer: its spans are non-recording
        # and cost next to nothing, and it follows a global provider set later.
        provider = _provider if _provider is not None else trace.get_tracer_provider()
        _tracer = provider.get_tracer(INSTRUMENTATION_NAME)
    return _tracer


def extract_context(headers: KafkaHeaders | None) -> Context:
    """The trace context an upstream producer put in a record's headers (empty if none)."""
    return _PROPAGATOR.extract(headers or [], context=Context(), getter=_GETTER)


def inject_headers(
    headers: Sequence[tuple[str, bytes]] = (), context: Context | None = None
) -> list[tuple[str, bytes]]:
    """Record headers carrying the current (or given) trace context, beside ``headers``."""
    carrier = list(headers)
    _PROPAGATOR.inject(carrier, context=context, setter=_SETTER)
    return carrier


def inject_http_headers(headers: MutableMapping[str, str], context: Context | None = None) -> None:
    """Add ``traceparent`` (and ``tracestate``) of the current trace to HTTP request headers."""
    _PROPAGATOR.inject(headers, context=context)


def current_context() -> Context:
    """The active trace context, to hand to a task that outlives the current span."""
    return otel_context.get_current()


@contextmanager
def within(context: Context | None) -> Iterator[None]:
    """Make ``context`` (captured with :func:`current_context`) current in this block."""
    if context is None:
        yield
        return
    token = otel_context.attach(context)
    try:
        yield
    finally:
        otel_context.detach(token)


@contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    context: Context | None = None,
    attributes: Mapping[str, str | int] | None = None,
) -> Iterator[Span]:
    """A current span; ``context`` parents it explicitly (e.g. in a background task)."""
    if not _recording():
        # No SDK: no span is made, but a given context (an upstream parent) becomes current,
        # so that its traceparent still passes through to what is sent downstream.
        if context is None:
            yield trace.get_current_span()
            return
        token = otel_context.attach(context)
        try:
            yield trace.get_current_span(context)
        finally:
            otel_context.detach(token)
        return
    # The SDK would record the exception's text, which may quote an event or name a target:
    # only the exception's type is kept.
    with tracer().start_as_current_span(
        name,
        context=context,
        kind=kind,
        attributes=dict(attributes or {}),
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except Exception as error:
            current.set_attribute("error.type", type(error).__name__)
            current.set_status(Status(StatusCode.ERROR, type(error).__name__))
            raise


# Faust's own hook (faust.contrib.opentelemetry.OpenTelemetrySensor) is not used: it puts the
# record key, which is the patient_id, in a span attribute, cannot name a span by event type
# (it runs before decoding), and never injects into what the agents send.
@contextmanager
def consume_span(
    topic: str, partition: int, offset: int, headers: KafkaHeaders | None
) -> Iterator[Span]:
    """The span of a record read from Kafka, child of its producer's span when it has one.

    Named ``consume <topic>`` until the caller knows the event type (``name_event``).
    """
    parent = extract_context(headers) if headers else Context()
    if not _recording():
        with span("", context=parent) as current:
            yield current
        return
    with span(
        f"consume {topic}",
        kind=SpanKind.CONSUMER,
        context=parent,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "receive",
            "messaging.destination.name": topic,
            "messaging.destination.partition.id": str(partition),
            "messaging.kafka.message.offset": offset,
        },
    ) as current:
        yield current


def name_event(current: Span, hop: str, event_type: str) -> None:
    """Rename a hop's span once the event type is known (e.g. ``consume <topic> <type>``)."""
    if current.is_recording():
        current.update_name(f"{hop} {event_type}")
        current.set_attribute("medstream.event_type", event_type)


@contextmanager
def produce_span(
    topic: str, event_type: str, event_id: str | None = None, *, new_trace: bool = False
) -> Iterator[list[tuple[str, bytes]]]:
    """The span of sending one event; yields the record headers that carry its context.

    Give ``event_id`` only for medstream's own outputs, whose ids are digests: an upstream id
    may be made from a patient id. ``new_trace`` starts a trace even without a configured SDK
    (an upstream producer such as ``medstream publish``), so that the hops downstream join it.
    """
    recording = _recording()
    if not recording and not new_trace:
        yield inject_headers()  # passes an upstream traceparent through, if there is one
        return
    attributes: dict[str, str | int] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "send",
        "messaging.destination.name": topic,
        "medstream.event_type": event_type,
    }
    if event_id is not None:
        attributes["medstream.event_id"] = event_id
    name = f"produce {topic} {event_type}"
    if not recording:
        # No SDK here: ids come from an exporter-less SDK tracer, so the trace still starts.
        with _id_only_tracer().start_as_current_span(
            name, context=Context(), kind=SpanKind.PRODUCER, attributes=attributes
        ):
            yield inject_headers()
        return
    with span(
        name,
        kind=SpanKind.PRODUCER,
        context=Context() if new_trace else None,
        attributes=attributes,
    ):
        yield inject_headers()


def _recording() -> bool:
    """An SDK (or any real provider) is configured: its spans have ids.

    Known from the first span on: a global provider set by other code after that counts from
    the next ``use_tracer_provider`` (``configure_tracing`` calls it).
    """
    global _records
    if _records is None:
        provider = _provider if _provider is not None else trace.get_tracer_provider()
        _records = not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)
    return _records


_ID_ONLY_TRACER: Tracer | None = None


def _id_only_tracer() -> Tracer:
    global _ID_ONLY_TRACER
    if _ID_ONLY_TRACER is None:
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

        _ID_ONLY_TRACER = SdkTracerProvider().get_tracer(INSTRUMENTATION_NAME)
    return _ID_ONLY_TRACER


def configure_tracing(
    environ: Mapping[str, str] | None = None, *, set_global: bool = True
) -> TracerProvider | None:
    """Set up the SDK from the standard variables; returns the provider (None: tracing off).

    ``OTEL_TRACES_EXPORTER`` lists exporters (``console``, ``otlp``; default ``none``),
    ``OTEL_SERVICE_NAME`` names the service (default "medstream"), and the OTLP exporter
    (HTTP/protobuf) reads ``OTEL_EXPORTER_OTLP_*`` (endpoint, headers, timeout...) itself.
    """
    global _configured
    if _configured is not None and set_global:
        return _configured  # the global provider can be set only once
    env = os.environ if environ is None else environ
    names = [
        name.strip().lower()
        for name in env.get("OTEL_TRACES_EXPORTER", "none").split(",")
        if name.strip()
    ]
    if not names or names == ["none"] or env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None

    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    resource = Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME})
    provider = SdkTracerProvider(resource=resource)
    for name in names:
        exporter: SpanExporter
        if name == "console":
            # One compact JSON object per line, like the worker's logs (the default is indented).
            exporter = ConsoleSpanExporter(formatter=lambda span: span.to_json(None) + "\n")
        elif name == "otlp":
            protocol = env.get(
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
            )
            if protocol and protocol != "http/protobuf":
                log.warning("OTLP protocol %s is not supported; using http/protobuf", protocol)
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        elif name == "none":
            continue
        else:
            log.warning("unknown OTEL_TRACES_EXPORTER %s ignored (console, otlp, none)", name)
            continue
        provider.add_span_processor(BatchSpanProcessor(exporter))
    if set_global:
        trace.set_tracer_provider(provider)
        use_tracer_provider(provider)
        _configured = provider
    log.info("tracing on: exporters=%s", ",".join(names))
    return provider
