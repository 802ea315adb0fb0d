"""Deterministic event ids of mapped FHIR resources: same resource, same ids; changed, new ids."""

from __future__ import annotations

import hashlib
import json
from typing import Any

EVENT_ID_PREFIX = "fhir-"
# 32 hex digits (128 bits) of SHA-256: no collision among any realistic number of events.
_DIGITS = 32


def canonical_json(value: Any) -> bytes:
    """One byte form per JSON value: sorted keys, no spaces, UTF-8."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    ).encode()


def resource_identity(
    resource_type: str, logical_id: str | None, full_url: str | None, raw: dict[str, Any]
) -> str:
    """What names a resource: type and logical id, else its Bundle fullUrl, else its content."""
    if logical_id:
        return f"{resource_type}/{logical_id}"
    if full_url:
        return full_url
    return "sha256:" + hashlib.sha256(canonical_json(raw)).hexdigest()


def event_id(identity: str, role: str, content: dict[str, Any]) -> str:
    """``fhir-`` and 32 hex digits of SHA-256 over the identity, the event's role and a hash of
    the mapped content (everything but the id), so a changed status or dose gives a new id."""
    content_hash = hashlib.sha256(canonical_json(content)).hexdigest()
    digest = hashlib.sha256(f"{identity}\n{role}\n{content_hash}".encode()).hexdigest()
    return EVENT_ID_PREFIX + digest[:_DIGITS]
