"""The notifier's decisions as pure functions that return effects (no Faust, no I/O)."""

from __future__ import annotations

import json
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeAlias

from streams.contracts.models import (
    EVENT_MODELS,
    AdminAlert,
    ContactChannel,
    DoseMissed,
    NotificationOutcome,
    ReminderDue,
)
from streams.contracts.vocabulary import DeliveryStatus
from streams.domain.patient import ContactPreferences, PatientState, is_answered, stable_id
from streams.notify.ledger import (
    DECISION,
    FINAL_STATUSES,
    DeliveryRecord,
    LedgerStatus,
    decision_id,
    is_abandoned,
    is_prunable,
    longest_delivery,
    notification_id,
)
from streams.notify.messages import NotifiableEvent
from streams.notify.policy import delivery_targets, is_urgent, quiet_hours_end
from streams.settings import Settings

NO_CHANNEL = "none"
ANSWERED = "the dose was already answered"
DISCONTINUED = "the medication was discontinued"
NO_CONTACT_CHANNEL = "no contact channel for this notification"
CHANNEL_REMOVED = "the channel was removed"
INTERRUPTED = "interrupted by a worker crash; it may or may not have arrived, so it is not resent"
# The timer's commands to the releasing agent, carried in NotificationOutcome.source_event_type.
RELEASE = "release"
PRUNE = "prune"
# Prune commands sent per scan, so a first scan of a large ledger does not flood the topic.
PRUNE_BATCH = 1000
# A safety net: the scan after each rebalance finds the in-flight and deferred records; the
# periodic one also prunes records that left the de-duplication window.
LEDGER_RESCAN = timedelta(minutes=5)

# Whether the ledger holds a record under a notification id (read, never written, here).
Seen = Callable[[str], bool]


@dataclass(frozen=True)
class NotifyRules:
    """What the settings say about notifying, as the deciders need it."""

    retention: timedelta
    contact_wait: timedelta
    longest_delivery: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> NotifyRules:
        return cls(
            retention=timedelta(days=settings.dedup_retention_days),
            contact_wait=timedelta(seconds=settings.notify_contact_wait_seconds),
            longest_delivery=longest_delivery(
                settings.notify_max_attempts,
                settings.notify_timeout_seconds,
                settings.notify_backoff_cap_seconds,
            ),
        )


# --- effects ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """Write ``record`` into the ledger."""

    record: DeliveryRecord


@dataclass(frozen=True)
class Forget:
    """Delete the ledger record under ``notification_id``."""

    notification_id: str


@dataclass(frozen=True)
class Deliver:
    """Write the in-flight ``record``; once it is durable, deliver ``event`` on ``channel``."""

    record: DeliveryRecord
    event: NotifiableEvent
    channel: ContactChannel
    contact: ContactPreferences


@dataclass(frozen=True)
class Defer:
    """Write the deferred ``record`` and have the timer release it at ``until``."""

    record: DeliveryRecord
    until: datetime


@dataclass(frozen=True)
class Suppress:
    """Write the suppressed ``record``; once it is durable, publish the suppression."""

    record: DeliveryRecord
    reason: str


@dataclass(frozen=True)
class Publish:
    """Publish the final outcome of ``record`` now (and an AdminAlert when it failed)."""

    record: DeliveryRecord
    status: DeliveryStatus
    attempts: int
    error: str | None


Effect: TypeAlias = Record | Forget | Deliver | Defer | Suppress | Publish


@dataclass(frozen=True)
class Decision:
    """The effects of one event, in the order they apply; ``duplicate`` when it changed
    nothing new, with ``why`` worth a log line."""

    effects: tuple[Effect, ...] = ()
    duplicate: bool = False
    why: str | None = None


DUPLICATE = Decision(duplicate=True)


# --- deciders -----------------------------------------------------------------------------


