"""Prometheus metrics of one medstream app, kept in the app's own registry."""

from __future__ import annotations

import collections
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import faust
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from streams.observability.liveness import Liveness

log = logging.getLogger(__name__)

__all__ = ["CONTENT_TYPE_LATEST", "CountsByLabel", "Metrics", "collect_from_app"]

# A counter's values by label value, as Python counts them (the name Counter is Prometheus's).
CountsByLabel = collections.Counter[str]

# Processing of one event is usually milliseconds; a notification delivery with retries can
# take tens of seconds.
PROCESSING_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A reminder is normally sent within a tick (0.2 s) of its slot; one caught up after a restart
# may be up to MEDSTREAM_REMINDER_CATCH_UP_MINUTES late (beyond 600 s: only +Inf).
REMINDER_LATENESS_BUCKETS = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)


class Metrics:
    """The medstream metric families in a registry of their own.

    Each app gets its own ``CollectorRegistry``, so several apps in one process (tests) never
    clash over the global registry. Label values are topics, event types, error types, agent
    names and channel kinds: never anything taken from an event's payload.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        # The labelled series of the counters and histograms counted per event, by family
        # and label value: ``labels()`` costs more than the increment. (Gauges whose series
        # are removed are not kept here.)
        self._series: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._consumed = Counter(
            "medstream_events_consumed",
            "Records read from Kafka by the agents, per topic.",
            ["topic"],
            registry=self.registry,
        )
        self._produced = Counter(
            "medstream_events_produced",
            "Events published to Kafka, per topic.",
            ["topic"],
            registry=self.registry,
        )
        self._processed = Counter(
            "medstream_events_processed",
            "Events an agent handled and made durable, per event type.",
            ["event_type"],
            registry=self.registry,
        )
        self._dead_letters = Counter(
            "medstream_dead_letters",
            "Records sent to dead-letters, per error type.",
            ["reason"],
            registry=self.registry,
        )
        self._duplicates = Counter(
            "medstream_duplicates",
            "Events recognised as duplicates and skipped, per event type.",
            ["event_type"],
            registry=self.registry,
        )
        self._processing = Histogram(
            "medstream_processing_seconds",
            "Seconds an agent spent handling one event.",
            ["agent"],
            buckets=PROCESSING_BUCKETS,
            registry=self.registry,
        )
        self._deliveries = Counter(
            "medstream_deliveries",
            "Notification outcomes, per channel kind and status.",
            ["channel_kind", "status"],
            registry=self.registry,
        )
        self._dose_answers = Counter(
            "medstream_dose_answers",
            "DoseTaken and DoseSkipped events, by what they answered: a slot (answered), a slot "
            "answered before (already_answered), or none in its window (no_slot).",
            ["result"],
            registry=self.registry,
        )
        self._unresolved_names = Counter(
            "medstream_unresolved_medication_names",
            "Prescriptions whose drug the interaction knowledge base could not resolve (no known "
            "RxCUI, and a name that is no known ingredient, synonym or combination of them): "
            "those are checked for no interaction.",
            registry=self.registry,
        )
        self._lag = Gauge(
            "medstream_consumer_lag",
            "Records not yet committed by this worker: high watermark minus committed offset.",
            ["topic", "partition"],
            registry=self.registry,
        )
        self._agent_up = Gauge(
            "medstream_agent_up",
            "1 while the agent runs, 0 after a crash (until it has run the crash window out).",
            ["agent"],
            registry=self.registry,
        )
        self._partition_stalled = Gauge(
            "medstream_partition_stalled",
            "1 when an assigned partition has lag and its offset has not moved for the stall "
            "time (MEDSTREAM_PARTITION_STALL_SECONDS), else 0.",
            ["topic", "partition"],
            registry=self.registry,
        )
        self._restored_records = Counter(
            "medstream_state_restored_records_total",
            "Changelog records this worker read to restore its tables.",
            registry=self.registry,
        )
        self._reminder_lateness = Histogram(
            "medstream_reminder_lateness_seconds",
            "Seconds from a ReminderDue's scheduled_for to the broker's acknowledgement of it.",
            buckets=REMINDER_LATENESS_BUCKETS,
            registry=self.registry,
        )
        self._ready = Gauge(
            "medstream_ready",
            "1 while /ready answers 200 (partitions assigned, tables restored, no agent down, "
            "no partition stalled), else 0; set when /metrics is read.",
            registry=self.registry,
        )
        self._table_entries = Gauge(
            "medstream_table_entries",
            "Keys in a table's partitions held by this worker.",
            ["table"],
            registry=self.registry,
        )

    def _series_of(self, family: Counter | Histogram, *values: str) -> Any:
        key = (id(family), values)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = family.labels(*values)
        return series

    def consumed(self, topic: str) -> None:
        """One record read from ``topic``."""
        self._series_of(self._consumed, topic).inc()

    def produced(self, topic: str, count: int = 1) -> None:
        """``count`` events (one by default) published to ``topic``."""
        self._series_of(self._produced, topic).inc(count)

    def processed(self, event_type: str) -> None:
        """One event of ``event_type`` handled and made durable."""
        self._series_of(self._processed, event_type).inc()

    def dead_lettered(self, error_type: str) -> None:
        """One record dead-lettered because of ``error_type``."""
        self._series_of(self._dead_letters, error_type).inc()

    def duplicate(self, event_type: str) -> None:
        """One duplicate event of ``event_type`` skipped."""
        self._series_of(self._duplicates, event_type).inc()

    def observe_processing(self, agent: str, seconds: float) -> None:
        """How long ``agent`` took for one event."""
        self._series_of(self._processing, agent).observe(seconds)

    def delivery(self, channel_kind: str, status: str) -> None:
        """One notification outcome (delivered, failed, suppressed...) on a kind of channel."""
        self._series_of(self._deliveries, channel_kind, status).inc()

    def dose_answer(self, result: str) -> None:
        """One DoseTaken or DoseSkipped and what it answered (answered, already_answered,
        no_slot)."""
        self._series_of(self._dose_answers, result).inc()

    def unresolved_medication_name(self) -> None:
        """One prescription whose drug name resolved to no known ingredient."""
        self._unresolved_names.inc()

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        """The lag of one partition."""
        self._lag.labels(topic=topic, partition=str(partition)).set(lag)

    def forget_lag(self, topic: str, partition: int) -> None:
        """Drop a partition's lag series (the partition moved to another worker)."""
        with contextlib.suppress(KeyError):
            self._lag.remove(topic, str(partition))

    def lag_partitions(self) -> set[tuple[str, int]]:
        """The (topic, partition) pairs that currently have a lag series."""
        found: set[tuple[str, int]] = set()
        for family in self._lag.collect():
            for sample in family.samples:
                found.add((sample.labels["topic"], int(sample.labels["partition"])))
        return found

    def restored(self, records: int) -> None:
        """A restore of the tables read ``records`` changelog records."""
        self._restored_records.inc(records)

    def observe_reminder_lateness(self, seconds: float) -> None:
        """A ReminderDue acknowledged ``seconds`` after its slot (never below 0)."""
        self._reminder_lateness.observe(max(0.0, seconds))

    def set_ready(self, ready: bool) -> None:
        """Whether the worker is ready (1) or not (0), as /ready answers."""
        self._ready.set(1 if ready else 0)

    def set_table_entries(self, table: str, n: int) -> None:
        """The number of keys of ``table`` held by this worker."""
        self._table_entries.labels(table=table).set(n)

    def set_agent_up(self, agent: str, up: bool) -> None:
        """Whether ``agent`` runs (1) or is down after a crash (0)."""
        self._agent_up.labels(agent=agent).set(1 if up else 0)

    def set_partition_stalls(self, stalls: Mapping[tuple[str, int], bool]) -> None:
        """Every assigned partition and whether it is stalled; others lose their series."""
        self._partition_stalled.clear()
        for (topic, partition), stalled in stalls.items():
            self._partition_stalled.labels(topic=topic, partition=str(partition)).set(
                1 if stalled else 0
            )

    def counts(self, family: str) -> CountsByLabel:
        """The current values of a one-label counter (``consumed``, ``produced``,
        ``processed``, ``duplicates``, ``dead_letters``), by its label's value."""
        counter = self._counters()[family]
        found: CountsByLabel = CountsByLabel()
        for metric in counter.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    (value,) = sample.labels.values()
                    found[value] = int(sample.value)
        return found

    def _counters(self) -> dict[str, Counter]:
        return {
            "consumed": self._consumed,
            "produced": self._produced,
            "processed": self._processed,
            "duplicates": self._duplicates,
            "dead_letters": self._dead_letters,
        }

    def render(self) -> bytes:
        """Every family in the Prometheus text exposition format."""
        return generate_latest(self.registry)


