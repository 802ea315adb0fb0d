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


def test_dead_letters_are_created_with_the_settings_retention() -> None:
    from streams.topics import DEAD_LETTERS, EVERY_TOPIC

    settings = Settings(dead_letter_retention_days=7)
    assert DEAD_LETTERS.configs(settings)["retention.ms"] == str(7 * 24 * 3600 * 1000)
    # Every other topic keeps the broker's retention (a changelog must outlive any horizon).
    assert all(
        "retention.ms" not in spec.configs(settings) for spec in EVERY_TOPIC if spec != DEAD_LETTERS
    )


def test_the_manifests_keep_dead_letters_as_long_as_the_default_setting() -> None:
    import yaml

    from streams.settings import REPOSITORY_ROOT
    from streams.topics import DEAD_LETTERS

    topics = yaml.safe_load_all(
        (REPOSITORY_ROOT / "deploy/kubernetes/strimzi/topics.yaml").read_text()
    )
    [manifest] = [t for t in topics if t and t["metadata"]["name"] == "dead-letters"]
    assert manifest["spec"]["config"]["retention.ms"] == int(
        DEAD_LETTERS.configs(Settings())["retention.ms"]
    )
