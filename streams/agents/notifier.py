"""The notifier: delivers reminders and alerts per the patient's preferences, at most once each."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import faust

from streams.agents.runtime import (
    Emitter,
    Intake,
    Outcome,
    active_partitions,
    tables_recovered,
)
from streams.contracts.models import (
    EVENT_MODELS,
    AdminAlert,
    ContactChannel,
    DoseMissed,
    Event,
    InteractionWarning,
    NotificationOutcome,
    RefillAlert,
    ReminderDue,
)
from streams.contracts.vocabulary import ChannelKind, DeliveryStatus
from streams.domain.patient import ContactPreferences, PatientState, is_answered, stable_id
from streams.faust_transport import AcknowledgedTable
from streams.notify.channels import (
    AppriseChannel,
    Channel,
    ConsoleChannel,
    DeliveryError,
    EmailChannel,
    WebhookChannel,
)
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
from streams.notify.messages import render
from streams.notify.policy import backoff_delays, delivery_targets, is_urgent, quiet_hours_end
from streams.notify.targets import TargetPolicy
from streams.observability import tracing
from streams.settings import Settings
from streams.topology import (
    NOTIFY_ALERTS,
    RECORD_DELIVERIES,
    RELEASE_DEFERRED_NOTIFICATIONS,
    RESUME_NOTIFICATIONS,
)

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Notifiable = ReminderDue | DoseMissed | RefillAlert | InteractionWarning
NO_CHANNEL = "none"
ANSWERED = "the dose was already answered"
# A safety net: the scan after each rebalance finds the in-flight and deferred records; the
# periodic one also prunes records that left the de-duplication window.
LEDGER_RESCAN = timedelta(minutes=5)
# Prune commands sent per scan, so a first scan of a large ledger does not flood the topic.
PRUNE_BATCH = 1000
PRUNE = "prune"


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class _Planned:
    """A delivery whose in-flight mark is written, to start once that mark is durable."""

    record: DeliveryRecord
    event: Notifiable
    channel: ContactChannel
    contact: ContactPreferences
    trace_context: tracing.Context | None


@dataclass
class Notifier:
    """Decides what to deliver where and when, and runs the deliveries in the background.

    The agent loop never waits for a channel: each delivery is a task, so a slow or dead
    channel holds back neither other patients nor other channels.
    """

    app: faust.App
    settings: Settings
    patient_state: Callable[[str], PatientState]
    ledger: AcknowledgedTable
    emitter: Emitter
    notifications_topic: faust.TopicT
    admin_alerts_topic: faust.TopicT
    releases_topic: faust.TopicT
    input_topic_name: str
    channels: Mapping[str, Channel]
    clock: Clock = utc_now
    rng: random.Random = field(default_factory=random.Random)
    running: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _deferred: list[tuple[datetime, str, str]] = field(default_factory=list)
    _planned_generation: int | None = None
    # In-flight deliveries not started by this process: notification id -> when to judge them.
    _suspects: dict[str, datetime] = field(default_factory=dict)
    _last_scan: datetime | None = None
    _semaphore: asyncio.Semaphore | None = None
    # Deliveries planned by the current batch, started by start_planned at its end.
    _planned: list[_Planned] = field(default_factory=list)
    # Suppressions decided by the current batch, reported by start_planned at its end.
    _suppressed: list[tuple[DeliveryRecord, str]] = field(default_factory=list)

    # --- the agents' handlers -------------------------------------------------------------

    async def handle(self, event: Event, partition: int) -> Outcome:
        """Plan the deliveries of one reminder, missed dose, refill alert or warning."""
        if not isinstance(event, ReminderDue | DoseMissed | RefillAlert | InteractionWarning):
            raise TypeError(type(event).__name__)
        if self.clock() - event.occurred_at > self._retention:
            # Its ledger records may be pruned already: never risk a second delivery.
            log.info("%s older than the de-duplication window: not delivered", event.event_type)
            return Outcome.DUPLICATE
        if self.ledger.get(decision_id(event.event_id)) is not None:
            # Decided before (then the patient's contact may have differed): never twice.
            return Outcome.DUPLICATE
        self._write(
            DeliveryRecord.for_event(
                event, DECISION, partition, LedgerStatus.DECIDED, finished_at=self.clock()
            )
        )
        state = self.patient_state(event.patient_id)
        if (
            isinstance(event, ReminderDue | DoseMissed)
            and state.active_medication(event.medication_id) is None
        ):
            self._suppress(event, partition, "the medication was discontinued")
            return Outcome.PROCESSED
        if _answered(event, state):
            self._suppress(event, partition, ANSWERED)
            return Outcome.PROCESSED
        if state.contact is None and self._contact_wait:
            # The contact comes on another topic than what caused this event, in no order
            # with it: an onboarding may publish both at once, and a worker taking over
            # partitions re-reads both. Suppressing at once could drop a wanted notification.
            self._defer(event, NO_CHANNEL, partition, self.clock() + self._contact_wait)
            return Outcome.PROCESSED
        return self._plan(event, partition, state.contact)

    def _plan(
        self, event: Notifiable, partition: int, contact: ContactPreferences | None
    ) -> Outcome:
        """Plan the deliveries of ``event`` on the patient's channels, or suppress it."""
        targets = delivery_targets(event, contact)
        if not targets:
            self._suppress(event, partition, "no contact channel for this notification")
            return Outcome.PROCESSED
        assert contact is not None
        new = 0
        for label, channel in targets:
            nid = notification_id(event.event_id, label)
            if self.ledger.get(nid) is not None:
                continue  # handled before decision marks existed
            new += 1
            quiet_end = (
                None
                if is_urgent(event)
                else quiet_hours_end(self.clock(), contact.quiet_hours, contact.timezone)
            )
            if quiet_end is not None:
                self._defer(event, label, partition, quiet_end)
                continue
            self._start(event, label, channel, contact, partition)
        return Outcome.PROCESSED if new else Outcome.DUPLICATE

    def _defer(self, event: Notifiable, label: str, partition: int, until: datetime) -> None:
        self._write(
            DeliveryRecord.for_event(
                event,
                label,
                partition,
                LedgerStatus.DEFERRED,
                deferred_until=until,
                source=json.loads(event.model_dump_json()),
            )
        )
        self._plan_release(until, event.patient_id, notification_id(event.event_id, label))

    async def release(self, event: Event, partition: int) -> Outcome:
        """From the timer: a deferred delivery whose quiet hours ended starts now, a
        notification that waited for the patient's contact is planned, or a ledger record that
        left the de-duplication window is forgotten."""
        if not isinstance(event, NotificationOutcome):
            raise TypeError(type(event).__name__)
        record = self._record(event.notification_id)
        if event.source_event_type == PRUNE:
            if record is None or not is_prunable(record, self.clock(), self._retention):
                return Outcome.DUPLICATE
            del self.ledger[event.notification_id]
            return Outcome.PROCESSED
        if record is None or record.status is not LedgerStatus.DEFERRED or record.source is None:
            return Outcome.DUPLICATE
        source = EVENT_MODELS[record.source["event_type"]].model_validate(record.source)
        assert isinstance(source, ReminderDue | DoseMissed | RefillAlert | InteractionWarning)
        state = self.patient_state(record.patient_id)
        contact = state.contact
        if record.channel == NO_CHANNEL:
            # The wait for the patient's contact is over: planned with what there is now.
            del self.ledger[record.notification_id]
            if _answered(source, state):
                self._suppress(source, partition, ANSWERED)
            else:
                self._plan(source, partition, contact)
            return Outcome.PROCESSED
        channel = _channel_by_label(source, contact, record.channel)
        if contact is None or channel is None:
            await self._finish(record, DeliveryStatus.SUPPRESSED, 0, "the channel was removed")
            return Outcome.PROCESSED
        self._start(source, record.channel, channel, contact, partition)
        return Outcome.PROCESSED

    async def record_outcome(self, event: Event, partition: int) -> Outcome:
        """Write a published NotificationOutcome into the ledger (final, never delivered again)."""
        if not isinstance(event, NotificationOutcome):
            raise TypeError(type(event).__name__)
        record = self._record(event.notification_id)
        status = LedgerStatus(event.status.value)
        if record is not None and record.status in FINAL_STATUSES:
            return Outcome.DUPLICATE
        self._write(
            DeliveryRecord(
                notification_id=event.notification_id,
                patient_id=event.patient_id,
                partition=partition,
                channel=event.channel,
                status=status,
                source_event_id=event.source_event_id,
                source_event_type=event.source_event_type,
                finished_at=event.occurred_at,
            )
        )
        return Outcome.PROCESSED

    # --- deliveries -------------------------------------------------------------------------

    def _start(
        self,
        event: Notifiable,
        label: str,
        channel: ContactChannel,
        contact: ContactPreferences,
        partition: int,
    ) -> None:
        record = DeliveryRecord.for_event(
            event, label, partition, LedgerStatus.IN_FLIGHT, started_at=self.clock()
        )
        self._write(record)
        # The task outlives the event's span: it is handed the trace context explicitly.
        self._planned.append(_Planned(record, event, channel, contact, tracing.current_context()))

    async def start_planned(self) -> None:
        """At the end of a batch: start the deliveries its events planned, report what it
        suppressed.

        The batch's ledger records (decision marks, in-flight marks) must be in the changelog
        before anybody can be reached or any outcome published: after a crash they are what
        stops a second delivery, or a delivery of an alert already reported as suppressed.
        """
        if not self._planned and not self._suppressed:
            return
        planned, self._planned = self._planned, []
        suppressed, self._suppressed = self._suppressed, []
        try:
            await self.ledger.acknowledged()
        except BaseException:
            # Kept for the intake's next try of the batch end: nothing of them happened yet.
            self._planned[:0], self._suppressed[:0] = planned, suppressed
            raise
        for record, reason in suppressed:
            await self._finish(record, DeliveryStatus.SUPPRESSED, 0, reason)
        for delivery in planned:
            nid = delivery.record.notification_id
            task = asyncio.create_task(
                self._deliver(
                    delivery.record,
                    delivery.event,
                    delivery.channel,
                    delivery.contact,
                    delivery.trace_context,
                )
            )
            self.running[nid] = task
            task.add_done_callback(functools.partial(self._forget_finished, nid))

    async def _deliver(
        self,
        record: DeliveryRecord,
        event: Notifiable,
        channel: ContactChannel,
        contact: ContactPreferences,
        trace_context: tracing.Context | None = None,
    ) -> None:
        with tracing.span(
            f"notify {event.event_type}",
            context=trace_context,
            attributes={
                "medstream.event_type": event.event_type,
                "medstream.channel": record.channel,
            },
        ):
            await self._deliver_traced(record, event, channel, contact)

    async def _deliver_traced(
        self,
        record: DeliveryRecord,
        event: Notifiable,
        channel: ContactChannel,
        contact: ContactPreferences,
    ) -> None:
        implementation = self.channels.get(channel.kind.value)
        if implementation is None:
            await self._finish(
                record, DeliveryStatus.FAILED, 0, f"{channel.kind.value} is not configured"
            )
            return
        message = render(event, contact.timezone, record.notification_id)
        delays = backoff_delays(
            self.settings.notify_max_attempts,
            self.settings.notify_backoff_base_seconds,
            self.settings.notify_backoff_cap_seconds,
            self.rng,
        )
        attempts = 0
        error = "not attempted"
        async with self._limit():
            while True:
                attempts += 1
                try:
                    with tracing.span(
                        f"deliver {channel.kind.value} {event.event_type}",
                        kind=tracing.SpanKind.CLIENT,
                        attributes={
                            "medstream.channel": record.channel,
                            "medstream.attempt": attempts,
                        },
                    ):
                        await asyncio.wait_for(
                            implementation.deliver(channel.target, message),
                            self.settings.notify_timeout_seconds,
                        )
                except DeliveryError as failure:
                    error, retryable = str(failure), failure.retryable
                except TimeoutError:
                    error = f"timed out after {self.settings.notify_timeout_seconds:g}s"
                    retryable = True
                except Exception as failure:  # a channel bug must not lose the outcome
                    error, retryable = f"{type(failure).__name__} in the channel", False
                else:
                    await self._finish(record, DeliveryStatus.DELIVERED, attempts, None)
                    return
                if not retryable or attempts > len(delays):
                    break
                await asyncio.sleep(delays[attempts - 1])
        await self._finish(record, DeliveryStatus.FAILED, attempts, error)

    def _forget_finished(self, nid: str, _task: asyncio.Task[None]) -> None:
        self.running.pop(nid, None)

    def _limit(self) -> asyncio.Semaphore:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.settings.notify_concurrency)
        return self._semaphore

    async def _finish(
        self,
        record: DeliveryRecord,
        status: DeliveryStatus,
        attempts: int,
        error: str | None,
    ) -> None:
        outcome = NotificationOutcome(
            event_id=stable_id("outcome", record.notification_id),
            patient_id=record.patient_id,
            occurred_at=self.clock(),
            notification_id=record.notification_id,
            source_event_id=record.source_event_id,
            source_event_type=record.source_event_type,
            channel=record.channel,
            status=status,
            attempts=attempts,
            error=error,
        )
        await self.emitter.emit(self.notifications_topic, outcome)
        kind = record.channel.removeprefix("caregiver-").split("#", 1)[0]
        self.emitter.metrics.delivery(kind, status.value)
        log.info(
            "notification %s: %s on %s after %d attempts",
            record.notification_id,
            status.value,
            record.channel,
            attempts,
        )
        if status is DeliveryStatus.FAILED:
            alert = AdminAlert(
                event_id=stable_id("admin", record.notification_id),
                patient_id=record.patient_id,
                occurred_at=outcome.occurred_at,
                alert_id=stable_id("admin", record.notification_id),
                alert_type="DELIVERY_FAILED",
                message=(
                    f"{record.source_event_type} could not be delivered on {record.channel}: "
                    f"{error}"
                ),
                source_event_id=record.source_event_id,
                details={
                    "notification_id": record.notification_id,
                    "channel": record.channel,
                    "attempts": str(attempts),
                },
            )
            await self.emitter.emit(self.admin_alerts_topic, alert)

    def _suppress(self, event: Event, partition: int, reason: str) -> None:
        nid = notification_id(event.event_id, NO_CHANNEL)
        if self.ledger.get(nid) is not None:
            return
        record = DeliveryRecord.for_event(
            event, NO_CHANNEL, partition, LedgerStatus.SUPPRESSED, finished_at=self.clock()
        )
        self._write(record)
        self._suppressed.append((record, reason))

    # --- the timer: deferred deliveries and deliveries cut off by a crash -------------------

    def _plan_release(self, due: datetime, patient_id: str, nid: str) -> None:
        self._deferred.append((due, patient_id, nid))
        self._deferred.sort()

    async def tick(self) -> None:
        if not tables_recovered(self.app):
            return
        try:
            now = self.clock()
            # Also rescanned now and then: an in-flight record can reach this worker's table
            # (recovery, standby promotion) after the scan that followed the rebalance.
            if (
                self.app.consumer_generation_id != self._planned_generation
                or self._last_scan is None
                or now - self._last_scan > LEDGER_RESCAN
            ):
                await self._scan_ledger()
                self._last_scan = now
            await self._report_abandoned(now)
            while self._deferred and self._deferred[0][0] <= now:
                _due, patient_id, nid = self._deferred.pop(0)
                await self._send_to_agent("release", patient_id, nid)
        except Exception:
            log.exception("notifier timer failed; retrying on the next tick")

    async def _scan_ledger(self) -> None:
        active = active_partitions(self.app, self.input_topic_name)
        longest = longest_delivery(
            self.settings.notify_max_attempts,
            self.settings.notify_timeout_seconds,
            self.settings.notify_backoff_cap_seconds,
        )
        self._deferred.clear()
        self._suspects.clear()
        now = self.clock()
        prunable: list[DeliveryRecord] = []
        for _key, value in self.ledger.items():
            # Checked raw first: records of standby partitions are never parsed.
            if value.get("partition") not in active:
                continue
            record = DeliveryRecord.model_validate(value)
            if is_prunable(record, now, self._retention):
                if len(prunable) < PRUNE_BATCH:
                    prunable.append(record)
            elif record.status is LedgerStatus.DEFERRED and record.deferred_until is not None:
                self._plan_release(record.deferred_until, record.patient_id, record.notification_id)
            elif (
                record.status is LedgerStatus.IN_FLIGHT
                and record.notification_id not in self.running
                and record.started_at is not None
            ):
                # Started by a worker that is gone, or still running on a worker that just
                # lost the partition: judged once the longest delivery has had its time.
                self._suspects[record.notification_id] = record.started_at + longest
        self._planned_generation = self.app.consumer_generation_id
        for record in prunable:
            await self._send_to_agent(PRUNE, record.patient_id, record.notification_id)

    async def _report_abandoned(self, now: datetime) -> None:
        longest = longest_delivery(
            self.settings.notify_max_attempts,
            self.settings.notify_timeout_seconds,
            self.settings.notify_backoff_cap_seconds,
        )
        for nid, due in list(self._suspects.items()):
            if due > now:
                continue
            del self._suspects[nid]
            record = self._record(nid)
            if record is None or not is_abandoned(record, now, longest) or nid in self.running:
                continue
            # Cut off mid-delivery by a crash: it may have arrived, so it is not sent again.
            await self._finish(
                record,
                DeliveryStatus.FAILED,
                0,
                "interrupted by a worker crash; it may or may not have arrived, "
                "so it is not resent",
            )

    async def _send_to_agent(self, command: str, patient_id: str, nid: str) -> None:
        # A release or prune travels as a NotificationOutcome on an internal topic: a timer
        # cannot write the ledger, so an agent on that topic does it.
        message = NotificationOutcome(
            event_id=stable_id(command, nid),
            patient_id=patient_id,
            occurred_at=self.clock(),
            notification_id=nid,
            source_event_id=nid,
            source_event_type=command,
            channel=command,
            status=DeliveryStatus.SUPPRESSED,
            attempts=0,
        )
        await self.emitter.emit(self.releases_topic, message)

    @property
    def _retention(self) -> timedelta:
        return timedelta(days=self.settings.dedup_retention_days)

    @property
    def _contact_wait(self) -> timedelta:
        return timedelta(seconds=self.settings.notify_contact_wait_seconds)

    # --- ledger access ----------------------------------------------------------------------

    def _record(self, nid: str) -> DeliveryRecord | None:
        value = self.ledger.get(nid)
        return None if value is None else DeliveryRecord.model_validate(value)

    def _write(self, record: DeliveryRecord) -> None:
        self.ledger[record.notification_id] = record.model_dump(mode="json", exclude_none=True)

    async def close(self) -> None:
        """On a graceful stop: let running deliveries finish (one timeout), then close channels.

        A delivery still running after that is cancelled; its in-flight record makes the next
        worker report it as interrupted instead of sending it again.
        """
        running = list(self.running.values())
        if running:
            _done, pending = await asyncio.wait(
                running, timeout=self.settings.notify_timeout_seconds
            )
            for task in pending:
                task.cancel()
        for channel in self.channels.values():
            await channel.close()


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


def _answered(event: Notifiable, state: PatientState) -> bool:
    """A reminder or missed dose whose slot was answered after the timer sent it: telling the
    patient to take it could bring a second dose, and the caregiver would be told wrong."""
    return isinstance(event, ReminderDue | DoseMissed) and is_answered(state, event.reminder_id)


def _channel_by_label(
    event: Event, contact: ContactPreferences | None, label: str
) -> ContactChannel | None:
    for candidate, channel in delivery_targets(event, contact):  # type: ignore[arg-type]
        if candidate == label:
            return channel
    return None


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
        await notifications_intake.run(stream, notifier.record_outcome)

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
