"""The notifier's agents and timer: loops over what ``streams.notify`` decides and applies."""

from __future__ import annotations

from typing import Any

import faust

from streams.agents.intake import Intake
from streams.agents.notifier_runtime import Notifier
from streams.notify.channel_setup import build_channels
from streams.notify.decide import NO_CHANNEL
from streams.settings import Settings
from streams.topology import (
    NOTIFY_ALERTS,
    RECORD_DELIVERIES,
    RELEASE_DEFERRED_NOTIFICATIONS,
    RESUME_NOTIFICATIONS,
)

__all__ = ["NO_CHANNEL", "Notifier", "build_channels", "install_notifier"]


def install_notifier(
    app: faust.App,
    *,
    settings: Settings,
    notifier: Notifier,
    alerts_topic: faust.TopicT,
    notifications_source: faust.TopicT,
    releases_source: faust.TopicT,
    notifications_intake: Intake,
    alerts_intake: Intake,
    releases_intake: Intake,
) -> None:
    """Declare the notifier's agents and timer, named as in ``streams.topology``; the topics
    are the agents' channels (reminders reach the notifier through record-reminders)."""

    @app.agent(alerts_topic, name=NOTIFY_ALERTS.name)
    async def notify_alerts(stream: faust.StreamT[Any]) -> None:
        await alerts_intake.run(stream, notifier.handle, notifier.start_planned)

    @app.agent(notifications_source, name=RECORD_DELIVERIES.name)
    async def record_deliveries(stream: faust.StreamT[Any]) -> None:
        await notifications_intake.run(stream, notifier.record_outcome, notifier.start_planned)

    @app.agent(releases_source, name=RELEASE_DEFERRED_NOTIFICATIONS.name)
    async def release_deferred(stream: faust.StreamT[Any]) -> None:
        await releases_intake.run(stream, notifier.release, notifier.start_planned)

    @app.timer(  # type: ignore[untyped-decorator]
        interval=1.0, on_leader=False, name=RESUME_NOTIFICATIONS.name
    )
    async def resume_notifications() -> None:
        await notifier.tick()

    async def close_notifier(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await notifier.close()

    app.on_before_shutdown.connect(close_notifier)
