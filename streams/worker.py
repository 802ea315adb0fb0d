"""Runs a medstream Faust worker in the foreground until it is told to stop."""

from __future__ import annotations

import asyncio

import faust

from streams.app import create_app
from streams.settings import Settings
from streams.topics import ensure_topics


def run_worker(settings: Settings) -> None:
    """Create any missing topics, then run the worker; SIGINT or SIGTERM stops it cleanly."""
    asyncio.run(ensure_topics(settings))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    medstream = create_app(settings)
    worker = faust.Worker(medstream.app, loglevel=settings.log_level.upper(), quiet=True)
    worker.execute_from_commandline()