def decide_notification(
    event: NotifiableEvent,
    partition: int,
    state: PatientState,
    seen: Seen,
    now: datetime,
    rules: NotifyRules,
) -> Decision:
    """What to do with one reminder, missed dose, refill alert or warning when it arrives."""
    if now - event.occurred_at > rules.retention:
        # Its ledger records may be pruned already: never risk a second delivery.
        return Decision(
            duplicate=True, why=f"{event.event_type} older than the de-duplication window"
        )
    if seen(decision_id(event.event_id)):
        # Decided before (then the patient's contact may have differed): never twice.
        return DUPLICATE
    mark = Record(
        DeliveryRecord.for_event(event, DECISION, partition, LedgerStatus.DECIDED, finished_at=now)
    )
    if (
        isinstance(event, ReminderDue | DoseMissed)
        and state.active_medication(event.medication_id) is None
    ):
        return Decision((mark, *suppress(event, partition, seen, now, DISCONTINUED)))
    if answered(event, state):
        return Decision((mark, *suppress(event, partition, seen, now, ANSWERED)))
    if state.contact is None and rules.contact_wait:
        # The contact comes on another topic than what caused this event, in no order with
        # it: an onboarding may publish both at once, and a worker taking over partitions
        # re-reads both. Suppressing at once could drop a wanted notification.
        wait = defer(event, NO_CHANNEL, partition, now + rules.contact_wait)
        return Decision((mark, wait))
    planned = plan(event, partition, state.contact, seen, now)
    return Decision((mark, *planned.effects), duplicate=planned.duplicate)


def plan(
    event: NotifiableEvent,
    partition: int,
    contact: ContactPreferences | None,
    seen: Seen,
    now: datetime,
) -> Decision:
    """Deliver ``event`` on the patient's channels, defer it past quiet hours, or suppress it;
    a duplicate when every channel was handled before."""
    targets = delivery_targets(event, contact)
    if not targets:
        return Decision(suppress(event, partition, seen, now, NO_CONTACT_CHANNEL))
    assert contact is not None
    effects: list[Effect] = []
    for label, channel in targets:
        if seen(notification_id(event.event_id, label)):
            continue  # handled before decision marks existed
        quiet_end = (
            None
            if is_urgent(event)
            else quiet_hours_end(now, contact.quiet_hours, contact.timezone)
        )
        if quiet_end is not None:
            effects.append(defer(event, label, partition, quiet_end))
        else:
            effects.append(deliver(event, label, channel, contact, partition, now))
    return Decision(tuple(effects), duplicate=not effects)


def decide_release(
    command: NotificationOutcome,
    record: DeliveryRecord | None,
    partition: int,
    patient_state: Callable[[str], PatientState],
    seen: Seen,
    now: datetime,
    rules: NotifyRules,
) -> Decision:
    """A timer's command: a deferred delivery whose quiet hours ended starts now, a
    notification that waited for the patient's contact is planned, or a ledger record that
    left the de-duplication window is forgotten."""
    if command.source_event_type == PRUNE:
        if record is None or not is_prunable(record, now, rules.retention):
            return DUPLICATE
        return Decision((Forget(record.notification_id),))
    if record is None or record.status is not LedgerStatus.DEFERRED or record.source is None:
        return DUPLICATE
    source = EVENT_MODELS[record.source["event_type"]].model_validate(record.source)
    assert isinstance(source, NotifiableEvent)
    state = patient_state(record.patient_id)
    if record.channel == NO_CHANNEL:
        # The wait for the patient's contact is over: planned with what there is now. The
        # waiting record is forgotten first, so a suppression may take its place.
        waiting = record.notification_id

        def seen_now(nid: str) -> bool:
            return nid != waiting and seen(nid)

        if answered(source, state):
            planned = suppress(source, partition, seen_now, now, ANSWERED)
        else:
            planned = plan(source, partition, state.contact, seen_now, now).effects
        return Decision((Forget(waiting), *planned))
    contact = state.contact
    channel = channel_by_label(source, contact, record.channel)
    if contact is None or channel is None:
        return Decision((Publish(record, DeliveryStatus.SUPPRESSED, 0, CHANNEL_REMOVED),))
    return Decision((deliver(source, record.channel, channel, contact, partition, now),))


