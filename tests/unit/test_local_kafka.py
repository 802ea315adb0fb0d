"""The local broker's configuration is rendered correctly for one and for three nodes."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import pytest

from streams import local_kafka
from streams.local_kafka import ClusterSpec, NodeSpec, new_cluster_id, render_server_properties
from streams.settings import Settings


def parse(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def test_single_node_from_settings(tmp_path: Path) -> None:
    settings = Settings(broker_port=29092, broker_controller_port=29093, broker_data_dir=tmp_path)
    cluster = ClusterSpec.single_node(settings)
    properties = parse(render_server_properties(cluster, cluster.nodes[0]))
    assert properties["process.roles"] == "broker,controller"
    assert properties["node.id"] == "1"
    assert properties["listeners"] == ("PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093")
    assert properties["controller.quorum.voters"] == "1@127.0.0.1:29093"
    assert properties["log.dirs"] == str(tmp_path / "log")
    assert properties["offsets.topic.replication.factor"] == "1"
    assert properties["transaction.state.log.min.isr"] == "1"
    assert properties["group.initial.rebalance.delay.ms"] == "0"
    assert properties["auto.create.topics.enable"] == "false"
    assert cluster.bootstrap_servers == "127.0.0.1:29092"


def test_three_nodes_share_a_quorum_and_replicate(tmp_path: Path) -> None:
    nodes = tuple(
        NodeSpec(i, "127.0.0.1", 39090 + 2 * i, 39091 + 2 * i, tmp_path / f"node-{i}")
        for i in (1, 2, 3)
    )
    cluster = ClusterSpec(
        nodes=nodes,
        kafka_version="4.0.2",
        cache_dir=tmp_path,
        heap="256m",
        extra_properties={"authorizer.class.name": "Example"},
    )
    second = parse(render_server_properties(cluster, nodes[1]))
    assert second["node.id"] == "2"
    assert second["controller.quorum.voters"] == (
        "1@127.0.0.1:39093,2@127.0.0.1:39095,3@127.0.0.1:39097"
    )
    assert second["offsets.topic.replication.factor"] == "3"
    assert second["transaction.state.log.min.isr"] == "2"
    assert second["authorizer.class.name"] == "Example"
    assert cluster.bootstrap_servers.count(",") == 2


def test_cluster_ids_are_sixteen_random_bytes() -> None:
    first, second = new_cluster_id(), new_cluster_id()
    assert first != second
    assert len(base64.urlsafe_b64decode(first + "==")) == 16


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # uuid4 bytes whose base64 starts with '-' (0xf8...) come first: the storage tool would
    # read such an id as an option and refuse to format.
    draws = iter([uuid.UUID(bytes=b"\xf8" + b"\x00" * 15), uuid.UUID(bytes=b"\x01" * 16)])
    monkeypatch.setattr(local_kafka.uuid, "uuid4", lambda: next(draws))
    cluster_id = new_cluster_id()
    assert not cluster_id.startswith("-")
    assert cluster_id == "AQEBAQEBAQEBAQEBAQEBAQ"


def test_multi_node_cluster_from_settings_uses_consecutive_ports(tmp_path: Path) -> None:
    settings = Settings(broker_port=59092, broker_controller_port=59192, broker_data_dir=tmp_path)
    cluster = ClusterSpec.multi_node(settings, 3)
    assert [(n.node_id, n.port, n.controller_port) for n in cluster.nodes] == [
        (1, 59092, 59192),
        (2, 59093, 59193),
        (3, 59094, 59194),
    ]
    assert [n.data_dir for n in cluster.nodes] == [tmp_path / f"node-{i}" for i in (1, 2, 3)]
    assert cluster.bootstrap_servers == "127.0.0.1:59092,127.0.0.1:59093,127.0.0.1:59094"
    properties = parse(render_server_properties(cluster, cluster.nodes[2]))
    assert properties["controller.quorum.voters"] == (
        "1@127.0.0.1:59192,2@127.0.0.1:59193,3@127.0.0.1:59194"
    )
    assert properties["offsets.topic.replication.factor"] == "3"


def test_multi_node_moves_controllers_off_overlapping_client_ports(tmp_path: Path) -> None:
    # The defaults, 9092 and 9093, would give node 2 the controller port of node 1.
    settings = Settings(broker_port=9092, broker_controller_port=9093, broker_data_dir=tmp_path)
    cluster = ClusterSpec.multi_node(settings, 3)
    assert [n.controller_port for n in cluster.nodes] == [9192, 9193, 9194]
    assert ClusterSpec.multi_node(settings, 1) == ClusterSpec.single_node(settings)
    with pytest.raises(local_kafka.BrokerError):
        ClusterSpec.multi_node(settings, 0)
