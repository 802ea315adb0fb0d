"""Unit tests for the notifier's deciders: plain asserts on the effects they return."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from streams.contracts.models import ContactChannel, NotificationOutcome, QuietHours
from streams.contracts.vocabulary import ChannelKind, DeliveryStatus
from streams.domain.patient import (
    AnsweredSlot,
    ContactPreferences,
    MedicationRecord,
    PatientState,
)
from streams.notify.decide import (
    ANSWERED,
    CHANNEL_REMOVED,
    DISCONTINUED,
    DUPLICATE,
    INTERRUPTED,
    NO_CHANNEL,
    NO_CONTACT_CHANNEL,
    PRUNE,
    PRUNE_BATCH,
    RELEASE,
    Decision,
    Defer,
    Deliver,
    Forget,
    NotifyRules,
    Publish,
    Record,
    Seen,
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
from streams.notify.ledger import (
    DECISION,
    DeliveryRecord,
    LedgerStatus,
    decision_id,
    notification_id,
)
from streams.notify.messages import NotifiableEvent
from tests.unit.test_notify_messages import missed, refill, reminder, warning

# 08:00 in New York (EST) on the fixtures' day; quiet hours below make it quiet.
NOW = datetime(2026, 3, 3, 13, 0, tzinfo=UTC)
RULES = NotifyRules(
    retention=timedelta(days=30),
    contact_wait=timedelta(seconds=60),
    longest_delivery=timedelta(minutes=2),
)
PATIENT = ContactChannel(kind=ChannelKind.WEBHOOK, target="https://patient.example/hook")
SECOND = ContactChannel(kind=ChannelKind.EMAIL, target="patient@example.org")
CAREGIVER = ContactChannel(kind=ChannelKind.EMAIL, target="carer@example.org")
CONTACT = ContactPreferences(
    channels=(PATIENT, SECOND), timezone="America/New_York", caregiver_channels=(CAREGIVER,)
)
QUIET = CONTACT.model_copy(update={"quiet_hours": QuietHours(start="07:00", end="09:00")})
QUIET_END = datetime(2026, 3, 3, 14, 0, tzinfo=UTC)


def nothing_seen(_nid: str) -> bool:
    return False


def seen_only(*nids: str) -> Seen:
    return lambda nid: nid in nids


def medication(medication_id: str, *, active: bool = True) -> MedicationRecord:
    return MedicationRecord(
        medication_id=medication_id,
        name="Warfarin sodium",
        dose_quantity=5.0,
        dose_unit="mg",
        supply_quantity=30.0,
        refills_remaining=1,
        active=active,
    )


def patient(contact: ContactPreferences | None = CONTACT, **changes: Any) -> PatientState:
    fields: dict[str, Any] = {
        "medications": {"med-warfarin": medication("med-warfarin")},
        "contact": contact,
    }
    return PatientState.model_validate({**fields, **changes})


def decide(
    event: NotifiableEvent,
    state: PatientState | None = None,
    seen: Seen = nothing_seen,
    now: datetime = NOW,
    rules: NotifyRules = RULES,
) -> Decision:
    return decide_notification(event, 3, patient() if state is None else state, seen, now, rules)


def mark(event: NotifiableEvent, now: datetime = NOW) -> Record:
    return Record(
        DeliveryRecord.for_event(event, DECISION, 3, LedgerStatus.DECIDED, finished_at=now)
    )


def delivery(
    event: NotifiableEvent,
    label: str,
    channel: ContactChannel,
    contact: ContactPreferences = CONTACT,
    partition: int = 3,
) -> Deliver:
    record = DeliveryRecord.for_event(
        event, label, partition, LedgerStatus.IN_FLIGHT, started_at=NOW
    )
    return Deliver(record, event, channel, contact)


def suppression(event: NotifiableEvent, reason: str, partition: int = 3) -> Suppress:
    record = DeliveryRecord.for_event(
        event, NO_CHANNEL, partition, LedgerStatus.SUPPRESSED, finished_at=NOW
    )
    return Suppress(record, reason)


def deferral(event: NotifiableEvent, label: str, until: datetime, partition: int = 3) -> Defer:
    record = DeliveryRecord.for_event(
        event,
        label,
        partition,
        LedgerStatus.DEFERRED,
        deferred_until=until,
        source=json.loads(event.model_dump_json()),
    )
    return Defer(record, until)


# --- decide_notification ------------------------------------------------------------------


def test_an_event_is_delivered_on_every_channel_of_the_patient_after_its_mark() -> None:
    event = refill()
    assert decide(event) == Decision(
        (
            mark(event),
            delivery(event, "webhook#0", PATIENT),
            delivery(event, "email#1", SECOND),
        )
    )


def test_a_missed_dose_goes_to_the_caregivers_only() -> None:
    event = missed()
    assert decide(event) == Decision((mark(event), delivery(event, "caregiver-email#0", CAREGIVER)))


def test_an_event_older_than_the_window_is_a_duplicate_with_nothing_written() -> None:
    event = refill()
    decision = decide(event, now=event.occurred_at + RULES.retention + timedelta(seconds=1))
    assert decision.effects == ()
    assert decision.duplicate
    assert decision.why == "RefillAlert older than the de-duplication window"
    assert not decide(event, now=event.occurred_at + RULES.retention).duplicate


def test_an_event_decided_before_is_a_duplicate_whatever_the_contact() -> None:
    event = refill()
    assert decide(event, seen=seen_only(decision_id(event.event_id))) == DUPLICATE


def test_a_reminder_of_a_discontinued_medication_is_suppressed() -> None:
    event = reminder()
    stopped = patient(medications={"med-warfarin": medication("med-warfarin", active=False)})
    assert decide(event, stopped) == Decision((mark(event), suppression(event, DISCONTINUED)))
    assert decide(missed(), patient(medications={})).effects[1] == suppression(
        missed(), DISCONTINUED
    )


def test_a_refill_alert_is_not_checked_for_a_discontinued_medication() -> None:
    assert not decide(refill(), patient(medications={})).duplicate
    assert isinstance(decide(refill(), patient(medications={})).effects[1], Deliver)


def test_a_reminder_of_an_answered_slot_is_suppressed() -> None:
    answered = {"rem-1": AnsweredSlot(medication_id="med-warfarin", scheduled_for=NOW)}
    state = patient(answered_slots=answered)
    for event in (reminder(), missed()):
        assert decide(event, state) == Decision((mark(event), suppression(event, ANSWERED)))


def test_a_suppression_already_recorded_is_not_recorded_again() -> None:
    event = reminder()
    stopped = patient(medications={})
    seen = seen_only(notification_id(event.event_id, NO_CHANNEL))
    assert decide(event, stopped, seen) == Decision((mark(event),))


def test_an_event_before_any_contact_waits_for_one() -> None:
    event = refill()
    until = NOW + RULES.contact_wait
    assert decide(event, patient(None)) == Decision(
        (mark(event), deferral(event, NO_CHANNEL, until))
    )


def test_without_a_contact_wait_an_event_without_contact_is_suppressed() -> None:
    event = refill()
    rules = NotifyRules(RULES.retention, timedelta(0), RULES.longest_delivery)
    assert decide(event, patient(None), rules=rules) == Decision(
        (mark(event), suppression(event, NO_CONTACT_CHANNEL))
    )


def test_a_contact_without_a_channel_for_the_event_suppresses_it() -> None:
    no_caregiver = CONTACT.model_copy(update={"caregiver_channels": ()})
    event = missed()
    assert decide(event, patient(no_caregiver)) == Decision(
        (mark(event), suppression(event, NO_CONTACT_CHANNEL))
    )


def test_a_non_urgent_event_waits_for_quiet_hours_to_end() -> None:
    event = refill()
    assert decide(event, patient(QUIET)) == Decision(
        (
            mark(event),
            deferral(event, "webhook#0", QUIET_END),
            deferral(event, "email#1", QUIET_END),
        )
    )
    moderate = warning(severity="moderate")
    assert isinstance(decide(moderate, patient(QUIET)).effects[1], Defer)


def test_an_urgent_event_goes_out_during_quiet_hours() -> None:
    for event in (reminder(), warning(severity="major")):
        decision = decide(event, patient(QUIET))
        assert decision.effects[1] == delivery(event, "webhook#0", PATIENT, QUIET)


def test_channels_handled_before_decision_marks_are_skipped() -> None:
    event = refill()
    one = seen_only(notification_id(event.event_id, "webhook#0"))
    assert decide(event, seen=one) == Decision((mark(event), delivery(event, "email#1", SECOND)))
    both = seen_only(
        *(notification_id(event.event_id, label) for label in ("webhook#0", "email#1"))
    )
    # The mark is still written, so a replay stops at it, but nothing new happened.
    assert decide(event, seen=both) == Decision((mark(event),), duplicate=True)


# --- decide_release -----------------------------------------------------------------------


def command(kind: str, nid: str) -> NotificationOutcome:
    return timer_command(kind, "patient-1", nid, NOW)


def release(
    record: DeliveryRecord | None,
    state: PatientState | None = None,
    seen: Seen = nothing_seen,
    kind: str = RELEASE,
) -> Decision:
    nid = "ntf-x" if record is None else record.notification_id
    current = patient() if state is None else state
    return decide_release(command(kind, nid), record, 7, lambda _pid: current, seen, NOW, RULES)


def final(days_ago: float, status: LedgerStatus = LedgerStatus.DELIVERED) -> DeliveryRecord:
    return DeliveryRecord(
        notification_id="ntf-final",
        patient_id="patient-1",
        partition=3,
        channel="webhook#0",
        status=status,
        source_event_id="refill-1",
        source_event_type="RefillAlert",
        finished_at=NOW - timedelta(days=days_ago),
    )


def test_a_prune_forgets_only_a_final_record_outside_the_window() -> None:
    assert release(final(31), kind=PRUNE) == Decision((Forget("ntf-final"),))
    assert release(final(29), kind=PRUNE) == DUPLICATE
    assert release(None, kind=PRUNE) == DUPLICATE
    in_flight = final(31).model_copy(update={"status": LedgerStatus.IN_FLIGHT})
    assert release(in_flight, kind=PRUNE) == DUPLICATE


def test_a_release_of_anything_but_a_deferred_record_changes_nothing() -> None:
    assert release(None) == DUPLICATE
    assert release(final(1)) == DUPLICATE
    without_source = deferral(refill(), "webhook#0", QUIET_END).record.model_copy(
        update={"source": None}
    )
    assert release(without_source) == DUPLICATE


def test_a_released_delivery_starts_on_its_channel() -> None:
    event = refill()
    deferred = deferral(event, "email#1", QUIET_END).record
    assert release(deferred) == Decision((delivery(event, "email#1", SECOND, partition=7),))


def test_a_released_delivery_whose_channel_was_removed_is_reported_suppressed() -> None:
    deferred = deferral(refill(), "email#1", QUIET_END).record
    one_channel = CONTACT.model_copy(update={"channels": (PATIENT,)})
    removed = Decision((Publish(deferred, DeliveryStatus.SUPPRESSED, 0, CHANNEL_REMOVED),))
    assert release(deferred, patient(one_channel)) == removed
    assert release(deferred, patient(None)) == removed


def test_the_end_of_the_contact_wait_plans_with_the_contact_there_is_now() -> None:
    event = refill()
    waiting = deferral(event, NO_CHANNEL, NOW).record
    assert release(waiting) == Decision(
        (
            Forget(waiting.notification_id),
            delivery(event, "webhook#0", PATIENT, partition=7),
            delivery(event, "email#1", SECOND, partition=7),
        )
    )


def test_the_end_of_the_contact_wait_without_contact_suppresses_in_its_place() -> None:
    event = refill()
    waiting = deferral(event, NO_CHANNEL, NOW).record
    # The ledger still holds the waiting record under the suppression's id: it is forgotten
    # first, so the suppression is recorded.
    seen = seen_only(waiting.notification_id)
    assert release(waiting, patient(None), seen) == Decision(
        (Forget(waiting.notification_id), suppression(event, NO_CONTACT_CHANNEL, partition=7))
    )


def test_the_end_of_the_contact_wait_for_an_answered_slot_suppresses() -> None:
    event = reminder()
    waiting = deferral(event, NO_CHANNEL, NOW).record
    answered = {"rem-1": AnsweredSlot(medication_id="med-warfarin", scheduled_for=NOW)}
    assert release(waiting, patient(answered_slots=answered)) == Decision(
        (Forget(waiting.notification_id), suppression(event, ANSWERED, partition=7))
    )


# --- decide_recording ---------------------------------------------------------------------


def test_a_published_outcome_becomes_the_final_record() -> None:
    outcome = command(RELEASE, "ntf-1").model_copy(
        update={"channel": "webhook#0", "status": DeliveryStatus.DELIVERED}
    )
    expected = DeliveryRecord(
        notification_id="ntf-1",
        patient_id="patient-1",
        partition=5,
        channel="webhook#0",
        status=LedgerStatus.DELIVERED,
        source_event_id="ntf-1",
        source_event_type=RELEASE,
        finished_at=NOW,
    )
    assert decide_recording(outcome, None, 5) == Decision((Record(expected),))
    in_flight = expected.model_copy(update={"status": LedgerStatus.IN_FLIGHT})
    assert decide_recording(outcome, in_flight, 5) == Decision((Record(expected),))
    for status in (LedgerStatus.DELIVERED, LedgerStatus.SUPPRESSED, LedgerStatus.DECIDED):
        done = expected.model_copy(update={"status": status})
        assert decide_recording(outcome, done, 5) == DUPLICATE


# --- the timer ----------------------------------------------------------------------------


def raw(record: DeliveryRecord) -> dict[str, Any]:
    return record.model_dump(mode="json", exclude_none=True)


def test_a_scan_finds_releases_suspects_and_prunable_records_of_active_partitions() -> None:
    later = deferral(refill(), "webhook#0", QUIET_END).record
    sooner = deferral(warning(), "webhook#0", NOW).record
    started = NOW - timedelta(minutes=1)
    in_flight = delivery(refill(), "email#1", SECOND).record.model_copy(
        update={"started_at": started}
    )
    running = delivery(reminder(), "email#1", SECOND).record
    standby = final(31).model_copy(update={"partition": 9})
    values = [raw(r) for r in (later, final(31), final(1), sooner, in_flight, running, standby)]
    scan = scan_ledger(values, {3}, {running.notification_id}, NOW, RULES)
    assert scan.releases == [
        (NOW, "patient-1", sooner.notification_id),
        (QUIET_END, "patient-1", later.notification_id),
    ]
    assert scan.suspects == {in_flight.notification_id: started + RULES.longest_delivery}
    assert scan.prunable == [final(31)]


def test_a_scan_prunes_at_most_a_batch() -> None:
    values = [raw(final(31))] * (PRUNE_BATCH + 5)
    assert len(scan_ledger(values, {3}, set(), NOW, RULES).prunable) == PRUNE_BATCH


def test_the_ledger_is_scanned_after_a_rebalance_and_every_five_minutes() -> None:
    assert needs_scan(2, None, NOW, NOW)
    assert needs_scan(2, 2, None, NOW)
    assert not needs_scan(2, 2, NOW - timedelta(minutes=5), NOW)
    assert needs_scan(2, 2, NOW - timedelta(minutes=5, seconds=1), NOW)


def test_an_in_flight_delivery_past_the_longest_delivery_is_reported_interrupted() -> None:
    record = delivery(refill(), "webhook#0", PATIENT).record
    late = NOW + RULES.longest_delivery + timedelta(seconds=1)
    assert judge_interrupted(record, late, RULES, running=False) == Publish(
        record, DeliveryStatus.FAILED, 0, INTERRUPTED
    )
    assert judge_interrupted(record, NOW + RULES.longest_delivery, RULES, running=False) is None
    assert judge_interrupted(record, late, RULES, running=True) is None
    assert judge_interrupted(None, late, RULES, running=False) is None
    assert judge_interrupted(final(1), late, RULES, running=False) is None


def test_a_timer_command_is_a_deterministic_notification_outcome() -> None:
    message = timer_command(PRUNE, "patient-1", "ntf-1", NOW)
    assert message == timer_command(
        PRUNE, "patient-1", "ntf-1", NOW + timedelta(hours=1)
    ).model_copy(update={"occurred_at": NOW})
    assert (message.source_event_type, message.channel, message.notification_id) == (
        PRUNE,
        PRUNE,
        "ntf-1",
    )
    assert message.event_id != timer_command(RELEASE, "patient-1", "ntf-1", NOW).event_id


# --- deliveries and their outcomes --------------------------------------------------------


def test_a_channel_kind_without_a_configured_channel_fails_at_once() -> None:
    console = ContactChannel(kind=ChannelKind.CONSOLE, target="patient")
    planned = delivery(refill(), "console#0", console)
    assert unconfigured(planned, {"webhook", "email"}) == Publish(
        planned.record, DeliveryStatus.FAILED, 0, "console is not configured"
    )
    assert unconfigured(planned, {"console"}) is None


def test_a_failed_attempt_is_retried_while_retryable_and_tries_remain() -> None:
    delays = [0.5, 1.5]
    assert next_try(1, True, delays) == 0.5
    assert next_try(2, True, delays) == 1.5
    assert next_try(3, True, delays) is None
    assert next_try(1, False, delays) is None


def test_a_failure_is_published_with_an_admin_alert_a_delivery_without() -> None:
    record = delivery(refill(), "caregiver-email#0", CAREGIVER).record
    outcome, alert = outcome_events(Publish(record, DeliveryStatus.DELIVERED, 2, None), NOW)
    assert alert is None
    assert (outcome.status, outcome.attempts, outcome.error) == (DeliveryStatus.DELIVERED, 2, None)
    assert outcome.notification_id == record.notification_id
    outcome, alert = outcome_events(Publish(record, DeliveryStatus.FAILED, 3, "refused"), NOW)
    assert alert is not None
    assert alert.message == "RefillAlert could not be delivered on caregiver-email#0: refused"
    assert alert.details == {
        "notification_id": record.notification_id,
        "channel": "caregiver-email#0",
        "attempts": "3",
    }
    # Neither carries the contact's target.
    assert CAREGIVER.target not in outcome.model_dump_json() + alert.model_dump_json()
    assert channel_kind("caregiver-email#0") == "email"
    assert channel_kind("webhook#1") == "webhook"
