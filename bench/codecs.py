"""Codec cost per event: decode + validate + encode, JSON and Avro single-object."""

from __future__ import annotations

import json
import time
import uuid

from bench.harness import Context, EventFactory
from streams.contracts.codecs import EventDecoder, EventEncoder
from streams.contracts.schemas import default_catalog
from streams.settings import OutputEncoding

NAME = "codecs"


def sample_events(count: int) -> list[bytes]:
    """A mix like the pipeline's input, as JSON bytes."""
    factory = EventFactory(f"c{uuid.uuid4().hex[:6]}")
    events = []
    for index in range(count):
        patient = f"p{index % 500}"
        kind = index % 10
        if kind == 0:
            event = factory.contact(patient)
        elif kind == 1:
            event = factory.prescribed(patient, supply=30)
        elif kind == 2:
            event = factory.schedule(patient, "08:00")
        else:
            event = factory.dose(patient)
        events.append(json.dumps(event).encode("utf-8"))
    return events


def per_event_us(decoder: EventDecoder, encoder: EventEncoder, payloads: list[bytes]) -> float:
    started = time.perf_counter()
    for payload in payloads:
        encoder.encode(decoder.decode(payload))
    return (time.perf_counter() - started) / len(payloads) * 1e6


async def run(context: Context) -> None:
    count = context.sizes.codec_events
    catalog = default_catalog()
    decoder = EventDecoder(catalog)
    json_encoder = EventEncoder(catalog, OutputEncoding.JSON)
    avro_encoder = EventEncoder(catalog, OutputEncoding.AVRO)
    payloads = sample_events(count)
    avro_payloads = [avro_encoder.encode(decoder.decode(payload)) for payload in payloads]
    per_event_us(decoder, json_encoder, payloads[:200])  # warm-up
    json_us = per_event_us(decoder, json_encoder, payloads)
    avro_us = per_event_us(decoder, avro_encoder, avro_payloads)
    context.add(NAME, "JSON decode+validate+encode", json_us, "us/event")
    context.add(NAME, "Avro decode+validate+encode", avro_us, "us/event")
    context.add(NAME, "JSON events per core", 1e6 / json_us, "events/s")
    context.add(NAME, "Avro events per core", 1e6 / avro_us, "events/s")
    if context.baseline_eps:
        context.note(
            NAME,
            f"JSON codec alone caps one core at {1e6 / json_us / context.baseline_eps:.2f}x "
            "the baseline pass-through",
        )
    context.note(NAME, f"{count} events (60% DoseTaken, rest setup events), one thread")
