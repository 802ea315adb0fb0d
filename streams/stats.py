"""What the pipeline did since the worker started, read from its metrics (for tests and benches)."""

from __future__ import annotations

from dataclasses import dataclass

from streams.observability.metrics import CountsByLabel, Metrics


@dataclass(frozen=True)
class PipelineStats:
    """A read-only view of the app's Prometheus counters: one source of counts, not two.

    Keys are topics (consumed, produced), event types (processed, duplicates) or error types
    (dead_lettered); each property is a fresh snapshot.
    """

    metrics: Metrics

    @property
    def consumed(self) -> CountsByLabel:
        return self.metrics.counts("consumed")

    @property
    def processed(self) -> CountsByLabel:
        return self.metrics.counts("processed")

    @property
    def duplicates(self) -> CountsByLabel:
        return self.metrics.counts("duplicates")

    @property
    def dead_lettered(self) -> CountsByLabel:
        return self.metrics.counts("dead_letters")

    @property
    def produced(self) -> CountsByLabel:
        return self.metrics.counts("produced")

    @property
    def total_consumed(self) -> int:
        return sum(self.consumed.values())

    @property
    def total_settled(self) -> int:
        """Events whose fate is decided: processed, recognised as duplicates or dead-lettered."""
        return (
            sum(self.processed.values())
            + sum(self.duplicates.values())
            + sum(self.dead_lettered.values())
        )