def _lag_of(consumer: Any, tp: Any) -> int | None:
    """High watermark minus the committed offset (both "next offset" positions), if known."""
    try:
        highwater = consumer.highwater(tp)
    except Exception:  # aiokafka asserts when the partition was just revoked
        return None
    if highwater is None or highwater < 0:
        return None
    committed = consumer._committed_offset.get(tp)
    if committed is None:
        # Nothing committed yet by this group: fall back to what this worker has read.
        read = consumer.app.monitor.tp_read_offsets.get(tp)
        if read is None:
            return None
        committed = read + 1
    return max(0, int(highwater) - int(committed))


def collect_from_app(
    metrics: Metrics, app: faust.App, tables: Mapping[str, Any], liveness: Liveness | None = None
) -> None:
    """Refresh the gauges that describe the running app: consumer lag, table sizes and, with
    ``liveness``, agents up and partitions stalled.

    Lag is computed per assigned partition from what the Faust consumer already knows (the
    high watermark of the last fetch and the offset last committed), so this never waits on
    the broker. Partitions whose values are not known yet get no series; partitions no
    longer assigned lose theirs.
    """
    seen: set[tuple[str, int]] = set()
    try:
        consumer: Any = app.consumer
        assignment = consumer.assignment()
    except Exception:  # the consumer is not started (or already stopped)
        assignment = set()
    for tp in assignment:
        lag = _lag_of(consumer, tp)
        if lag is None:
            continue
        metrics.set_lag(tp.topic, tp.partition, lag)
        seen.add((tp.topic, tp.partition))
    for topic, partition in metrics.lag_partitions() - seen:
        metrics.forget_lag(topic, partition)
    if liveness is not None:
        down = liveness.agents_down()
        for agent in sorted(liveness.agents | set(down)):
            metrics.set_agent_up(agent, agent not in down and liveness.fatal is None)
        metrics.set_partition_stalls(liveness.partitions())
    for name, table in tables.items():
        try:
            metrics.set_table_entries(name, len(table))
        except Exception as error:  # a store that cannot be read now must not break /metrics
            log.warning("table size unavailable: table=%s error=%s", name, type(error).__name__)
