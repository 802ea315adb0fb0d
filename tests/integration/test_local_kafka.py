"""The project's own broker: start is idempotent, stop leaves no process and no pid file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streams.local_kafka import probe_metadata

pytestmark = pytest.mark.integration

PORT = 19192


def medstream_broker(verb: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "streams",
            "broker",
            verb,
            "--port",
            str(PORT),
            "--controller-port",
            str(PORT + 1),
            "--data-dir",
            str(data_dir),
            "--heap",
            "384m",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def java_processes_using(data_dir: Path) -> list[int]:
    """Live (not zombie) java processes whose command line names the data directory."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            continue
        if "java" in cmdline and str(data_dir) in cmdline and state != "Z":
            found.append(int(proc.name))
    return found


async def test_start_twice_then_stop_leaves_nothing_behind(tmp_path: Path) -> None:
    data_dir = tmp_path / "broker"
    try:
        first = medstream_broker("start", data_dir)
        assert first.returncode == 0, first.stderr
        assert "broker started" in first.stdout
        assert await probe_metadata(f"127.0.0.1:{PORT}") == [1]
        pid = (data_dir / "broker.pid").read_text().strip()

        second = medstream_broker("start", data_dir)
        assert second.returncode == 0, second.stderr
        assert "already running" in second.stdout
        # The broker logs (log4j2, through slf4j 2): its start line is there.
        assert "started (kafka.server.KafkaRaftServer)" in (data_dir / "broker.log").read_text()
        assert (data_dir / "broker.pid").read_text().strip() == pid
        assert len(java_processes_using(data_dir)) == 1

        status = medstream_broker("status", data_dir)
        assert status.returncode == 0
        assert '"brokers_answering": [\n    1\n  ]' in status.stdout
    finally:
        stop = medstream_broker("stop", data_dir)
    assert stop.returncode == 0, stop.stderr
    assert "broker stopped" in stop.stdout
    assert java_processes_using(data_dir) == []
    assert not (data_dir / "broker.pid").exists()
    assert list(data_dir.rglob("*.lock")) == []
    assert await probe_metadata(f"127.0.0.1:{PORT}", timeout=1.0) is None
    assert medstream_broker("status", data_dir).returncode == 1


async def test_start_refuses_a_port_that_another_process_holds(tmp_path: Path) -> None:
    import socket

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", PORT))
        squatter.listen()
        result = medstream_broker("start", tmp_path / "broker")
    assert result.returncode != 0
    assert f"port {PORT} on 127.0.0.1 is in use" in result.stderr
    assert java_processes_using(tmp_path / "broker") == []
