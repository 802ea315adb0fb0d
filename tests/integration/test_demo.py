"""`medstream demo` end to end against the real broker: events in, alerts and deliveries out."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_the_demo_shows_alerts_warnings_and_deliveries(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streams", "demo", "--duration", "30"],
        cwd=tmp_path,  # the demo keeps its worker's data and log under ./var
        env={**os.environ, "MEDSTREAM_BOOTSTRAP_SERVERS": kafka_bootstrap},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "in  → medication-events     MedicationPrescribed" in out
    assert "RefillAlert" in out
    assert '"severity": "major"' in out
    assert '"status": "delivered"' in out
    assert "sent  [medstream → patient] Interaction warning (major)" in out
    assert "worker stopped (the broker was already running and is left running)" in out
