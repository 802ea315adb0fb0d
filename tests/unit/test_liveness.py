"""Liveness: a crashed agent is down for its window, a second crash is fatal, stalls are seen."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from mode import OneForOneSupervisor, Service, ServiceT

from streams.observability.liveness import Liveness, PartitionPosition, crash_aware_supervisor


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def liveness(clock: Clock) -> Liveness:
    return Liveness(stall_seconds=60, crash_window_seconds=300, clock=clock)


def test_a_crash_puts_the_agent_down_for_its_window_only() -> None:
    clock = Clock()
    health = liveness(clock)
    assert health.problem() is None
    assert health.agent_crashed("apply-patient-events", RuntimeError("patient p-1")) is False
    assert health.agents_down() == {"apply-patient-events": "RuntimeError"}
    problem = health.problem()
    assert problem is not None
    assert "apply-patient-events (RuntimeError)" in problem
    assert "p-1" not in problem  # the exception's text may quote an event
    clock.now += 301
    assert health.agents_down() == {}
    assert health.problem() is None
    # A crash long after the first is a new first crash, not a fatal one.
    assert health.agent_crashed("apply-patient-events", RuntimeError()) is False


def test_a_second_crash_within_the_window_is_fatal_and_told() -> None:
    clock = Clock()
    health = liveness(clock)
    told: list[str] = []
    health.on_fatal.append(told.append)
    health.agent_crashed("notify-alerts", KeyError())
    clock.now += 299
    assert health.agent_crashed("notify-alerts", KeyError()) is True
    assert told == ["agent notify-alerts crashed again (KeyError)"]
    assert health.problem() == told[0]


def position(offset: int | None, end: int | None, paused: bool = False) -> PartitionPosition:
    return PartitionPosition("t.medication-events", 0, offset, end, paused)


def test_a_partition_with_lag_and_no_progress_is_stalled_after_the_stall_time() -> None:
    clock = Clock()
    health = liveness(clock)
    health.observe([position(5, 10)])
    clock.now += 59
    health.observe([position(5, 10)])
    assert health.stalled() == []
    clock.now += 2
    health.observe([position(5, 10)])
    assert health.stalled() == [("t.medication-events", 0)]
    assert "t.medication-events[0]" in (health.problem() or "")
    # Progress clears it at once.
    health.observe([position(6, 10)])
    assert health.stalled() == []


def test_no_lag_or_a_pause_is_never_a_stall() -> None:
    clock = Clock()
    health = liveness(clock)
    health.observe([position(10, 10)])
    clock.now += 600
    health.observe([position(10, 10)])
    assert health.stalled() == []
    # Lag that only now appears starts the clock now, not at the last move.
    health.observe([position(10, 12)])
    assert health.stalled() == []
    health.observe([position(10, 12, paused=True)])
    clock.now += 600
    health.observe([position(10, 12, paused=True)])
    assert health.stalled() == []
    assert health.partitions() == {("t.medication-events", 0): False}


def test_a_partition_no_longer_assigned_is_forgotten() -> None:
    clock = Clock()
    health = liveness(clock)
    health.observe([position(1, 5)])
    clock.now += 120
    health.observe([position(1, 5)])
    assert health.stalled()
    health.observe([])
    assert health.partitions() == {}


class Actor(Service):
    """Stands for a Faust actor: a mode service that knows its agent."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.agent = SimpleNamespace(name=name)


async def test_the_supervisor_restarts_a_first_crash_and_stops_restarting_at_a_second() -> None:
    clock = Clock()
    health = liveness(clock)
    told: list[str] = []
    health.on_fatal.append(told.append)
    replaced: list[Actor] = []

    async def replacement(service: ServiceT, index: int) -> ServiceT:
        # What Faust's agent passes: a new actor on the same stream.
        new = Actor("notify-alerts")
        replaced.append(new)
        return new

    supervisor = crash_aware_supervisor(health)(replacement=replacement)
    assert isinstance(supervisor, OneForOneSupervisor)
    first = Actor("notify-alerts")
    supervisor.add(first)

    # A rebalance cancels actors and Faust "restarts" them: no crash.
    first._crash(asyncio.CancelledError())
    await supervisor.restart_service(first)
    assert len(replaced) == 1
    assert health.crashes == {}

    # mode's restart bucket holds one token, refilled at 100 a second: wait for it.
    await asyncio.sleep(0.1)
    replaced[-1]._crash(KeyError("p-1"))
    await supervisor.restart_service(replaced[-1])
    assert len(replaced) == 2
    assert health.agents_down() == {"notify-alerts": "KeyError"}
    assert told == []

    clock.now += 10
    dead = replaced[-1]
    dead._crash(KeyError("p-2"))
    await asyncio.sleep(0.1)
    await supervisor.restart_service(dead)
    assert len(replaced) == 2, "restarted after a fatal crash"
    assert told == ["agent notify-alerts crashed again (KeyError)"]
    # mode looks at the dead actor again every few seconds: nothing new is counted or told.
    await supervisor.restart_service(dead)
    assert len(replaced) == 2
    assert told == ["agent notify-alerts crashed again (KeyError)"]
