"""Recovery: worker start to ready with N table entries, from the changelog and from RocksDB."""

from __future__ import annotations

from bench.harness import Context
from bench.workers import fill_state_table, started_worker

NAME = "recovery"


async def run(context: Context) -> None:
    entries = context.sizes.recovery_entries
    settings = context.settings(NAME)
    fill_seconds = await fill_state_table(settings, entries)
    timeout = 120 + entries / 500
    worker, from_changelog = await started_worker(settings, NAME, timeout)
    worker.stop()
    worker, from_local = await started_worker(settings, NAME, timeout)
    worker.stop()
    context.add(NAME, "table entries", entries, "entries")
    context.add(NAME, "start to ready, from the changelog alone", from_changelog, "s")
    context.add(NAME, "start to ready, from local RocksDB", from_local, "s")
    context.add(NAME, "changelog recovery rate", entries / from_changelog, "entries/s")
    context.note(
        NAME,
        f"state-by-patient filled by writing its changelog directly ({fill_seconds:.1f} s), in "
        "the table's own JSON key/value format; a real `medstream worker` process, timed from "
        "its start until /ready answers 200 (partitions assigned, tables recovered); the "
        "second start keeps the first one's data directory",
    )
