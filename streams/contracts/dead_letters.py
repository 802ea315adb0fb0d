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
# What of a failed record a dead letter keeps whole. With the value's own bound (a setting,
# default 512 KiB), base64's third more and the envelope, a dead letter stays below the
# broker's default message.max.bytes (1 MiB).
DEFAULT_MAX_VALUE_BYTES = 512 * 1024
MAX_KEY_BYTES = 4096
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADER_NAME = 256


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


def _cut(data: bytes | None, limit: int) -> tuple[bytes | None, bool]:
    if data is None or len(data) <= limit:
        return data, False
    return data[:limit], True


def _kept_headers(headers: Any) -> tuple[list[RecordHeader], bool]:
    """The headers that fit the budget, in order; True when any had to be left out or cut."""
    kept: list[RecordHeader] = []
    budget = MAX_HEADER_BYTES
    cut = False
    for name, item in _header_pairs(headers):
        raw = item.encode() if isinstance(item, str) else item
        name_text = str(name)[:MAX_HEADER_NAME]
        size = len(name_text) + (len(raw) if raw else 0)
        if size > budget or len(name_text) < len(str(name)):
            cut = True
            if size > budget:
                continue
        budget -= size
        kept.append(RecordHeader(key=name_text, value=_b64(raw)))
    return kept, cut


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
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
) -> DeadLetter:
    """The DeadLetter for one record; its id is deterministic in (topic, partition, offset).

    ``error_message`` must already be free of payload data (ContractError messages are).
    A value longer than ``max_value_bytes`` (and an oversized key or headers) is cut, and the
    dead letter says so, so that it always fits the broker's record limit: base64 makes
    a value a third longer, and a record refused by the broker would stop the partition.
    """
    kept_key, key_cut = _cut(key, MAX_KEY_BYTES)
    kept_value, value_cut = _cut(value, max_value_bytes)
    kept_headers, headers_cut = _kept_headers(headers)
    return DeadLetter(
        event_id=dead_letter_id(topic, partition, offset),
        patient_id=_key_text(key),
        occurred_at=failed_at,
        original_topic=topic,
        partition=partition,
        offset=offset,
        key=_b64(kept_key),
        value=_b64(kept_value),
        headers=kept_headers,
        error_type=error_type,
        error_message=error_message[:_MAX_MESSAGE] or "unknown error",
        failed_at=failed_at,
        truncated=key_cut or value_cut or headers_cut,
        value_length=None if value is None else len(value),
        value_sha256=None if value is None else hashlib.sha256(value).hexdigest(),
    )


def original_record(dead_letter: DeadLetter) -> tuple[bytes | None, bytes | None, list[Any]]:
    """Key, value and headers of the failed record as the dead letter keeps them (for replay
    after a fix). When ``truncated`` they were cut: the whole record is the one at the original
    topic, partition and offset."""
    key = None if dead_letter.key is None else base64.b64decode(dead_letter.key)
    value = None if dead_letter.value is None else base64.b64decode(dead_letter.value)
    headers = [
        (h.key, None if h.value is None else base64.b64decode(h.value)) for h in dead_letter.headers
    ]
    return key, value, headers