def decide_recording(
    outcome: NotificationOutcome, record: DeliveryRecord | None, partition: int
) -> Decision:
    """A published NotificationOutcome becomes the ledger's final record, unless one is there."""
    if record is not None and record.status in FINAL_STATUSES:
        return DUPLICATE
    final = DeliveryRecord(
        notification_id=outcome.notification_id,
        patient_id=outcome.patient_id,
        partition=partition,
        channel=outcome.channel,
        status=LedgerStatus(outcome.status.value),
        source_event_id=outcome.source_event_id,
        source_event_type=outcome.source_event_type,
        finished_at=outcome.occurred_at,
    )
    return Decision((Record(final),))


# Due time, patient id, notification id: what the timer releases, in due order.
Release: TypeAlias = tuple[datetime, str, str]


@dataclass(frozen=True)
class LedgerScan:
    """What one scan of this worker's ledger partitions found for the timer to do."""

    releases: list[Release] = field(default_factory=list)
    # In-flight deliveries not started by this process: notification id -> when to judge them.
    suspects: dict[str, datetime] = field(default_factory=dict)
    prunable: list[DeliveryRecord] = field(default_factory=list)


def scan_ledger(
    values: Iterable[Mapping[str, Any]],
    active: Container[int],
    running: Container[str],
    now: datetime,
    rules: NotifyRules,
) -> LedgerScan:
    """The deferred records to release, the in-flight ones to judge later, and (at most
    ``PRUNE_BATCH``) the final ones that left the de-duplication window."""
    scan = LedgerScan()
    for value in values:
        # Checked raw first: records of standby partitions are never parsed.
        if value.get("partition") not in active:
            continue
        record = DeliveryRecord.model_validate(value)
        if is_prunable(record, now, rules.retention):
            if len(scan.prunable) < PRUNE_BATCH:
                scan.prunable.append(record)
        elif record.status is LedgerStatus.DEFERRED and record.deferred_until is not None:
            scan.releases.append((record.deferred_until, record.patient_id, record.notification_id))
        elif (
            record.status is LedgerStatus.IN_FLIGHT
            and record.notification_id not in running
            and record.started_at is not None
        ):
            # Started by a worker that is gone, or still running on a worker that just lost
            # the partition: judged once the longest delivery has had its time.
            scan.suspects[record.notification_id] = record.started_at + rules.longest_delivery
    scan.releases.sort()
    return scan


def needs_scan(
    generation: int | None,
    scanned_generation: int | None,
    last_scan: datetime | None,
    now: datetime,
) -> bool:
    """After every rebalance, and now and then: an in-flight record can reach this worker's
    table (recovery, standby promotion) after the scan that followed the rebalance."""
    return generation != scanned_generation or last_scan is None or now - last_scan > LEDGER_RESCAN


def judge_interrupted(
    record: DeliveryRecord | None, now: datetime, rules: NotifyRules, running: bool
) -> Publish | None:
    """A suspect whose time is up: cut off mid-delivery by a crash, it may have arrived, so it
    is reported as failed instead of sent again."""
    if record is None or running or not is_abandoned(record, now, rules.longest_delivery):
        return None
    return Publish(record, DeliveryStatus.FAILED, 0, INTERRUPTED)


def unconfigured(delivery: Deliver, configured: Container[str]) -> Publish | None:
    """A delivery on a channel kind this worker has no channel for fails at once (a console
    contact without ``MEDSTREAM_NOTIFY_CONSOLE_ENABLED``)."""
    kind = delivery.channel.kind.value
    if kind in configured:
        return None
    return Publish(delivery.record, DeliveryStatus.FAILED, 0, f"{kind} is not configured")


