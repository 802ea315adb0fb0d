"""Runs a medstream Faust worker in the foreground until it is told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging.config
import time
from collections.abc import AsyncIterator

import faust

from streams.app import Medstream, create_app
from streams.observability.logs import logging_config
from streams.observability.tracing import configure_tracing
from streams.settings import Settings
from streams.topics import ensure_topics


def run_worker(settings: Settings) -> None:
    """Create any missing topics, then run the worker; SIGINT or SIGTERM stops it cleanly."""
    logging.config.dictConfig(logging_config(settings.log_level))
    configure_tracing()
    asyncio.run(ensure_topics(settings))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    medstream = create_app(settings)
    # The JSON handler is the only one: mode's own console handler would print every line
    # again, unredacted. Print output (the console channel) reaches it through mode's redirect.
    worker = faust.Worker(
        medstream.app,
        loglevel=settings.log_level.upper(),
        logging_config=logging_config(settings.log_level),
        quiet=True,
    )
    worker.execute_from_commandline()


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
