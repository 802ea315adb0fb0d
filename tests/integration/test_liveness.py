"""/ready, /metrics and the exit code tell the truth: crashed agents and stalled partitions."""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import faust
import pytest

from streams.agents.intake import Intake, Outcome
from streams.app import Medstream, create_app
from streams.consumer_groups import wait_until_stable
from streams.contracts.models import Event
from streams.ops.commands import add_ops_commands
from streams.ops.control import send_pause_commands
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.integration.test_web import free_port, parse, prescribed, wait_for
from tests.kafka_helpers import produce, running, wait_until_committed
from tests.worker_process import WorkerProcess

pytestmark = pytest.mark.integration

CRASHING = "apply-patient-events"
# Generous: the state is polled for, never expected within a few seconds.
REACHED = 60.0


class AgentBodyError(RuntimeError):
    """What the test makes escape an agent: an exception its own error boundary never sees."""


def crash_on_every_event(agent: str) -> Callable[..., Awaitable[None]]:
    """An ``Intake.run`` for which ``agent`` reads its real stream and crashes on each event.

    Intake's error boundary dead-letters what a handler raises and retries a failing batch
    end, so no record makes the real body crash; this stands for a bug that escapes it.
    """
    original = Intake.run

    async def run(self: Intake, stream: faust.StreamT[Any], *args: Any, **kwargs: Any) -> None:
        if self.agent != agent:
            return await original(self, stream, *args, **kwargs)
        async for _event in stream:
            raise AgentBodyError("the agent's body failed")

    return run


async def web_app(settings: Settings, **update: Any) -> tuple[Medstream, str]:
    """The app, to run in this process, with its web server on a free port; and its address."""
    port = free_port()
    settings = settings.model_copy(update={"web_enabled": True, "web_port": port, **update})
    await ensure_topics(settings)
    return create_app(settings), f"http://127.0.0.1:{port}"


def status_is(http: aiohttp.ClientSession, base: str, wanted: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await ready_state(http, base))[0] == wanted

    return check


async def ready_state(http: aiohttp.ClientSession, base: str) -> tuple[int, dict[str, Any]]:
    async with http.get(f"{base}/ready") as response:
        return response.status, await response.json()


async def metrics(http: aiohttp.ClientSession, base: str) -> dict[Any, float]:
    async with http.get(f"{base}/metrics") as response:
        return parse(await response.text())


async def medstream_status(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> dict[tuple[str, int], dict[str, Any]]:
    """`medstream status --json --stall-sample 5` as on the command line: partition -> row."""
    for name, value in settings.environment().items():
        monkeypatch.setenv(name, value)
    parser = argparse.ArgumentParser()
    add_ops_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["status", "--json", "--stall-sample", "5"])
    capsys.readouterr()
    assert await asyncio.to_thread(args.handler, args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["stall_sample_seconds"] == 5
    return {(row["topic"], row["partition"]): row for row in report["consumer_group"]}


@asynccontextmanager
async def letting_go(released: asyncio.Event) -> AsyncIterator[None]:
    """Set ``released`` on the way out, however the block ends."""
    try:
        yield
    finally:
        released.set()


def client() -> aiohttp.ClientSession:
    # A page that does not answer fails the test in seconds instead of aiohttp's 5 minutes.
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))


async def test_a_crashed_agent_makes_ready_503_and_a_second_crash_is_fatal(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Intake, "run", crash_on_every_event(CRASHING))
    topic = settings.topic_name("medication-events")
    medstream, base = await web_app(settings)
    fatal: list[str] = []
    medstream.liveness.on_fatal.append(fatal.append)
    async with asyncio.timeout(300), running(medstream), client() as http:
        await wait_for(status_is(http, base, 200), timeout=REACHED)
        await produce(
            settings, topic, [(b"p-crash-1", json.dumps(prescribed("p-crash-1")).encode())]
        )
        await wait_for(status_is(http, base, 503), timeout=REACHED)

        status, body = await ready_state(http, base)
        assert status == 503
        assert body["reason"] == f"agent crashed: {CRASHING} (AgentBodyError)"
        samples = await metrics(http, base)
        assert samples[("medstream_agent_up", (("agent", CRASHING),))] == 0
        assert samples[("medstream_agent_up", (("agent", "notify-alerts"),))] == 1
        assert not fatal

        # Faust restarted it; it crashes again on the next event, within the window: fatal.
        await produce(
            settings, topic, [(b"p-crash-2", json.dumps(prescribed("p-crash-2")).encode())]
        )

        async def gave_up() -> bool:
            return bool(fatal)

        await wait_for(gave_up, timeout=REACHED)
        # Faust's supervisor looks at the dead actor again every few seconds: told only once.
        await asyncio.sleep(6)
        assert fatal == [f"agent {CRASHING} crashed again (AgentBodyError)"]
        status, body = await ready_state(http, base)
        assert (status, body["reason"]) == (503, fatal[0])


