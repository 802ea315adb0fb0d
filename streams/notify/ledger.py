"""The delivery ledger: one record per (source event, channel), so nothing is delivered twice."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from streams.contracts.models import Event
from streams.domain.patient import StateModel, stable_id


class LedgerStatus(StrEnum):
    """Where one delivery stands."""

    # Written, and acknowledged by the changelog, before the channel is called: a record found in
    # this state after a crash may or may not have reached the person, so it is never retried
    # (at most one delivery) but reported as failed for a human to check.
    IN_FLIGHT = "in_flight"
    DEFERRED = "deferred"
    DELIVERED = "delivered"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    # Not a delivery: the mark that a source event was decided on (delivered where, deferred
    # or suppressed). A replay finds it and changes nothing, even if the patient's contact
    # changed meanwhile or, after a crash, is not yet re-applied.
    DECIDED = "decided"


FINAL_STATUSES = frozenset(
    {LedgerStatus.DELIVERED, LedgerStatus.FAILED, LedgerStatus.SUPPRESSED, LedgerStatus.DECIDED}
)
# The channel label of a decision mark; no real channel label contains "*".
DECISION = "*"


class DeliveryRecord(StateModel):
    """The ledger's record of one delivery."""

    notification_id: str
    patient_id: str
    partition: int
    channel: str
    status: LedgerStatus
    source_event_id: str
    source_event_type: str
    started_at: datetime | None = None
    # When the final status was recorded: the record is pruned once this leaves the window.
    finished_at: datetime | None = None
    deferred_until: datetime | None = None
    # The source event (JSON), kept while the delivery is deferred so it can be sent later.
    source: dict[str, Any] | None = None

    @classmethod
    def for_event(
        cls,
        event: Event,
        channel: str,
        partition: int,
        status: LedgerStatus,
        **details: Any,
    ) -> DeliveryRecord:
        """The record of delivering ``event`` on the channel labelled ``channel``."""
        return cls(
            notification_id=notification_id(event.event_id, channel),
            patient_id=event.patient_id,
            partition=partition,
            channel=channel,
            status=status,
            source_event_id=event.event_id,
            source_event_type=event.event_type,
            **details,
        )


def notification_id(source_event_id: str, channel_label: str) -> str:
    """The deterministic id of delivering one event on one channel."""
    return stable_id("ntf", source_event_id, channel_label)


def decision_id(source_event_id: str) -> str:
    """The ledger key of the mark that ``source_event_id`` was decided on."""
    return notification_id(source_event_id, DECISION)


def is_abandoned(record: DeliveryRecord, now: datetime, longest_delivery: timedelta) -> bool:
    """An in-flight record older than any delivery can take was cut off by a crash."""
    return (
        record.status is LedgerStatus.IN_FLIGHT
        and record.started_at is not None
        and now - record.started_at > longest_delivery
    )


def longest_delivery(attempts: int, timeout: float, backoff_cap: float) -> timedelta:
    """An upper bound on how long one delivery with all its retries can take."""
    return timedelta(seconds=attempts * timeout + max(0, attempts - 1) * backoff_cap + 5)


def is_prunable(record: DeliveryRecord, now: datetime, retention: timedelta) -> bool:
    """A final record older than the de-duplication window: no replay can still need it.

    Sources older than the window are refused before the ledger is consulted, so forgetting
    the record cannot lead to a second delivery.
    """
    return (
        record.status in FINAL_STATUSES
        and record.finished_at is not None
        and now - record.finished_at > retention
    )
