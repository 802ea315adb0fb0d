"""`medstream status` names each worker of the group and the partitions it holds."""

from __future__ import annotations

from aiokafka import TopicPartition

from streams.consumer_groups import GroupMember
from streams.ops.status import Status, _partition_ranges


def test_partitions_are_shown_as_ranges_per_topic() -> None:
    held = [TopicPartition("medication-events", n) for n in (5, 0, 1, 2, 7, 8)]
    held += [TopicPartition("patient-events", 3)]
    assert _partition_ranges(held) == "medication-events 0-2,5,7-8; patient-events 3"
    assert _partition_ranges([]) == "none"


def test_the_text_names_the_group_state_and_each_worker() -> None:
    members = (
        GroupMember("w2-id", "faust", "/10.0.0.2", (TopicPartition("medication-events", 1),)),
        GroupMember("w1-id", "faust", "/10.0.0.1", (TopicPartition("medication-events", 0),)),
    )
    text = Status(group_state="Stable", members=members).as_text("medstream")
    lines = text.splitlines()
    assert lines[0] == "consumer group medstream: Stable, 2 workers"
    rows = [line for line in lines if "-id" in line]
    assert [row.split()[0] for row in rows] == ["w1-id", "w2-id"]
    assert rows[0].endswith("medication-events 0")
    as_json = Status(group_state="Stable", members=members).as_json()
    assert as_json["workers"][0]["partitions"] == ["medication-events[1]"]


def test_an_empty_group_says_no_worker_holds_anything() -> None:
    text = Status(group_state="Empty").as_text("medstream")
    assert "Empty, 0 workers" in text
    assert "none: no worker in the group" in text
