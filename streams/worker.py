"""Runs a medstream Faust worker in the foreground until it is told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.config
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import faust
from faust.types import AppT

from streams.app import Medstream, create_app
from streams.observability.liveness import Liveness
from streams.observability.logs import logging_config
from streams.observability.tracing import configure_tracing
from streams.settings import Settings
from streams.topics import ensure_topics

log = logging.getLogger(__name__)

# What the bounded stop leaves the watchdog: closing the loop and the process's exit.
_WATCHDOG_MARGIN_SECONDS = 5.0


def freeze_commits(app: AppT) -> None:
    """Let the consumer commit no more offsets from now on.

    On a stop Faust cancels the agents, and cancelling ``take_events`` acknowledges the whole
    batch in flight, handled or not; the stop's final commit would then move past events that
    were never handled (faust-streaming #606, #312). Without it the next worker starts from
    the last periodic commit and de-duplication absorbs what is read twice. It also spares the
    stop a commit that waits on an unreachable broker.
    """

    async def commit_nothing(*args: object, **kwargs: object) -> bool:
        return False

    # Faust calls ``self.commit`` from its commit timer and from its stop alike.
    app.consumer.commit = commit_nothing  # type: ignore[method-assign]


class BoundedWorker(faust.Worker):
    """Faust's worker, whose stop ends within ``shutdown_timeout`` seconds, broker or not.

    On SIGTERM or SIGINT: commits freeze (see :func:`freeze_commits`), Faust's stop runs for
    at most ``shutdown_timeout`` minus a margin, and a watchdog thread ends the process at
    ``shutdown_timeout`` if closing still hangs (aiokafka's consumer thread waits for the
    broker with no limit of its own when the broker is gone).
    """

    def __init__(
        self, app: faust.App, *, shutdown_timeout: float, liveness: Liveness, **kwargs: Any
    ) -> None:
        super().__init__(app, **kwargs)
        self.shutdown_timeout = shutdown_timeout
        self.liveness = liveness
        self._watchdog: threading.Timer | None = None
        liveness.on_fatal.append(self._stop_on_fatal)

    @property
    def exit_code(self) -> int:
        """1 when an agent could not be kept running, else 0."""
        return 1 if self.liveness.fatal is not None else 0

    def _stop_on_fatal(self, reason: str) -> None:
        # The same path as an orchestrator's SIGTERM: bounded, commits frozen.
        self.loop.call_soon_threadsafe(self._on_sigterm)

    def _on_sigterm(self) -> None:
        self._begin_bounded_stop()
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        self._begin_bounded_stop()
        super()._on_sigint()

    def _begin_bounded_stop(self) -> None:
        if self._watchdog is not None:
            return
        freeze_commits(self.app)
        self._watchdog = threading.Timer(self.shutdown_timeout, self._hard_exit)
        self._watchdog.daemon = True
        self._watchdog.start()

    def _hard_exit(self) -> None:
        log.critical(
            "the stop did not finish within %.0fs; exiting now (no offset was committed "
            "since the signal, so nothing is lost)",
            self.shutdown_timeout,
        )
        logging.shutdown()
        os._exit(self.exit_code)

    async def _stop_on_signal(self, signal: signal.Signals) -> None:
        budget = max(1.0, self.shutdown_timeout - _WATCHDOG_MARGIN_SECONDS)
        try:
            await asyncio.wait_for(super()._stop_on_signal(signal), timeout=budget)
        except TimeoutError:
            log.error("the stop took longer than %.0fs; abandoning what still waits", budget)
            if self._starting_fut is not None:
                self._starting_fut.cancel()


def run_worker(settings: Settings) -> None:
    """Create any missing topics, then run the worker; SIGINT or SIGTERM stops it within
    ``settings.shutdown_timeout_seconds``. Exits 1 when an agent crashed again within its
    crash window (see :class:`streams.observability.liveness.Liveness`)."""
    logging.config.dictConfig(logging_config(settings.log_level))
    configure_tracing()
    asyncio.run(ensure_topics(settings))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    medstream = create_app(settings)
    # The JSON handler is the only one: mode's own console handler would print every line
    # again, unredacted. Print output (the console channel) reaches it through mode's redirect.
    worker = BoundedWorker(
        medstream.app,
        shutdown_timeout=settings.shutdown_timeout_seconds,
        liveness=medstream.liveness,
        loglevel=settings.log_level.upper(),
        logging_config=logging_config(settings.log_level),
        quiet=True,
    )
    try:
        worker.execute_from_commandline()
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
        sys.exit(worker.exit_code or code)


@contextlib.asynccontextmanager
async def running(medstream: Medstream, timeout: float = 60.0) -> AsyncIterator[Medstream]:
    """Run the app's worker machinery in the current event loop (no process, no signals) until
    it leaves the block; inside it the app has its partitions assigned. For embedding,
    benchmarks and tests."""
    app = medstream.app
    await app.start()
    try:
        deadline = time.monotonic() + timeout
        while not app.consumer.assignment() or app.rebalancing:
            if time.monotonic() > deadline:
                raise TimeoutError("the Faust app got no partitions assigned")
            await asyncio.sleep(0.05)
        yield medstream
    finally:
        # A stop that hangs must fail its caller, not freeze it.
        await asyncio.wait_for(app.stop(), timeout=60)