def next_try(attempts: int, retryable: bool, delays: Sequence[float]) -> float | None:
    """The wait before the next try after ``attempts`` failed ones, or None: the delivery
    failed (not retryable, or every try of ``delays`` used)."""
    if not retryable or attempts > len(delays):
        return None
    return delays[attempts - 1]


# --- the parts ----------------------------------------------------------------------------


def answered(event: NotifiableEvent, state: PatientState) -> bool:
    """A reminder or missed dose whose slot was answered after the timer sent it: telling the
    patient to take it could bring a second dose, and the caregiver would be told wrong."""
    return isinstance(event, ReminderDue | DoseMissed) and is_answered(state, event.reminder_id)


def suppress(
    event: NotifiableEvent, partition: int, seen: Seen, now: datetime, reason: str
) -> tuple[Effect, ...]:
    if seen(notification_id(event.event_id, NO_CHANNEL)):
        return ()
    record = DeliveryRecord.for_event(
        event, NO_CHANNEL, partition, LedgerStatus.SUPPRESSED, finished_at=now
    )
    return (Suppress(record, reason),)


def defer(event: NotifiableEvent, label: str, partition: int, until: datetime) -> Defer:
    record = DeliveryRecord.for_event(
        event,
        label,
        partition,
        LedgerStatus.DEFERRED,
        deferred_until=until,
        source=json.loads(event.model_dump_json()),
    )
    return Defer(record, until)


def deliver(
    event: NotifiableEvent,
    label: str,
    channel: ContactChannel,
    contact: ContactPreferences,
    partition: int,
    now: datetime,
) -> Deliver:
    record = DeliveryRecord.for_event(
        event, label, partition, LedgerStatus.IN_FLIGHT, started_at=now
    )
    return Deliver(record, event, channel, contact)


def channel_by_label(
    event: NotifiableEvent, contact: ContactPreferences | None, label: str
) -> ContactChannel | None:
    for candidate, channel in delivery_targets(event, contact):
        if candidate == label:
            return channel
    return None


def outcome_events(
    publish: Publish, now: datetime
) -> tuple[NotificationOutcome, AdminAlert | None]:
    """The NotificationOutcome of a final status, and the AdminAlert of a failure."""
    record, error = publish.record, publish.error
    outcome = NotificationOutcome(
        event_id=stable_id("outcome", record.notification_id),
        patient_id=record.patient_id,
        occurred_at=now,
        notification_id=record.notification_id,
        source_event_id=record.source_event_id,
        source_event_type=record.source_event_type,
        channel=record.channel,
        status=publish.status,
        attempts=publish.attempts,
        error=error,
    )
    if publish.status is not DeliveryStatus.FAILED:
        return outcome, None
    alert = AdminAlert(
        event_id=stable_id("admin", record.notification_id),
        patient_id=record.patient_id,
        occurred_at=now,
        alert_id=stable_id("admin", record.notification_id),
        alert_type="DELIVERY_FAILED",
        message=f"{record.source_event_type} could not be delivered on {record.channel}: {error}",
        source_event_id=record.source_event_id,
        details={
            "notification_id": record.notification_id,
            "channel": record.channel,
            "attempts": str(publish.attempts),
        },
    )
    return outcome, alert


def timer_command(command: str, patient_id: str, nid: str, now: datetime) -> NotificationOutcome:
    """A release or prune travels as a NotificationOutcome on an internal topic: a timer
    cannot write the ledger, so an agent on that topic does it."""
    return NotificationOutcome(
        event_id=stable_id(command, nid),
        patient_id=patient_id,
        occurred_at=now,
        notification_id=nid,
        source_event_id=nid,
        source_event_type=command,
        channel=command,
        status=DeliveryStatus.SUPPRESSED,
        attempts=0,
    )


def channel_kind(label: str) -> str:
    """The channel kind of a label (``caregiver-webhook#1`` -> ``webhook``), for metrics."""
    return label.removeprefix("caregiver-").split("#", 1)[0]
