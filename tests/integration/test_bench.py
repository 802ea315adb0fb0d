"""The benchmark runner, shrunk, against the real broker: it must never rot (figures unchecked)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# The peer needs the optional `peer` extra, which CI's `.[dev]` does not install.
QUIX = importlib.util.find_spec("quixstreams") is not None

EXPECTED = {
    "baseline": {"pass-through"},
    "faust-floor": {"bare agent, JSON decode only", "bare agent + 2 table reads and writes"},
    "pipeline": {"throughput", "events", "alerts delivered", "dead-lettered"},
    "latency": {"p50 at 20 events/s", "offered rate", "p50", "p95", "p99", "max", "outcomes"},
    "punctuality": {"p50 lateness", "p99 lateness", "max lateness", "reminders"},
    "codecs": {"JSON decode+validate+encode", "Avro decode+validate+encode"},
    "memory": {
        "RSS at start (empty tables)",
        "RSS at soak start",
        "RSS at soak end",
        "RSS growth over the soak",
    },
    "recovery": {
        "start to ready, from the changelog alone",
        "start to ready, from local RocksDB",
    },
    "many-medications": {
        "pure: next prescription, 1 medication",
        "pure: next prescription, 10 medications",
        "pure: next prescription, 100 medications",
        "worker: alert behind 1 prescription",
        "worker: 100 prescriptions processed",
        "worker: alert behind 100 prescriptions",
    },
    "scale-out": {"1 worker", "2 workers", "2 workers / 1 worker"},
    "fhir-intake": {
        "throughput",
        "FHIR records / pipeline events",
        "records",
        "alerts delivered",
        "dead-lettered",
        "map a Bundle (Patient + MedicationRequest)",
        "map a MedicationAdministration",
    },
}
QUIX_EXPECTED = {
    "at-least-once throughput",
    "exactly-once throughput",
    "medstream / peer, at-least-once",
    "medstream / peer, exactly-once",
    "medstream pipeline / baseline",
}


# Every benchmark at 0.05: about two minutes here, more on a busy machine.
@pytest.mark.timeout(420)
def test_the_quick_run_produces_every_figure(kafka_bootstrap: str, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--scale",
            "0.05",
            "--bootstrap-servers",
            kafka_bootstrap,
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["mode"] == "quick"
    assert results["errors"] == {}
    assert {"cpu_model", "cpu_count", "ram_bytes", "python", "faust_streaming", "aiokafka"} <= set(
        results["machine"]
    )
    measured: dict[str, set[str]] = {}
    for figure in results["figures"]:
        assert figure["unit"], figure
        if figure["value"] is not None:
            measured.setdefault(figure["benchmark"], set()).add(figure["name"])
    for benchmark, names in EXPECTED.items():
        assert names <= measured.get(benchmark, set()), benchmark
    assert {t["name"] for t in results["targets"]} == {
        "throughput",
        "p99",
        "p99 lateness",
        "RSS growth over the soak",
        "2 workers / 1 worker",
    } | ({"medstream / peer, at-least-once", "medstream pipeline / baseline"} if QUIX else set())
    if QUIX:
        assert measured.get("quix-peer", set()) >= QUIX_EXPECTED
    else:
        assert any("quixstreams is not installed" in line for line in results["notes"]["quix-peer"])
