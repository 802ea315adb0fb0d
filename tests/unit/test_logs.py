"""JSON log lines and the redaction of contact data and secrets."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from streams.observability.logs import (
    JsonFormatter,
    RedactionFilter,
    configure_logging,
    json_log_handler,
    redact,
)


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactionFilter())
    logger = logging.getLogger("medstream.test.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_one_json_object_per_line_with_time_level_logger_message_and_extras(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.info("processed %s events", 3, extra={"topic": "medication-events", "partition": 1})
    logger.warning("second line")
    first, second = lines(stream)
    assert first["level"] == "info"
    assert first["logger"] == "medstream.test.logs"
    assert first["message"] == "processed 3 events"
    assert first["topic"] == "medication-events"
    assert first["partition"] == 1
    assert isinstance(first["time"], str)
    assert first["time"].endswith("+00:00")
    assert "T" in first["time"]
    assert second["level"] == "warning"


def test_exception_text_is_included_and_redacted(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    try:
        raise ValueError("cannot reach jane.doe@example.org")
    except ValueError:
        logger.exception("delivery failed")
    (entry,) = lines(stream)
    assert "ValueError" in str(entry["exception"])
    assert "jane.doe@example.org" not in stream.getvalue()


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("send to jane.doe@example.org now", "jane.doe@example.org"),
        ("mailto:ops+alerts@clinic.example.co.uk", "ops+alerts@clinic.example.co.uk"),
        ("call +1 555 123 4567", "555 123 4567"),
        ("call +15551234567.", "+15551234567"),
        ("sms +44 20 7946 0958 failed", "7946 0958"),
        ("call (555) 123-4567 today", "123-4567"),
        ("call 555-123-4567 today", "555-123-4567"),
        ("call 555.123.4567", "555.123.4567"),
        ("uk 020 7946 0958", "7946 0958"),
        ("POST https://hooks.example.com/x?token=s3cr3t&a=1 failed", "s3cr3t"),
        ("GET https://user:pa55word@hooks.example.com/path", "pa55word"),
        ("smtp://mailer:hunter2@smtp.example.com:587", "hunter2"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc-_", "eyJhbGci"),
        ("header bearer abc.def.ghi", "abc.def.ghi"),
        ("api_key=AKIA1234567890 used", "AKIA1234567890"),
        ("password: hunter2", "hunter2"),
    ],
)
def test_contact_data_and_secrets_are_masked(text: str, secret: str) -> None:
    assert secret not in redact(text)


@pytest.mark.parametrize(
    "text",
    [
        "at 2026-11-29T20:06:06+00:00 ok",
        "at 2026-11-29T20:06:06.123456Z ok",
        "on 2026-11-29 20:06:06 ok",
        "event_id=rem-5da6e25a906c1a0239936dd0 processed",
        "dose 2430.0 mg",
        "offset 1234567890 partition 3",
        "topic=t1234.medication-events partition=0 offset=42",
        "took 0.0123s for 15 events",
        "uuid 550e8400-e29b-41d4-a716-446655440000",
        "https://hooks.example.com/path delivered",
        "the token refreshed after 30 s",
    ],
)
def test_no_false_positives(text: str) -> None:
    assert redact(text) == text


def test_args_and_extra_fields_are_redacted_before_formatting(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.info(
        "delivery to %s via %s",
        "jane.doe@example.org",
        "+1 555 123 4567",
        extra={"target": "https://x.example/hook?sig=abc", "attempts": 2},
    )
    text = stream.getvalue()
    assert "jane.doe@example.org" not in text
    assert "555 123 4567" not in text
    assert "sig=abc" not in text
    (entry,) = lines(stream)
    assert entry["message"] == "delivery to [EMAIL] via [PHONE]"
    assert entry["attempts"] == 2


def test_configure_logging_installs_the_json_handler_on_the_root_logger() -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    try:
        configure_logging("warning")
        assert root.level == logging.WARNING
        (handler,) = root.handlers
        assert isinstance(handler.formatter, JsonFormatter)
        assert any(isinstance(f, RedactionFilter) for f in handler.filters)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)


def test_json_log_handler_writes_redacted_json(capsys: pytest.CaptureFixture[str]) -> None:
    handler = json_log_handler()
    record = logging.LogRecord(
        "medstream.x", logging.ERROR, __file__, 1, "to %s", ("a@b.example",), None
    )
    handler.handle(record)
    err = capsys.readouterr().err
    entry = json.loads(err.strip())
    assert entry["message"] == "to [EMAIL]"
    assert entry["level"] == "error"
