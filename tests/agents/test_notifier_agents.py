"""Agent tests of the notifier's ledger through ``agent.test_context()`` (no broker, no channel).

The harness (tests/agents/harness.py, conftest.py) is the one of the patient-agent tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from datetime import timedelta

import pytest
from aiokafka.errors import KafkaConnectionError

from streams.agents import emitter
from streams.agents.notifier import NO_CHANNEL
from streams.app import Medstream
from streams.contracts.models import DeadLetter, NotificationOutcome, RefillAlert
from streams.contracts.vocabulary import DeliveryStatus
from streams.notify.ledger import LedgerStatus, decision_id, notification_id
from streams.state.stores import Changes
from tests.agents.harness import NOW, Emitted, encoded, event, feeding, of_type

WINDOW = timedelta(days=30)  # MEDSTREAM_DEDUP_RETENTION_DAYS, default


def refill_alert(occurred_days_ago: float) -> bytes:
    alert = RefillAlert(
        event_id=f"refill-{occurred_days_ago}",
        patient_id="p1",
        occurred_at=NOW - timedelta(days=occurred_days_ago),
        alert_id=f"refill-{occurred_days_ago}",
        medication_id="m1",
        medication_name="Metformin",
        reason="OUT_OF_SUPPLY",
        supply_quantity=0,
        refills_remaining=0,
    )
    return alert.model_dump_json().encode()


def outcome(nid: str, days_ago: float) -> bytes:
    return (
        NotificationOutcome(
            event_id=f"outcome-{nid}",
            patient_id="p1",
            occurred_at=NOW - timedelta(days=days_ago),
            notification_id=nid,
            source_event_id="refill-1",
            source_event_type="RefillAlert",
            channel="console#0",
            status=DeliveryStatus.DELIVERED,
            attempts=1,
        )
        .model_dump_json()
        .encode()
    )


def command(kind: str, nid: str) -> bytes:
    """A command of the notifier's timer ("release" or "prune"), as it sends them."""
    return (
        NotificationOutcome(
            event_id=f"{kind}-{nid}",
            patient_id="p1",
            occurred_at=NOW,
            notification_id=nid,
            source_event_id=nid,
            source_event_type=kind,
            channel=kind,
            status=DeliveryStatus.SUPPRESSED,
            attempts=0,
        )
        .model_dump_json()
        .encode()
    )


async def test_an_alert_older_than_the_window_is_never_delivered(
    medstream: Medstream, emitted: Emitted
) -> None:
    async with feeding(medstream, "apply-patient-events") as feed:
        contact = event(
            "ContactPreferencesSet", "c1", channels=[{"kind": "console", "target": "patient"}]
        )
        await feed.put(medstream.settings.topic_name("patient-events"), encoded(contact))
    async with feeding(medstream, "notify-alerts") as feed:
        await feed.put(medstream.settings.topic_name("refill-alerts"), refill_alert(31))
    assert medstream.stats.duplicates["RefillAlert"] == 1
    assert list(medstream.notifier.ledger.items()) == []
    assert not [sent for _, sent in emitted if isinstance(sent, NotificationOutcome)]


async def test_a_final_record_is_pruned_only_once_it_left_the_window(
    medstream: Medstream,
) -> None:
    ledger = medstream.notifier.ledger
    async with feeding(medstream, "record-deliveries") as feed:
        topic = medstream.settings.topic_name("notifications")
        await feed.put(topic, outcome("ntf-old", days_ago=31))
        await feed.put(topic, outcome("ntf-recent", days_ago=29))
    assert ledger["ntf-old"]["finished_at"].startswith(str((NOW - timedelta(days=31)).date()))
    async with feeding(medstream, "release-deferred-notifications") as feed:
        topic = medstream.settings.topic_name("medstream-notification-releases")
        await feed.put(topic, command("prune", "ntf-old"))
        await feed.put(topic, command("prune", "ntf-recent"))
        await feed.put(topic, command("prune", "ntf-old"))  # again: already gone
    assert "ntf-old" not in ledger
    assert "ntf-recent" in ledger
    assert medstream.stats.duplicates["NotificationOutcome"] == 2


async def set_contact(medstream: Medstream, event_id: str, *targets: str) -> None:
    channels = [{"kind": "console", "target": target} for target in targets]
    contact = event("ContactPreferencesSet", event_id, channels=channels, timezone="UTC")
    async with feeding(medstream, "apply-patient-events") as feed:
        await feed.put(medstream.settings.topic_name("patient-events"), encoded(contact))


async def notify(medstream: Medstream, alert: bytes) -> None:
    """Feed one alert to the notifier and wait for the deliveries it started."""
    async with feeding(medstream, "notify-alerts") as feed:
        await feed.put(medstream.settings.topic_name("refill-alerts"), alert)
    async with asyncio.timeout(5):
        await asyncio.gather(*medstream.notifier.running.values())


def outcomes(emitted: Emitted) -> list[tuple[str, str, str | None]]:
    return [
        (sent.channel, sent.status.value, sent.error)
        for _topic, sent in emitted
        if isinstance(sent, NotificationOutcome)
    ]


