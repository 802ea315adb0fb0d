"""The worker's /health, /ready and /metrics pages on the real app, real broker."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import psutil  # type: ignore[import-untyped]  # no type stubs in the environment
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.app import create_app
from streams.observability.metrics import Metrics
from streams.observability.web import default_readiness, install_web
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.kafka_helpers import produce, running

pytestmark = pytest.mark.integration

FAMILIES = {
    "medstream_events_consumed",
    "medstream_events_produced",
    "medstream_dead_letters",
    "medstream_duplicates",
    "medstream_processing_seconds",
    "medstream_deliveries",
    "medstream_consumer_lag",
    "medstream_table_entries",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def prescribed(patient_id: str) -> dict[str, Any]:
    return {
        "event_id": f"{patient_id}-1",
        "event_type": "MedicationPrescribed",
        "patient_id": patient_id,
        "occurred_at": datetime.now(UTC).isoformat(),
        "medication_id": "m1",
        "name": "Metformin 500 mg tablet",
        "dose_quantity": 1,
        "dose_unit": "tablet",
        "supply_quantity": 100,
        "refills_remaining": 3,
    }


async def wait_for(condition: Callable[[], Any], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.2)


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_health_ready_and_metrics_of_the_running_app(settings: Settings) -> None:
    port = free_port()
    settings = settings.model_copy(update={"web_enabled": True, "web_port": port})
    await ensure_topics(settings)
    medstream = create_app(settings)
    metrics = Metrics()
    tables = {table.name: table for table in medstream.restorer.tables}
    assert "state-by-patient" in tables
    readiness = default_readiness(medstream.app, medstream.restorer)
    assert readiness()[0] is False
    install_web(medstream.app, metrics, readiness, tables)
    base = f"http://127.0.0.1:{port}"
    input_topic = settings.topic_name("medication-events")
    patients = [f"p-web-{n}" for n in range(20)]  # surely on both partitions

    async with running(medstream), aiohttp.ClientSession() as http:
        async with http.get(f"{base}/health") as response:
            assert response.status == 200
            assert await response.json() == {"status": "alive"}

        async def ready() -> bool:
            async with http.get(f"{base}/ready") as response:
                body = await response.json()
                assert response.status in (200, 503)
                assert (response.status == 200) is (body["status"] == "ready"), body
                return response.status == 200

        await wait_for(ready)

        async with http.get(f"{base}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            families = {
                family.name for family in text_string_to_metric_families(await response.text())
            }
        assert families >= FAMILIES
        async with http.get(f"{base}/metrics") as response:
            before = parse(await response.text())
        assert before[("medstream_table_entries", (("table", "state-by-patient"),))] == 0

        await produce(
            settings,
            input_topic,
            [(p.encode(), json.dumps(prescribed(p)).encode()) for p in patients],
        )

        latest: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

        async def reflected() -> bool:
            nonlocal latest
            async with http.get(f"{base}/metrics") as response:
                latest = parse(await response.text())
            lags = {
                labels: value
                for (name, labels), value in latest.items()
                if name == "medstream_consumer_lag" and ("topic", input_topic) in labels
            }
            # Every partition of the input topic has a lag series (its high watermark is
            # known from a fetch) and the worker has committed everything it was sent.
            return (
                latest.get(("medstream_table_entries", (("table", "state-by-patient"),)))
                == len(patients)
                and len(lags) == settings.topic_partitions
                and all(value == 0 for value in lags.values())
            )

        await wait_for(reflected)
        assert medstream.stats.consumed[input_topic] == len(patients)


def listening_addresses(port: int) -> set[str]:
    """The local addresses this process listens on at ``port`` (TCP, IPv4 and IPv6)."""
    return {
        connection.laddr.ip
        for connection in psutil.Process().net_connections(kind="inet")
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port
    }


async def test_the_web_server_listens_on_web_host_only_and_serves_no_faust_page(
    settings: Settings,
) -> None:
    port = free_port()
    # Not 127.0.0.1 (Faust's web_host default is the machine's name, its bind 0.0.0.0): a
    # listener on this address can only come from the setting.
    host = "127.0.0.2"
    settings = settings.model_copy(update={"web_enabled": True, "web_port": port, "web_host": host})
    await ensure_topics(settings)
    medstream = create_app(settings)
    base = f"http://{host}:{port}"
    timeout = aiohttp.ClientTimeout(total=15)
    async with running(medstream), aiohttp.ClientSession(timeout=timeout) as http:
        assert listening_addresses(port) == {host}
        with pytest.raises(aiohttp.ClientConnectionError):
            async with http.get(f"http://127.0.0.1:{port}/health"):
                pass

        async def ready() -> bool:
            async with http.get(f"{base}/ready") as response:
                return response.status == 200

        await wait_for(ready, timeout=60)
        async with http.get(f"{base}/health") as response:
            assert response.status == 200
        async with http.get(f"{base}/metrics") as response:
            assert response.status == 200
            assert "medstream_events_consumed" in await response.text()
        for path in (
            "/table/",
            "/table/state-by-patient/",
            "/table/state-by-patient/p-web-1/",
            "/router/",
            "/router/topics",
            "/router/state-by-patient/",
            "/router/state-by-patient/p-web-1/",
            "/stats/",
            "/stats/assignment/",
            "/graph/",
            "/metrics/",
        ):
            async with http.get(f"{base}{path}") as response:
                assert response.status == 404, path
