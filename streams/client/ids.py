"""The pure parts of the client: deterministic event ids and the bounded de-duplication window."""

from __future__ import annotations

from collections import OrderedDict

from streams.domain.patient import stable_id

# How many event_ids a Subscriber remembers by default (about 1 MB of memory).
DEFAULT_DEDUP_WINDOW = 10_000


def client_event_id(event_type: str, patient_id: str, key: str) -> str:
    """The event_id of the fact ``key`` reports: the same (type, patient, key) gives the same id
    in every process, so a retried call publishes a repeat the worker drops."""
    if not key:
        raise ValueError("key: must be a non-empty string (your system's id for the fact)")
    return stable_id(event_type, event_type, patient_id, key)


class RecentIds:
    """The ``capacity`` most recently seen event_ids; the oldest is forgotten first."""

    def __init__(self, capacity: int = DEFAULT_DEDUP_WINDOW) -> None:
        if capacity < 1:
            raise ValueError("capacity: must be at least 1")
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, event_id: str) -> bool:
        """Remember an id; False when it was already remembered (a duplicate)."""
        if event_id in self._ids:
            self._ids.move_to_end(event_id)
            return False
        self._ids[event_id] = None
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return True
