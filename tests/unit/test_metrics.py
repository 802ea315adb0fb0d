"""The Prometheus metric families and their exposition."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from streams.observability.metrics import Metrics, collect_from_app

FAMILIES = {
    "medstream_events_consumed": "counter",
    "medstream_events_produced": "counter",
    "medstream_events_processed": "counter",
    "medstream_dead_letters": "counter",
    "medstream_duplicates": "counter",
    "medstream_processing_seconds": "histogram",
    "medstream_deliveries": "counter",
    "medstream_dose_answers": "counter",
    "medstream_unresolved_medication_names": "counter",
    # An unlabelled counter has its one series, and its creation time, from the start.
    "medstream_unresolved_medication_names_created": "gauge",
    "medstream_state_restored_records": "counter",
    "medstream_state_restored_records_created": "gauge",
    "medstream_consumer_lag": "gauge",
    "medstream_table_entries": "gauge",
    "medstream_agent_up": "gauge",
    "medstream_partition_stalled": "gauge",
    "medstream_reminder_lateness_seconds": "histogram",
    "medstream_reminder_lateness_seconds_created": "gauge",
    "medstream_ready": "gauge",
}


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_every_family_is_rendered_even_before_any_sample() -> None:
    families = {
        family.name: family.type
        for family in text_string_to_metric_families(Metrics().render().decode())
    }
    assert families == FAMILIES


def test_unresolved_medication_names_are_counted_without_labels() -> None:
    metrics = Metrics()
    assert samples(metrics)[("medstream_unresolved_medication_names_total", ())] == 0
    metrics.unresolved_medication_name()
    metrics.unresolved_medication_name()
    assert samples(metrics)[("medstream_unresolved_medication_names_total", ())] == 2


def test_counters_histogram_and_gauges_move() -> None:
    metrics = Metrics()
    metrics.consumed("medication-events")
    metrics.consumed("medication-events")
    metrics.produced("dead-letters")
    metrics.dead_lettered("EventValidationError")
    metrics.duplicate("DoseTaken")
    metrics.observe_processing("patient-events", 0.02)
    metrics.delivery("webhook", "delivered")
    metrics.set_lag("medication-events", 1, 7)
    metrics.set_table_entries("state-by-patient", 3)
    found = samples(metrics)
    assert found[("medstream_events_consumed_total", (("topic", "medication-events"),))] == 2
    assert found[("medstream_events_produced_total", (("topic", "dead-letters"),))] == 1
    assert found[("medstream_dead_letters_total", (("reason", "EventValidationError"),))] == 1
    assert found[("medstream_duplicates_total", (("event_type", "DoseTaken"),))] == 1
    assert found[("medstream_processing_seconds_count", (("agent", "patient-events"),))] == 1
    assert found[("medstream_processing_seconds_sum", (("agent", "patient-events"),))] == 0.02
    assert (
        found[
            ("medstream_deliveries_total", (("channel_kind", "webhook"), ("status", "delivered")))
        ]
        == 1
    )
    assert (
        found[("medstream_consumer_lag", (("partition", "1"), ("topic", "medication-events")))] == 7
    )
    assert found[("medstream_table_entries", (("table", "state-by-patient"),))] == 3


def test_reminder_lateness_is_a_histogram_without_labels_and_never_negative() -> None:
    metrics = Metrics()
    assert samples(metrics)[("medstream_reminder_lateness_seconds_count", ())] == 0
    metrics.observe_reminder_lateness(0.07)
    metrics.observe_reminder_lateness(45.0)
    metrics.observe_reminder_lateness(-0.5)  # a clock step back: counted as on time
    found = samples(metrics)
    assert found[("medstream_reminder_lateness_seconds_count", ())] == 3
    assert found[("medstream_reminder_lateness_seconds_sum", ())] == 45.07
    assert found[("medstream_reminder_lateness_seconds_bucket", (("le", "0.05"),))] == 1
    assert found[("medstream_reminder_lateness_seconds_bucket", (("le", "0.1"),))] == 2
    assert found[("medstream_reminder_lateness_seconds_bucket", (("le", "30.0"),))] == 2
    assert found[("medstream_reminder_lateness_seconds_bucket", (("le", "60.0"),))] == 3
    assert found[("medstream_reminder_lateness_seconds_bucket", (("le", "600.0"),))] == 3


def test_ready_is_a_gauge_of_zero_or_one() -> None:
    metrics = Metrics()
    assert samples(metrics)[("medstream_ready", ())] == 0
    metrics.set_ready(True)
    assert samples(metrics)[("medstream_ready", ())] == 1
    metrics.set_ready(False)
    assert samples(metrics)[("medstream_ready", ())] == 0


def test_each_metrics_object_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.consumed("a")
    assert ("medstream_events_consumed_total", (("topic", "a"),)) not in samples(second)


class FakeTP:
    def __init__(self, topic: str, partition: int) -> None:
        self.topic, self.partition = topic, partition


class FakeMonitor:
    def __init__(self, read: dict[Any, int]) -> None:
        self.tp_read_offsets = read


class FakeConsumer:
    def __init__(
        self,
        assigned: set[Any],
        highwaters: dict[Any, int | None],
        committed: dict[Any, int],
        read: dict[Any, int],
    ) -> None:
        self._assigned = assigned
        self._highwaters = highwaters
        self._committed_offset = committed
        self.app = FakeApp(self, read)

    def assignment(self) -> set[Any]:
        return self._assigned

    def highwater(self, tp: Any) -> int | None:
        return self._highwaters[tp]


class FakeApp:
    def __init__(self, consumer: FakeConsumer, read: dict[Any, int]) -> None:
        self.consumer = consumer
        self.monitor = FakeMonitor(read)


def test_collect_from_app_computes_lag_and_table_sizes_and_forgets_revoked_partitions() -> None:
    committed_tp, read_tp, unknown_tp = FakeTP("e", 0), FakeTP("e", 1), FakeTP("e", 2)
    consumer = FakeConsumer(
        {committed_tp, read_tp, unknown_tp},
        {committed_tp: 10, read_tp: 5, unknown_tp: None},
        {committed_tp: 4},
        {read_tp: 2},
    )
    metrics = Metrics()
    app: Any = consumer.app
    collect_from_app(metrics, app, {"state": {"p1": 1, "p2": 2}})
    found = samples(metrics)
    assert found[("medstream_consumer_lag", (("partition", "0"), ("topic", "e")))] == 6
    assert found[("medstream_consumer_lag", (("partition", "1"), ("topic", "e")))] == 2
    assert ("medstream_consumer_lag", (("partition", "2"), ("topic", "e"))) not in found
    assert found[("medstream_table_entries", (("table", "state"),))] == 2

    consumer._assigned = {committed_tp}
    collect_from_app(metrics, app, {})
    assert metrics.lag_partitions() == {("e", 0)}
