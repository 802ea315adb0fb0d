"""The Subscriber's choices made before it connects: topics, group, window; and the client's
imports (a service that only publishes or reads needs none of the worker's machinery)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from streams.acls import downstream_group
from streams.client import DEFAULT_DEDUP_WINDOW, Subscriber
from streams.settings import Settings

SETTINGS = Settings(app_id="pharmacy-medstream", topic_prefix="prod.")


def test_by_default_the_alert_topics_in_the_downstream_group() -> None:
    subscriber = Subscriber(SETTINGS)
    assert subscriber.topics == [
        "prod.medication-reminders",
        "prod.refill-alerts",
        "prod.interaction-warnings",
    ]
    assert subscriber.group_id == downstream_group(SETTINGS) == "pharmacy-medstream-downstream"
    assert subscriber.seen.capacity == DEFAULT_DEDUP_WINDOW


def test_topics_notifications_group_and_window_can_be_chosen() -> None:
    subscriber = Subscriber(
        SETTINGS,
        topics=["refill-alerts"],
        notifications=True,
        group_id="pharmacy",
        dedup_window=5,
    )
    assert subscriber.topics == ["prod.refill-alerts", "prod.notifications"]
    assert subscriber.group_id == "pharmacy"
    assert subscriber.seen.capacity == 5
    assert Subscriber(SETTINGS, notifications=True).topics[-1] == "prod.notifications"


@pytest.mark.parametrize("topics", [["medication-events"], ["dead-letters"], ["nope"]])
def test_only_alert_topics_and_notifications_can_be_read(topics: list[str]) -> None:
    with pytest.raises(ValueError, match="topics"):
        Subscriber(SETTINGS, topics=topics)


def test_no_topic_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Subscriber(SETTINGS, topics=[])


def test_the_client_does_not_import_the_worker() -> None:
    code = "import sys, streams.client; print('faust' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
