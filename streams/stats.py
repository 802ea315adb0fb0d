"""In-process counters of what the pipeline did (read by tests, status and metrics)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class PipelineStats:
    """Counts since the worker started; keys are topics, event types or error types."""

    consumed: Counter[str] = field(default_factory=Counter)
    processed: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    dead_lettered: Counter[str] = field(default_factory=Counter)
    produced: Counter[str] = field(default_factory=Counter)

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
