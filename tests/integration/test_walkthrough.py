"""The runbook's walkthrough, run as a new reader would: its block of commands, as written in
docs/runbook.md, from credentials to a secured three-broker cluster with two workers, events
published as the publisher and alerts read as the downstream consumer."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from streams.settings import REPOSITORY_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

RUNBOOK = REPOSITORY_ROOT / "docs" / "runbook.md"
# Nobody else's ports: the session broker is on 19092, the security test on 49092, the
# failover cluster on 59092, the demo on 9092.
PORT = int(os.environ.get("MEDSTREAM_WALKTHROUGH_PORT", "39092"))
# What this test does not run: CI installed medstream already (the block's `make install`).
ALREADY_DONE = {"make install"}


def walkthrough_block() -> str:
    """The shell block that follows the runbook's ``<!-- walkthrough -->`` marker."""
    text = RUNBOOK.read_text()
    found = re.search(r"<!-- walkthrough -->\n```sh\n(.*?)\n```", text, re.DOTALL)
    assert found, "docs/runbook.md has no walkthrough block"
    return found.group(1)


def runnable(block: str) -> str:
    lines = [line for line in block.splitlines() if line.strip() not in ALREADY_DONE]
    return "set -euo pipefail\n" + "\n".join(lines) + "\n"


@pytest.fixture
def reader_dir(tmp_path: Path) -> Path:
    """A folder laid out like the repository's root as the block sees it (its `.venv`)."""
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    return tmp_path


def test_the_block_starts_from_make_install_and_ends_with_everything_stopped() -> None:
    lines = [line for line in walkthrough_block().splitlines() if not line.startswith("#")]
    assert lines[0] == "make install"
    assert lines[-1].startswith(".venv/bin/medstream broker stop --nodes 3 --sasl-ssl-dir")


def test_the_runbooks_walkthrough_reaches_alerts_on_a_secured_three_broker_cluster(
    reader_dir: Path,
) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MEDSTREAM_")}
    env |= {
        "MEDSTREAM_BROKER_PORT": str(PORT),
        "MEDSTREAM_BROKER_CONTROLLER_PORT": str(PORT + 1),
        "MEDSTREAM_BROKER_DATA_DIR": str(reader_dir / "var" / "kafka"),
        "MEDSTREAM_BROKER_START_TIMEOUT": "240",
    }
    script = reader_dir / "walkthrough.sh"
    script.write_text(runnable(walkthrough_block()))
    process = subprocess.Popen(
        ["bash", str(script)],
        cwd=reader_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=780)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        # Whatever the block left running (it failed half way): workers, then the brokers.
        subprocess.run(
            ["pkill", "-f", "-e", f"worker --data-dir {reader_dir}/workers"], check=False
        )
        subprocess.run(
            [
                str(reader_dir / ".venv/bin/medstream"),
                *("broker", "stop", "--nodes", "3"),
            ],
            cwd=reader_dir,
            env=env,
            capture_output=True,
            check=False,
        )
    logs = "".join(
        (reader_dir / f"worker-{n}.log").read_text()[-3000:]
        for n in (1, 2)
        if (reader_dir / f"worker-{n}.log").exists()
    )
    assert process.returncode == 0, output[-6000:] + logs
    secrets = reader_dir / "secrets"
    assert sorted(p.name for p in secrets.iterdir()) == sorted(
        ["ca.pem", "server.pem", "users.properties"]
        + [f"{u}.env" for u in ("admin", "worker", "publisher", "operator", "downstream")]
    )
    # Three nodes, each up and secured, then stopped.
    assert f"broker started at 127.0.0.1:{PORT},127.0.0.1:{PORT + 1},127.0.0.1:{PORT + 2}" in output
    assert "ACLs of worker, publisher, operator, downstream created" in output
    assert "broker stopped" in output
    # The events reached the workers, and their outputs the downstream consumer.
    assert output.count("InteractionWarning") >= 1, output[-6000:]
    assert output.count("RefillAlert") >= 2, output[-6000:]
    # The operator's status names the two workers, each holding input partitions, and no
    # patient.
    status = output[output.index("consumer group medstream: ") :]
    status = status[: status.index("paused: ")]
    assert status.startswith("consumer group medstream: Stable, 2 workers"), status
    workers = [line for line in status.splitlines() if "medication-events" in line][:2]
    assert len(workers) == 2, status
    assert all(re.search(r"medication-events \d", line) for line in workers), workers
    assert "walk-patient" not in status
    # Each alert was delivered once, on the console channel, by one of the two workers.
    outcomes = [line for line in output.splitlines() if "NotificationOutcome" in line]
    assert len(outcomes) == 3, output[-6000:]
    assert all("delivered" in line for line in outcomes), outcomes
    console = [
        line
        for n in (1, 2)
        for line in (reader_dir / f"worker-{n}.log").read_text().splitlines()
        if "delivered on console" in line
    ]
    assert len(console) == 3, logs
