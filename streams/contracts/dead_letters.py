"""Building the DeadLetter event for a record that failed, with its reason and nothing lost."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from streams.contracts.models import DeadLetter, RecordHeader

_MAX_MESSAGE = 1000
_MAX_ID = 200  # the longest event_id the contract allows


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _header_pairs(headers: Any) -> Iterable[tuple[str, bytes | None]]:
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


def _key_text(key: bytes | None) -> str:
    if not key:
        return ""
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return ""
    return text if len(text) <= 200 else ""


def dead_letter_id(topic: str, partition: int, offset: int) -> str:
    """The deterministic event_id of the dead letter of one record.

    Kafka allows topic names of up to 249 characters: an id that would exceed the contract's
    limit names the topic by a digest instead.
    """
    event_id = f"dead-letter:{topic}:{partition}:{offset}"
    if len(event_id) <= _MAX_ID:
        return event_id
    digest = hashlib.blake2b(topic.encode("utf-8"), digest_size=16).hexdigest()
    return f"dead-letter:{digest}:{partition}:{offset}"


def build_dead_letter(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Any,
    error_type: str,
    error_message: str,
    failed_at: datetime,
) -> DeadLetter:
    """The DeadLetter for one record; its id is deterministic in (topic, partition, offset).

    ``error_message`` must already be free of payload data (ContractError messages are).
    """
    return DeadLetter(
        event_id=dead_letter_id(topic, partition, offset),
        patient_id=_key_text(key),
        occurred_at=failed_at,
        original_topic=topic,
        partition=partition,
        offset=offset,
        key=_b64(key),
        value=_b64(value),
        headers=[
            RecordHeader(
                key=str(name),
                value=_b64(item.encode() if isinstance(item, str) else item),
            )
            for name, item in _header_pairs(headers)
        ],
        error_type=error_type,
        error_message=error_message[:_MAX_MESSAGE] or "unknown error",
        failed_at=failed_at,
    )


def original_record(dead_letter: DeadLetter) -> tuple[bytes | None, bytes | None, list[Any]]:
    """Key, value and headers of the failed record, as they were (for replay after a fix)."""
    key = None if dead_letter.key is None else base64.b64decode(dead_letter.key)
    value = None if dead_letter.value is None else base64.b64decode(dead_letter.value)
    headers = [
        (h.key, None if h.value is None else base64.b64decode(h.value)) for h in dead_letter.headers
    ]
    return key, value, headers