async def test_a_partition_with_lag_and_no_progress_makes_ready_503_unless_paused(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = settings.topic_name("medication-events")
    warm = [f"p-warm-{n}" for n in range(20)]  # surely on both partitions
    medstream, base = await web_app(settings, partition_stall_seconds=3.0)
    processor = medstream.patients.processor
    handle = processor.handle
    stuck, released = asyncio.Event(), asyncio.Event()

    async def hang_on_one_patient(event: Event, partition: int) -> Outcome:
        if event.patient_id == "p-stall":
            stuck.set()
            # Its batch is not acknowledged until the test lets go: Faust's stop waits for
            # every event in flight (stream_wait_empty), so the test must let go to stop.
            await released.wait()
        return await handle(event, partition)

    # The agent's body reads the attribute when it starts, so before the app starts.
    monkeypatch.setattr(processor, "handle", hang_on_one_patient)
    async with asyncio.timeout(300), running(medstream), client() as http, letting_go(released):
        ready = status_is(http, base, 200)
        await wait_for(ready, timeout=REACHED)
        # The group commits once first, so the stalled partition's position is its commit.
        await produce(
            settings, topic, [(p.encode(), json.dumps(prescribed(p)).encode()) for p in warm]
        )
        await wait_until_committed(settings, settings.app_id, [topic], timeout=REACHED)
        await produce(settings, topic, [(b"p-stall", json.dumps(prescribed("p-stall")).encode())])
        await asyncio.wait_for(stuck.wait(), timeout=REACHED)

        await wait_for(status_is(http, base, 503), timeout=REACHED)
        _, body = await ready_state(http, base)
        assert body["reason"].startswith("partition stalled (lag, no progress for 3s): ")
        assert f"{topic}[" in body["reason"]
        assert "p-stall" not in body["reason"]
        stalls = {
            labels: value
            for (name, labels), value in (await metrics(http, base)).items()
            if name == "medstream_partition_stalled" and ("topic", topic) in labels
        }
        assert sorted(stalls.values()) in ([0.0, 1.0], [1.0, 1.0]), stalls
        stalled = {labels: value for labels, value in stalls.items() if value == 1}

        # `medstream status`, outside the worker, sees the same partition make no progress.
        rows = await medstream_status(settings, monkeypatch, capsys)
        for labels in stalled:
            row = rows[(topic, int(dict(labels)["partition"]))]
            assert (row["lag"] > 0, row["stalled"], row["paused"]) == (True, True, False), row
        for row in rows.values():
            if row["lag"] == 0:
                assert row["stalled"] is False, row

        # Paused on purpose (`medstream pause`), the same lag is waiting, not a stall.
        await send_pause_commands(settings, ["medication-events"], paused=True, actor="test")
        await wait_for(ready, timeout=REACHED)
        stalls = {
            labels: value
            for (name, labels), value in (await metrics(http, base)).items()
            if name == "medstream_partition_stalled" and ("topic", topic) in labels
        }
        assert set(stalls.values()) == {0.0}, stalls
        rows = await medstream_status(settings, monkeypatch, capsys)
        for labels in stalled:
            row = rows[(topic, int(dict(labels)["partition"]))]
            assert (row["lag"] > 0, row["stalled"], row["paused"]) == (True, False, True), row


def start_python(worker: WorkerProcess, code: str) -> None:
    """Start ``worker`` as ``python -c code`` instead of `medstream worker`."""
    worker.data_dir.mkdir(parents=True, exist_ok=True)
    with worker.log_file.open("ab") as log:
        worker.process = subprocess.Popen(
            [sys.executable, "-c", code],
            env=worker.environment(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def test_a_worker_whose_agent_crashes_again_exits_with_code_1(
    settings: Settings, tmp_path: Path
) -> None:
    await ensure_topics(settings)
    # A real `run_worker` process; only the agent's body is replaced, from the test's side.
    launcher = (
        "from streams.settings import Settings\n"
        "from streams.agents.intake import Intake\n"
        "from streams.worker import run_worker\n"
        "from tests.integration.test_liveness import crash_on_every_event\n"
        f"Intake.run = crash_on_every_event({CRASHING!r})\n"
        "run_worker(Settings())\n"
    )
    worker = WorkerProcess(settings, tmp_path / "worker", tmp_path / "worker.log")
    start_python(worker, launcher)
    assert worker.process is not None
    try:
        await wait_until_stable(settings, settings.app_id, timeout=120)
        topic = settings.topic_name("medication-events")
        await produce(settings, topic, [(b"p-exit-1", json.dumps(prescribed("p-exit-1")).encode())])

        async def crashed_once() -> bool:
            assert worker.running, worker.log_tail()
            return "agent crashed: agent=apply-patient-events" in worker.log_tail(100_000)

        await wait_for(crashed_once, timeout=REACHED)
        await produce(settings, topic, [(b"p-exit-2", json.dumps(prescribed("p-exit-2")).encode())])
        started = time.monotonic()
        code = await asyncio.to_thread(worker.process.wait, 120)
        assert code == 1, worker.log_tail()
        # The stop on a fatal crash is the bounded SIGTERM path (25 s by default).
        assert time.monotonic() - started < 60, worker.log_tail()
        assert "crashed again (AgentBodyError)" in worker.log_tail(100_000)
    finally:
        if worker.running:
            worker.process.kill()
            worker.process.wait()
