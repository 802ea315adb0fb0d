"""The tables the agents keep, each in medstream's own store with its changelog on Kafka."""

from __future__ import annotations

import faust

from streams.settings import Settings
from streams.state.changelog import KafkaChangelog, changelog_topic
from streams.state.stores import open_store
from streams.state.table import ChangelogTable


def declare_table(app: faust.App, settings: Settings, name: str) -> ChangelogTable:
    """A table partitioned like the input topics, in medstream's own store (RocksDB or memory,
    its memory bounded) with its changelog on Kafka under Faust's name for it.

    It declares no key or value type: records are plain JSON, validated into medstream's
    models when read.
    """
    mebibyte = 1024 * 1024
    store = open_store(
        settings.store_url,
        settings.data_dir / f"{settings.app_id}-tables" / name,
        block_cache_bytes=settings.rocksdb_block_cache_mb * mebibyte,
        write_buffer_bytes=settings.rocksdb_write_buffer_mb * mebibyte,
    )
    changelog = KafkaChangelog(app, settings, changelog_topic(settings, name))
    return ChangelogTable(name, store, changelog, settings.topic_partitions)
