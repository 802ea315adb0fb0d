"""A typed client of medstream for Python services: publish input events, read alerts.

See docs/client.md.
"""

from streams.client.ids import DEFAULT_DEDUP_WINDOW, RecentIds, client_event_id
from streams.client.publisher import FhirRefusedError, Publisher
from streams.client.subscriber import Alert, Subscriber, Undecodable
from streams.contracts.codecs import EventValidationError
from streams.contracts.models import ContactChannel, QuietHours
from streams.contracts.vocabulary import ChannelKind, Weekday
from streams.topics import ALERT_TOPICS

__all__ = [
    "ALERT_TOPICS",
    "DEFAULT_DEDUP_WINDOW",
    "Alert",
    "ChannelKind",
    "ContactChannel",
    "EventValidationError",
    "FhirRefusedError",
    "Publisher",
    "QuietHours",
    "RecentIds",
    "Subscriber",
    "Undecodable",
    "Weekday",
    "client_event_id",
]