@pytest.mark.parametrize("targets_now", [(), ("patient", "caregiver")], ids=["none", "two"])
async def test_a_replayed_alert_is_decided_once_whatever_the_contact_has_become(
    medstream: Medstream, emitted: Emitted, targets_now: tuple[str, ...]
) -> None:
    # A contact can change between an alert and its replay. After a crash the patient's
    # contact (patient-events) can also be re-applied after the alert (refill-alerts) is
    # replayed: no order holds between two topics. Either way the replay changes nothing:
    # neither a delivery on a channel added since, nor a "suppressed" for a delivered alert.
    await set_contact(medstream, "c1", "patient")
    await notify(medstream, refill_alert(1))
    assert outcomes(emitted) == [("console#0", "delivered", None)]
    mark = medstream.notifier.ledger[decision_id("refill-1")]
    assert mark["status"] == LedgerStatus.DECIDED.value

    await set_contact(medstream, "c2", *targets_now)
    await notify(medstream, refill_alert(1))
    assert outcomes(emitted) == [("console#0", "delivered", None)]
    assert medstream.stats.duplicates["RefillAlert"] == 1


async def test_a_suppression_is_final_and_leaves_the_ledger_with_the_window(
    medstream: Medstream, emitted: Emitted
) -> None:
    await set_contact(medstream, "c1")  # known, but without a channel for alerts
    await notify(medstream, refill_alert(1))
    await set_contact(medstream, "c2", "patient")
    await notify(medstream, refill_alert(1))
    assert outcomes(emitted) == [("none", "suppressed", "no contact channel for this notification")]
    # Both the decision mark and the suppression record carry when they were final, so the
    # periodic scan prunes them once they leave the de-duplication window.
    records = list(medstream.notifier.ledger.values())
    assert len(records) == 2
    assert {record["finished_at"][:10] for record in records} == {str(NOW.date())}


async def release(medstream: Medstream, nid: str) -> None:
    """What the notifier's timer does once a deferred record is due."""
    async with feeding(medstream, "release-deferred-notifications") as feed:
        topic = medstream.settings.topic_name("medstream-notification-releases")
        await feed.put(topic, command("release", nid))
    async with asyncio.timeout(5):
        await asyncio.gather(*medstream.notifier.running.values())


@pytest.mark.parametrize("contact_arrives", [True, False], ids=["arrives", "never"])
async def test_an_alert_before_any_contact_waits_for_one(
    medstream: Medstream, emitted: Emitted, contact_arrives: bool
) -> None:
    # The contact and the prescription come on different topics: an alert can reach the
    # notifier before the contact its patient's onboarding published at the same time.
    await notify(medstream, refill_alert(1))
    assert outcomes(emitted) == []
    waiting = notification_id("refill-1", NO_CHANNEL)
    record = medstream.notifier.ledger[waiting]
    assert record["status"] == LedgerStatus.DEFERRED.value
    wait = timedelta(seconds=medstream.settings.notify_contact_wait_seconds)
    assert record["deferred_until"] == (NOW + wait).isoformat().replace("+00:00", "Z")
    assert medstream.notifier._deferred == [(NOW + wait, "p1", waiting)]

    if contact_arrives:
        await set_contact(medstream, "c1", "patient")
    await release(medstream, waiting)
    if contact_arrives:
        assert outcomes(emitted) == [("console#0", "delivered", None)]
        assert waiting not in medstream.notifier.ledger
    else:
        assert outcomes(emitted) == [
            ("none", "suppressed", "no contact channel for this notification")
        ]
        assert medstream.notifier.ledger[waiting]["status"] == LedgerStatus.SUPPRESSED.value

    # The release again, and the alert again: nothing more.
    await release(medstream, waiting)
    await notify(medstream, refill_alert(1))
    assert len(outcomes(emitted)) == 1


async def test_a_worker_not_ready_for_its_tables_holds_the_event_instead_of_dead_lettering(
    medstream: Medstream, emitted: Emitted, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A broker still loading after a restart answers the restore's end-offset requests with
    # errors for a while. The events are fine: they wait, and are handled once it passes.
    monkeypatch.setattr(emitter, "SEND_RETRY_FIRST", 0.01)
    ledger = medstream.notifier.ledger
    restore = ledger.restore
    refusals = 3

    async def not_ready_yet(partitions: Collection[int]) -> int:
        nonlocal refusals
        if refusals:
            refusals -= 1
            raise KafkaConnectionError("the changelog's leader is not available yet")
        return await restore(partitions)

    monkeypatch.setattr(ledger, "restore", not_ready_yet)
    await set_contact(medstream, "c1", "patient")
    await notify(medstream, refill_alert(1))
    assert refusals == 0
    assert outcomes(emitted) == [("console#0", "delivered", None)]
    assert not of_type(emitted, DeadLetter)
    assert medstream.stats.dead_lettered == {}


@pytest.mark.parametrize("targets", [("patient",), ()], ids=["delivery", "suppression"])
async def test_nothing_is_delivered_or_published_before_the_ledger_is_acknowledged(
    medstream: Medstream,
    emitted: Emitted,
    monkeypatch: pytest.MonkeyPatch,
    targets: tuple[str, ...],
) -> None:
    # The adapter's durability order: the decision's ledger records first, acknowledged by
    # the changelog; only then a delivery task or a published suppression.
    notifier = medstream.notifier
    changelog = notifier.ledger.changelog
    append = changelog.append
    at_acknowledgement: list[tuple[list[str], list[str], int]] = []

    async def acknowledging(changes: Mapping[int, Changes]) -> dict[int, int]:
        reached = await append(changes)
        statuses = sorted(record["status"] for record in notifier.ledger.values())
        at_acknowledgement.append((statuses, list(notifier.running), len(outcomes(emitted))))
        return reached

    monkeypatch.setattr(changelog, "append", acknowledging)
    await set_contact(medstream, "c1", *targets)
    await notify(medstream, refill_alert(1))
    final = "in_flight" if targets else "suppressed"
    assert at_acknowledgement == [(sorted(["decided", final]), [], 0)]
    assert [status for _channel, status, _error in outcomes(emitted)] == [
        "delivered" if targets else "suppressed"
    ]
