"""What the worker knows about its own health: crashed agents and stalled partitions."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from mode import OneForOneSupervisor, ServiceT

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True)
class PartitionPosition:
    """One assigned partition as the consumer sees it: where the group is and where the end is.

    ``position`` is the committed offset (else the next offset after the last one read): the
    point up to which events are handled. ``end`` is the high watermark of the last fetch.
    """

    topic: str
    partition: int
    position: int | None
    end: int | None
    paused: bool = False

    @property
    def has_lag(self) -> bool:
        if self.end is None:
            return False
        return self.end > (self.position or 0)


@dataclass
class _Progress:
    position: int | None
    # Since when the partition has had lag without its position moving (None: no lag).
    stuck_since: float | None


@dataclass
class Liveness:
    """Crashes and stalls, as /ready, /metrics and the worker's exit code report them.

    An agent that crashed (an exception escaped it) is down until it has run
    ``crash_window_seconds`` without crashing again; a second crash within that window is
    fatal: the worker stops with exit code 1, so an orchestrator replaces it. A partition is
    stalled when it has lag and its position has not moved for ``stall_seconds``; a paused
    partition waits on purpose and never counts. Nothing here holds patient data: agents,
    topics, partitions and exception type names only.
    """

    stall_seconds: float
    crash_window_seconds: float
    clock: Clock = time.monotonic
    agents: set[str] = field(default_factory=set)
    # Agent name -> when it last crashed, and the exception type name.
    crashes: dict[str, tuple[float, str]] = field(default_factory=dict)
    fatal: str | None = None
    on_fatal: list[Callable[[str], None]] = field(default_factory=list)
    _progress: dict[tuple[str, int], _Progress] = field(default_factory=dict)

    # agents ------------------------------------------------------------------------------------

    def agent_crashed(self, agent: str, error: BaseException) -> bool:
        """Record a crash of ``agent``; True when it is fatal (a second one within the window)."""
        now = self.clock()
        previous = self.crashes.get(agent)
        self.crashes[agent] = (now, type(error).__name__)
        if previous is not None and now - previous[0] < self.crash_window_seconds:
            self.fatal = f"agent {agent} crashed again ({type(error).__name__})"
            log.critical("%s: the worker stops (exit code 1)", self.fatal)
            for callback in self.on_fatal:
                callback(self.fatal)
            return True
        log.error("agent crashed: agent=%s error=%s; restarting it", agent, type(error).__name__)
        return False

    def agents_down(self) -> dict[str, str]:
        """The agents that crashed within the window, each with the exception type name."""
        now = self.clock()
        return {
            agent: error
            for agent, (when, error) in sorted(self.crashes.items())
            if now - when < self.crash_window_seconds
        }

    # partitions --------------------------------------------------------------------------------

    def observe(self, positions: Iterable[PartitionPosition]) -> None:
        """Take one sample of the assigned partitions (partitions not listed are forgotten)."""
        now = self.clock()
        seen: dict[tuple[str, int], _Progress] = {}
        for sample in positions:
            key = (sample.topic, sample.partition)
            before = self._progress.get(key)
            if sample.paused or not sample.has_lag:
                stuck_since = None
            elif before is None or before.position != sample.position:
                stuck_since = now
            else:
                stuck_since = before.stuck_since if before.stuck_since is not None else now
            seen[key] = _Progress(sample.position, stuck_since)
        self._progress = seen

    def partitions(self) -> dict[tuple[str, int], bool]:
        """Every observed partition and whether it is stalled."""
        now = self.clock()
        return {
            key: progress.stuck_since is not None
            and now - progress.stuck_since >= self.stall_seconds
            for key, progress in sorted(self._progress.items())
        }

    def stalled(self) -> list[tuple[str, int]]:
        """The stalled partitions."""
        return [key for key, stalled in self.partitions().items() if stalled]

    # the verdict -------------------------------------------------------------------------------

    def problem(self) -> str | None:
        """Why the worker is not healthy, or None."""
        if self.fatal is not None:
            return self.fatal
        down = self.agents_down()
        if down:
            listed = ", ".join(f"{agent} ({error})" for agent, error in down.items())
            return f"agent crashed: {listed}"
        stalled = self.stalled()
        if stalled:
            listed = ", ".join(f"{topic}[{partition}]" for topic, partition in stalled)
            return f"partition stalled (lag, no progress for {self.stall_seconds:g}s): {listed}"
        return None


def positions_of(app: Any) -> list[PartitionPosition]:
    """The assigned partitions' positions from what the Faust consumer already knows (no I/O)."""
    try:
        consumer = app.consumer
        assignment = consumer.assignment()
    except Exception:  # the consumer is not started (or already stopped)
        return []
    # Paused on purpose (`medstream pause`, or by Faust during recovery): waiting is no stall.
    paused = set(getattr(consumer, "_paused_partitions", ()))
    held = frozenset(getattr(consumer, "held_topics", ()))
    committed = getattr(consumer, "_committed_offset", {})
    read_offsets = app.monitor.tp_read_offsets
    found = []
    for tp in assignment:
        try:
            end = consumer.highwater(tp)
        except Exception:  # aiokafka asserts when the partition was just revoked
            end = None
        position = committed.get(tp)
        if position is None and tp in read_offsets:
            position = read_offsets[tp] + 1
        found.append(
            PartitionPosition(
                topic=tp.topic,
                partition=tp.partition,
                position=None if position is None else int(position),
                end=None if end is None or end < 0 else int(end),
                paused=tp in paused or tp.topic in held,
            )
        )
    return found


def crash_aware_supervisor(liveness: Liveness) -> type[OneForOneSupervisor]:
    """Faust's default agent supervisor (restart the crashed actor), reporting to ``liveness``.

    Faust also "restarts" an actor cancelled by a rebalance; that is no crash and not counted.
    """

    class CrashAwareSupervisor(OneForOneSupervisor):
        async def restart_service(self, service: ServiceT) -> None:
            if liveness.fatal is not None:
                # The worker is stopping; mode calls this again for the dead actor every few
                # seconds, and that is no new crash to count or report.
                return
            reason = service.crash_reason
            agent = getattr(getattr(service, "agent", None), "name", None) or "agent"
            crashed = reason is not None and not isinstance(reason, asyncio.CancelledError)
            if crashed and liveness.agent_crashed(agent, reason):  # type: ignore[arg-type]
                return  # fatal: the worker is stopping, nothing to restart
            await super().restart_service(service)

    return CrashAwareSupervisor
