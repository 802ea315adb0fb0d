"""Structured JSON logs, with patient contact data and secrets masked before formatting."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "JsonFormatter",
    "RedactionFilter",
    "configure_logging",
    "json_log_handler",
    "logging_config",
    "redact",
]

# The attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
) | {"message", "asctime", "taskName"}

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
_BEARER = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9\-._~+/]+=*")
# key=value / key: value secrets, e.g. "token=abc", "api_key: abc", "password=abc".
_SECRET_PAIR = re.compile(
    r"(?i)\b((?:access_|refresh_|auth_|api_|id_)?token|api_?key|password|passwd|secret)"
    r"(\s*[=:]\s*)[^\s&,;]+"
)
# A URL whose user-info carries credentials, or that has a query string (tokens live there).
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/@:]+(?::[^\s/@]*)?@")
_URL_QUERY = re.compile(r"(?i)(\b[a-z][a-z0-9+.\-]*://[^\s?#]+)\?[^\s#]*")
# Phone numbers: +E.164 (8-15 digits, separators allowed), or national formats with
# separators like (555) 123-4567, 555-123-4567, 020 7946 0958. ISO timestamps, decimals
# and hex ids do not match: a phone needs a leading + or a separator pattern of phone
# groups, and must not touch letters, digits, dots, colons or dashes of a longer token.
_PHONE = re.compile(
    r"(?<![\w.:\-+])"
    r"(?:"
    r"\+\d[\d\s().\-]{6,18}\d"  # +CC ... (E.164 with optional separators)
    r"|\(\d{2,5}\)\s?\d{3,4}[\s.\-]?\d{3,4}"  # (555) 123-4567
    r"|0\d{2,4}[\s.\-]\d{3,4}[\s.\-]?\d{3,4}"  # 020 7946 0958
    r"|\d{3}[\s.\-]\d{3}[\s.\-]\d{4}"  # 555-123-4567
    r")"
    r"(?![\w:\-]|\.\d)"
)


def redact(text: str) -> str:
    """Mask e-mail addresses, phone numbers, URL credentials and queries, and bearer tokens."""
    text = _URL_CREDENTIALS.sub(r"\1[REDACTED]@", text)
    text = _URL_QUERY.sub(r"\1?[REDACTED]", text)
    text = _EMAIL.sub("[EMAIL]", text)
    text = _BEARER.sub(lambda match: f"{match.group(1)}{match.group(2)}[REDACTED]", text)
    text = _SECRET_PAIR.sub(lambda match: f"{match.group(1)}{match.group(2)}[REDACTED]", text)
    return _PHONE.sub("[PHONE]", text)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, dict):
        return {key: _redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(item) for item in value)
    # Any other object is rendered now, so its text is masked too.
    return redact(str(value))


class RedactionFilter(logging.Filter):
    """Masks contact data and secrets in a record's message, args and extra fields.

    The message is merged with its args first, so a value can never slip through as a
    ``%s`` argument; exception text is masked by the formatter.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what can be shown
            message = f"{record.msg} {record.args}"
        record.msg = redact(message)
        record.args = None
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD_ATTRIBUTES:
                setattr(record, key, _redact_value(value))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO-8601 UTC), level, logger, message, extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRIBUTES and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(entry, default=lambda value: redact(str(value)), ensure_ascii=False)


def json_log_handler() -> logging.Handler:
    """A stderr handler that redacts and writes JSON lines (for ``faust.Worker(loghandlers=)``)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactionFilter())
    return handler


def configure_logging(level: str) -> None:
    """Make the root logger write redacted JSON lines at ``level`` (e.g. "info")."""
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(json_log_handler())
    root.setLevel(level.upper())


def logging_config(level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` whose only handler writes redacted JSON lines to stderr.

    For ``faust.Worker(logging_config=...)``: mode then installs this instead of its own
    console handler (``loghandlers`` would add ours beside it, and every line came twice).
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": f"{__name__}.RedactionFilter"}},
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {
            "json": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "json",
                "filters": ["redact"],
            }
        },
        "root": {"level": level.upper(), "handlers": ["json"]},
    }
