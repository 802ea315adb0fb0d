"""Fixtures shared by every tier of tests: settings and, for integration tests, a real broker."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.local_kafka import LocalKafka
from streams.settings import Settings

# The test broker gets its own ports so that it never collides with the demo's on 9092.
TEST_BROKER_PORT = int(os.environ.get("MEDSTREAM_TEST_BROKER_PORT", "19092"))


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Kafka broker: KAFKA_BOOTSTRAP_SERVERS when set, else one this session starts."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    settings = Settings(
        broker_port=TEST_BROKER_PORT,
        broker_controller_port=TEST_BROKER_PORT + 1,
        broker_data_dir=tmp_path_factory.mktemp("kafka"),
        broker_heap="512m",
    )
    broker = LocalKafka.from_settings(settings)
    broker.start()
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


@pytest.fixture
def unique_id() -> str:
    """A short id that makes topic names and consumer groups fresh for one test."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(kafka_bootstrap: str, unique_id: str, tmp_path: Path) -> Settings:
    """Settings for one integration test: fresh topics and consumer group, RocksDB tables."""
    return Settings(
        bootstrap_servers=kafka_bootstrap,
        app_id=f"medstream-{unique_id}",
        topic_prefix=f"{unique_id}.",
        topic_partitions=2,
        store_url="rocksdb://",
        data_dir=tmp_path / "worker",
        web_enabled=False,
    )
