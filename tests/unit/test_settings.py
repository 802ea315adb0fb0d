"""Settings come from MEDSTREAM_* variables, are validated, frozen, and hide secrets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from streams.settings import SecurityProtocol, Settings


def test_defaults_need_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in [name for name in os.environ if name.startswith("MEDSTREAM_")]:
        monkeypatch.delenv(variable)
    settings = Settings()
    assert settings.bootstrap_servers == "127.0.0.1:9092"
    assert settings.topic_name("refill-alerts") == "refill-alerts"


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDSTREAM_BOOTSTRAP_SERVERS", "a:1, b:2")
    monkeypatch.setenv("MEDSTREAM_TOPIC_PREFIX", "prod.")
    monkeypatch.setenv("MEDSTREAM_TOPIC_PARTITIONS", "12")
    monkeypatch.setenv("MEDSTREAM_BROKER_DATA_DIR", "/srv/kafka")
    monkeypatch.setenv("MEDSTREAM_SECURITY_PROTOCOL", "SASL_SSL")
    settings = Settings()
    assert settings.bootstrap_server_list == ["a:1", "b:2"]
    assert settings.topic_name("dead-letters") == "prod.dead-letters"
    assert settings.topic_partitions == 12
    assert settings.broker_data_dir == Path("/srv/kafka")
    assert settings.security_protocol is SecurityProtocol.SASL_SSL


def test_explicit_values_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDSTREAM_WEB_PORT", "7000")
    assert Settings(web_port=7100).web_port == 7100


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("bootstrap_servers", "no-port"),
        ("topic_partitions", 0),
        ("log_level", "chatty"),
        ("web_port", 70000),
        ("security_protocol", "TELNET"),
    ],
)
def test_invalid_values_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: value})


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(bootstrap="x:1")  # type: ignore[call-arg]


def test_settings_are_frozen_and_the_password_is_masked() -> None:
    settings = Settings(sasl_password="hunter2")
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.model_dump())
    with pytest.raises(ValidationError):
        settings.web_port = 1  # type: ignore[misc]


def test_settings_as_environment_variables_give_the_same_settings_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings(
        topic_partitions=3,
        web_enabled=False,
        security_protocol=SecurityProtocol.SASL_SSL,
        sasl_password="hunter2",
        interactions_ddinter_csv=Path("/data/ddinter.csv"),
        batch_window_ms=2.5,
    )
    variables = settings.environment()
    assert variables["MEDSTREAM_WEB_ENABLED"] == "false"
    assert variables["MEDSTREAM_SASL_PASSWORD"] == "hunter2"
    assert "MEDSTREAM_SCHEMA_REGISTRY_URL" not in variables  # None: left unset
    for variable in os.environ:
        if variable.startswith("MEDSTREAM_"):
            monkeypatch.delenv(variable)
    for variable, value in variables.items():
        monkeypatch.setenv(variable, value)
    assert Settings() == settings
