"""The configs of the topics and changelogs medstream creates follow the replication factor."""

from __future__ import annotations

from streams.settings import Settings
from streams.topics import topic_configs


def test_one_replica_sets_no_min_insync_replicas() -> None:
    settings = Settings(topic_replication_factor=1)
    assert topic_configs(settings, compacted=False) == {}
    assert topic_configs(settings, compacted=True) == {"cleanup.policy": "compact"}


def test_three_replicas_need_two_in_sync() -> None:
    settings = Settings(topic_replication_factor=3)
    assert topic_configs(settings, compacted=False) == {"min.insync.replicas": "2"}
    assert topic_configs(settings, compacted=True) == {
        "cleanup.policy": "compact",
        "min.insync.replicas": "2",
    }
