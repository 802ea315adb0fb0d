"""The delivery channels the settings configure, by channel kind."""

from __future__ import annotations

import logging

from streams.contracts.vocabulary import ChannelKind
from streams.notify.channels import (
    AppriseChannel,
    Channel,
    ConsoleChannel,
    EmailChannel,
    WebhookChannel,
)
from streams.notify.targets import TargetPolicy
from streams.settings import Settings

log = logging.getLogger(__name__)


def build_channels(settings: Settings) -> dict[str, Channel]:
    """The delivery channels the settings configure (console only when enabled: the demo)."""
    channels: dict[str, Channel] = {}
    if settings.notify_console_enabled:
        channels[ChannelKind.CONSOLE.value] = ConsoleChannel()
    policy = TargetPolicy.from_allow_list(
        settings.notify_webhook_allow, allow_http=settings.notify_webhook_allow_http
    )
    if settings.notify_webhook_secret is not None:
        channels[ChannelKind.WEBHOOK.value] = WebhookChannel(
            settings.notify_webhook_secret.get_secret_value().encode("utf-8"),
            # Ends before the notifier's per-attempt timeout, whose "timed out" text would tell
            # a silent port from a closed one.
            settings.notify_timeout_seconds * 0.9,
            policy=policy,
        )
    if settings.notify_smtp_host is not None:
        channels[ChannelKind.EMAIL.value] = EmailChannel(
            host=settings.notify_smtp_host,
            port=settings.notify_smtp_port,
            sender=settings.notify_email_sender,
            timeout=settings.notify_timeout_seconds,
            starttls=settings.notify_smtp_starttls,
            use_tls=settings.notify_smtp_tls,
            require_tls=settings.notify_smtp_require_tls,
            username=settings.notify_smtp_username,
            password=(
                settings.notify_smtp_password.get_secret_value()
                if settings.notify_smtp_password
                else None
            ),
        )
    try:
        channels[ChannelKind.APPRISE.value] = AppriseChannel(
            settings.notify_timeout_seconds,
            schemes=settings.notify_apprise_schemes.split(","),
            policy=policy,
        )
    except ImportError:
        log.info("apprise is not installed: the apprise channel is off")
    return channels
