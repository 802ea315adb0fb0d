"""The notifier's adapter: applies the deciders' effects to the ledger, the topics and channels."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import faust

from streams.agents.emitter import Emitter
from streams.agents.intake import Outcome
from streams.clock import Clock, utc_now
from streams.contracts.models import Event, NotificationOutcome
from streams.contracts.vocabulary import DeliveryStatus
from streams.domain.patient import PatientState
from streams.faust_transport import active_partitions, tables_recovered
from streams.notify.channels import Channel, DeliveryError
from streams.notify.decide import (
    PRUNE,
    RELEASE,
    Decision,
    Defer,
    Deliver,
    Forget,
    NotifyRules,
    Publish,
    Record,
    Release,
    Suppress,
    channel_kind,
    decide_notification,
    decide_recording,
    decide_release,
    judge_interrupted,
    needs_scan,
    next_try,
    outcome_events,
    scan_ledger,
    timer_command,
    unconfigured,
)
from streams.notify.ledger import DeliveryRecord
from streams.notify.messages import NotifiableEvent, render
from streams.notify.policy import backoff_delays
from streams.observability import tracing
from streams.settings import Settings
from streams.state.checkpoint import Restorer, checkpoint
from streams.state.table import ChangelogTable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Planned:
    """A delivery whose in-flight mark is written, to start once that mark is durable."""

    delivery: Deliver
    trace_context: tracing.Context | None


@dataclass
class Notifier:
    """Applies what the deciders of ``streams.notify.decide`` return, and runs the deliveries
    in the background.

    The agent loop never waits for a channel: each delivery is a task, so a slow or dead
    channel holds back neither other patients nor other channels.
    """

    app: faust.App
    settings: Settings
    patient_state: Callable[[str], PatientState]
    restorer: Restorer
    ledger: ChangelogTable
    emitter: Emitter
    notifications_topic: faust.TopicT
    admin_alerts_topic: faust.TopicT
    releases_topic: faust.TopicT
    input_topic_name: str
    channels: Mapping[str, Channel]
    clock: Clock = utc_now
    rng: random.Random = field(default_factory=random.Random)
    running: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _deferred: list[Release] = field(default_factory=list)
    _planned_generation: int | None = None
    # In-flight deliveries not started by this process: notification id -> when to judge them.
    _suspects: dict[str, datetime] = field(default_factory=dict)
    _last_scan: datetime | None = None
    _semaphore: asyncio.Semaphore | None = None
    # Deliveries planned by the current batch, started by start_planned at its end.
    _planned: list[_Planned] = field(default_factory=list)
    # Suppressions decided by the current batch, reported by start_planned at its end.
    _suppressed: list[Suppress] = field(default_factory=list)

    # --- the agents' handlers -------------------------------------------------------------

    async def handle(self, event: Event, partition: int) -> Outcome:
        """Plan the deliveries of one reminder, missed dose, refill alert or warning."""
        if not isinstance(event, NotifiableEvent):
            raise TypeError(type(event).__name__)
        state = self.patient_state(event.patient_id)
        decision = decide_notification(
            event, partition, state, self._seen, self.clock(), self._rules
        )
        return await self._apply(decision)

    async def release(self, event: Event, partition: int) -> Outcome:
        """From the timer: release a deferred delivery, or prune a record (decide_release)."""
        if not isinstance(event, NotificationOutcome):
            raise TypeError(type(event).__name__)
        decision = decide_release(
            event,
            self._record(event.notification_id),
            partition,
            self.patient_state,
            self._seen,
            self.clock(),
            self._rules,
        )
        return await self._apply(decision)

    async def record_outcome(self, event: Event, partition: int) -> Outcome:
        """Write a published NotificationOutcome into the ledger (final, never delivered again)."""
        if not isinstance(event, NotificationOutcome):
            raise TypeError(type(event).__name__)
        decision = decide_recording(event, self._record(event.notification_id), partition)
        return await self._apply(decision)

    async def _apply(self, decision: Decision) -> Outcome:
        """Ledger writes now; deliveries and suppressions wait for start_planned, which starts
        them once the batch's writes are acknowledged."""
        if decision.why is not None:
            log.info("%s: not delivered", decision.why)
        for effect in decision.effects:
            if isinstance(effect, Forget):
                self.ledger.delete(effect.notification_id)
            elif isinstance(effect, Publish):
                await self._finish(effect)
            elif isinstance(effect, Record):
                self._write(effect.record)
            elif isinstance(effect, Defer):
                self._write(effect.record)
                self._plan_release(effect.until, effect.record)
            elif isinstance(effect, Suppress):
                self._write(effect.record)
                self._suppressed.append(effect)
            elif isinstance(effect, Deliver):
                self._write(effect.record)
                # The task outlives the event's span: it is handed the trace context.
                self._planned.append(_Planned(effect, tracing.current_context()))
        return Outcome.DUPLICATE if decision.duplicate else Outcome.PROCESSED

    # --- deliveries -------------------------------------------------------------------------

    async def start_planned(self) -> None:
        """At the end of a batch: start the deliveries its events planned, report what it
        suppressed.

        The batch's ledger records (decision marks, in-flight marks) must be in the changelog
        before anybody can be reached or any outcome published: after a crash they are what
        stops a second delivery, or a delivery of an alert already reported as suppressed.
        """
        planned, self._planned = self._planned, []
        suppressed, self._suppressed = self._suppressed, []
        try:
            await checkpoint([self.ledger])
        except BaseException:
            # Kept for the intake's next try of the batch end: nothing of them happened yet.
            self._planned[:0], self._suppressed[:0] = planned, suppressed
            raise
        for suppression in suppressed:
            await self._finish(
                Publish(suppression.record, DeliveryStatus.SUPPRESSED, 0, suppression.reason)
            )
        for item in planned:
            nid = item.delivery.record.notification_id
            task = asyncio.create_task(self._deliver(item.delivery, item.trace_context))
            self.running[nid] = task
            task.add_done_callback(functools.partial(self._forget_finished, nid))

    async def _deliver(self, delivery: Deliver, trace_context: tracing.Context | None) -> None:
        with tracing.span(
            f"notify {delivery.event.event_type}",
            context=trace_context,
            attributes={
                "medstream.event_type": delivery.event.event_type,
                "medstream.channel": delivery.record.channel,
            },
        ):
            await self._deliver_traced(delivery)

    async def _deliver_traced(self, delivery: Deliver) -> None:
        refused = unconfigured(delivery, self.channels)
        if refused is not None:
            await self._finish(refused)
            return
        record, event, channel = delivery.record, delivery.event, delivery.channel
        implementation = self.channels[channel.kind.value]
        message = render(event, delivery.contact.timezone, record.notification_id)
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
                    await self._finish(Publish(record, DeliveryStatus.DELIVERED, attempts, None))
                    return
                wait = next_try(attempts, retryable, delays)
                if wait is None:
                    break
                await asyncio.sleep(wait)
        await self._finish(Publish(record, DeliveryStatus.FAILED, attempts, error))

    def _forget_finished(self, nid: str, _task: asyncio.Task[None]) -> None:
        self.running.pop(nid, None)

    def _limit(self) -> asyncio.Semaphore:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.settings.notify_concurrency)
        return self._semaphore

    async def _finish(self, publish: Publish) -> None:
        outcome, alert = outcome_events(publish, self.clock())
        await self.emitter.emit(self.notifications_topic, outcome)
        record = publish.record
        self.emitter.metrics.delivery(channel_kind(record.channel), publish.status.value)
        log.info(
            "notification %s: %s on %s after %d attempts",
            record.notification_id,
            publish.status.value,
            record.channel,
            publish.attempts,
        )
        if alert is not None:
            await self.emitter.emit(self.admin_alerts_topic, alert)

    # --- the timer: deferred deliveries and deliveries cut off by a crash -------------------

    def _plan_release(self, due: datetime, record: DeliveryRecord) -> None:
        self._deferred.append((due, record.patient_id, record.notification_id))
        self._deferred.sort()

    async def tick(self) -> None:
        if not tables_recovered(self.app):
            return
        try:
            await self.restorer.ready()
            now = self.clock()
            generation = self.app.consumer_generation_id
            if needs_scan(generation, self._planned_generation, self._last_scan, now):
                await self._scan_ledger()
                self._last_scan = now
            await self._report_abandoned(now)
            while self._deferred and self._deferred[0][0] <= now:
                _due, patient_id, nid = self._deferred.pop(0)
                await self._send_to_agent(RELEASE, patient_id, nid)
        except Exception:
            log.exception("notifier timer failed; retrying on the next tick")

    async def _scan_ledger(self) -> None:
        active = active_partitions(self.app, self.input_topic_name)
        values = (value for _key, value in self.ledger.items(active))
        scan = scan_ledger(values, active, self.running, self.clock(), self._rules)
        self._deferred[:] = scan.releases
        self._suspects.clear()
        self._suspects.update(scan.suspects)
        self._planned_generation = self.app.consumer_generation_id
        for record in scan.prunable:
            await self._send_to_agent(PRUNE, record.patient_id, record.notification_id)

    async def _report_abandoned(self, now: datetime) -> None:
        for nid, due in list(self._suspects.items()):
            if due > now:
                continue
            del self._suspects[nid]
            verdict = judge_interrupted(self._record(nid), now, self._rules, nid in self.running)
            if verdict is not None:
                await self._finish(verdict)

    async def _send_to_agent(self, command: str, patient_id: str, nid: str) -> None:
        message = timer_command(command, patient_id, nid, self.clock())
        await self.emitter.emit(self.releases_topic, message)

    @property
    def _rules(self) -> NotifyRules:
        return NotifyRules.from_settings(self.settings)

    # --- ledger access ----------------------------------------------------------------------

    def _seen(self, nid: str) -> bool:
        return self.ledger.get(nid) is not None

    def _record(self, nid: str) -> DeliveryRecord | None:
        value = self.ledger.get(nid)
        return None if value is None else DeliveryRecord.model_validate(value)

    def _write(self, record: DeliveryRecord) -> None:
        self.ledger.set(
            record.notification_id,
            record.model_dump(mode="json", exclude_none=True),
            record.partition,
        )

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
