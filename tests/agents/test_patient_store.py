"""Agent tests of the patient store: one write per patient per batch, and the outbox."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from typing import Any

import faust
import pytest

from streams.app import Medstream
from streams.contracts.models import Event, RefillAlert
from streams.domain.dedup import SeenEvents
from streams.domain.patient import PatientState
from streams.state.stores import Changes
from tests.agents.harness import NOW, Emitted, encoded, event, feeding, prescribed

ALERT = RefillAlert(
    event_id="alert-1",
    patient_id="p1",
    occurred_at=NOW,
    alert_id="alert-1",
    medication_id="m1",
    medication_name="Metformin",
    reason="OUT_OF_SUPPLY",
    supply_quantity=0,
    refills_remaining=0,
)


async def test_a_batch_writes_each_patient_once(
    medstream: Medstream, emitted: Emitted, writes: Counter[str]
) -> None:
    store = medstream.patients.store
    for count in range(1, 6):
        store.stage("p1", PatientState(partition=2), seen=SeenEvents({f"e{count}": count}))
        # Later events of the batch see what the earlier ones staged.
        assert store.seen("p1").entries == {f"e{count}": count}
    assert writes == {}
    await store.write_back()
    assert writes == {"p1": 1}
    assert store.seen("p1").entries == {"e5": 5}
    assert emitted == []


async def test_outputs_are_sent_after_their_record_is_written_and_leave_its_outbox(
    medstream: Medstream, emitted: Emitted, writes: Counter[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = medstream.patients.store
    emit = store.emitter.emit
    outbox_when_sent: list[Any] = []

    async def checking(topic: faust.TopicT, event: Any, **kwargs: Any) -> Any:
        outbox_when_sent.append(store.table.get("p1").get("outbox"))
        return await emit(topic, event, **kwargs)

    monkeypatch.setattr(store.emitter, "emit", checking)
    store.stage("p1", PatientState(partition=1), outputs=[ALERT])
    await store.write_back()

    assert [(topic, sent.event_id) for topic, sent in emitted] == [("refill-alerts", "alert-1")]
    # Written with the alert in its outbox before it was sent; written again once acknowledged.
    assert outbox_when_sent == [[ALERT.model_dump(mode="json")]]
    assert writes == {"p1": 2}
    assert "outbox" not in store.table.get("p1")


async def test_an_outbox_left_by_a_crash_is_sent_again_for_its_partitions(
    medstream: Medstream, emitted: Emitted
) -> None:
    store = medstream.patients.store
    # What a worker killed between writing the record and the alert's acknowledgement left.
    store.table.set("p1", {"partition": 3, "outbox": [ALERT.model_dump(mode="json")]}, 3)

    unsent: list[Event] = []
    assert list(store.patients_of({0, 1}, unsent)) == []
    assert unsent == []
    assert list(store.patients_of({3}, unsent)) == [("p1", PatientState(partition=3))]
    assert unsent == [ALERT]
    await store.send_again(unsent)
    assert [(topic, sent) for topic, sent in emitted] == [("refill-alerts", ALERT)]


async def test_an_outbox_left_by_a_crash_goes_with_the_next_write_of_its_patient(
    medstream: Medstream, emitted: Emitted
) -> None:
    # The replacement of a killed worker may handle the patient's next event before its
    # timer's first tick reads the outboxes: that write replaces the record, so the outputs
    # left in it must go with it, not vanish.
    store = medstream.patients.store
    async with feeding(medstream, "apply-patient-events") as feed:
        await feed.put(
            "medication-events", encoded(prescribed("e1", "m1", "Metformin")), partition=3
        )
    record = store.table.get("p1")
    store.table.set("p1", {**record, "outbox": [ALERT.model_dump(mode="json")]}, 3)
    await store.table.flush()
    store._read.clear()
    emitted.clear()
    async with feeding(medstream, "apply-patient-events") as feed:
        await feed.put(
            "medication-events", encoded(event("DoseTaken", "e2", medication_id="m1")), partition=3
        )
    assert [sent for _topic, sent in emitted if sent == ALERT] == [ALERT]
    assert "outbox" not in store.table.get("p1")


async def test_written_records_are_read_back_from_memory_up_to_the_cache_size(
    medstream: Medstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = medstream.patients.store
    store.cached_patients = 2
    for patient in ("p1", "p2", "p3"):
        store.stage(patient, PatientState(partition=1), seen=SeenEvents({f"e-{patient}": 1}))
    await store.write_back()
    table_reads: list[str] = []
    get = store.table.get

    def counting(key: str, *args: Any) -> Any:
        table_reads.append(key)
        return get(key, *args)

    monkeypatch.setattr(store.table, "get", counting)
    # The two written last are parsed in memory; the first was forgotten, and is read again.
    assert store.seen("p2").entries == {"e-p2": 1}
    assert store.seen("p3").entries == {"e-p3": 1}
    assert table_reads == []
    assert store.seen("p1").entries == {"e-p1": 1}
    assert table_reads == ["p1"]


async def test_a_record_staged_while_its_last_write_is_in_flight_leaves_those_outputs_to_it(
    medstream: Medstream, emitted: Emitted, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another agent of the worker (the reminder recorder) may stage the patient while a
    # write-back is waiting for the changelog: the outputs of that write-back are its own to
    # send, and must not be taken up by the newer record and sent a second time.
    store = medstream.patients.store
    changelog = store.table.changelog
    append = changelog.append
    appending, release = asyncio.Event(), asyncio.Event()

    async def held(changes: Mapping[int, Changes]) -> dict[int, int]:
        appending.set()
        await release.wait()
        return await append(changes)

    monkeypatch.setattr(changelog, "append", held)
    store.stage("p1", PatientState(partition=1), seen=SeenEvents({"e1": 1}), outputs=[ALERT])
    writing = asyncio.ensure_future(store.write_back())
    await appending.wait()
    # The newer record sees what is being written: its seen ids, without its outbox.
    assert store.seen("p1").entries == {"e1": 1}
    store.stage("p1", PatientState(partition=1), seen=SeenEvents({"e1": 1, "e2": 2}))
    monkeypatch.setattr(changelog, "append", append)
    release.set()
    await writing
    await store.write_back()

    assert [sent for _topic, sent in emitted] == [ALERT]
    assert store.table.get("p1") == {"partition": 1, "seen_events": {"e1": 1, "e2": 2}}
