"""Runs a medstream Faust worker in the foreground until it is told to stop."""

from __future__ import annotations

import asyncio
import logging.config

import faust

from streams.app import create_app
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
