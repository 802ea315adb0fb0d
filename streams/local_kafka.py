"""Runs a real Apache Kafka broker (KRaft) on loopback from Maven Central jars, without Docker."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaClient

from streams.settings import REPOSITORY_ROOT, Settings

log = logging.getLogger(__name__)

DEPLOY_DIR = REPOSITORY_ROOT / "deploy" / "kafka"
PID_FILE = "broker.pid"
LOG_FILE = "broker.log"
PROPERTIES_FILE = "server.properties"
CLUSTER_ID_FILE = "cluster.id"
CLASSPATH_COMPLETE_MARKER = ".complete"


class BrokerError(RuntimeError):
    """The local broker could not be prepared, started or stopped."""


@dataclass(frozen=True)
class NodeSpec:
    """One combined broker+controller node of a local KRaft cluster."""

    node_id: int
    host: str
    port: int
    controller_port: int
    data_dir: Path

    @property
    def bootstrap_server(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "log"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / PID_FILE

    @property
    def log_file(self) -> Path:
        return self.data_dir / LOG_FILE

    @property
    def properties_file(self) -> Path:
        return self.data_dir / PROPERTIES_FILE


@dataclass(frozen=True)
class ClusterSpec:
    """A local cluster: its nodes share one quorum, one class path and one cluster id.

    A single node is the common case; three nodes make a failover cluster, and
    ``extra_properties`` carries listener and authorizer settings such as SASL/SCRAM.
    """

    nodes: tuple[NodeSpec, ...]
    kafka_version: str
    cache_dir: Path
    heap: str
    start_timeout: float = 90.0
    extra_properties: Mapping[str, str] = field(default_factory=dict)
    # SCRAM credentials written into the metadata log at format time (``--add-scram``),
    # e.g. ``SCRAM-SHA-512=[name=admin,password=...]``; and the aiokafka options the
    # readiness probe connects with (a secured cluster refuses a PLAINTEXT probe).
    scram_credentials: tuple[str, ...] = ()
    probe_options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def single_node(cls, settings: Settings) -> ClusterSpec:
        node = NodeSpec(
            node_id=1,
            host=settings.broker_host,
            port=settings.broker_port,
            controller_port=settings.broker_controller_port,
            data_dir=settings.broker_data_dir.resolve(),
        )
        return cls(
            nodes=(node,),
            kafka_version=settings.broker_kafka_version,
            cache_dir=settings.broker_cache_dir,
            heap=settings.broker_heap,
            start_timeout=settings.broker_start_timeout,
        )

    @classmethod
    def multi_node(cls, settings: Settings, nodes: int) -> ClusterSpec:
        """``nodes`` nodes on consecutive ports from the broker port, controllers likewise from
        the controller port (moved 100 above the client ports when both ranges would overlap),
        each node's data in ``<broker_data_dir>/node-<id>``. One node is ``single_node``."""
        if nodes < 1:
            raise BrokerError(f"a cluster needs at least one node, not {nodes}")
        if nodes == 1:
            return cls.single_node(settings)
        port, controller = settings.broker_port, settings.broker_controller_port
        clients = set(range(port, port + nodes))
        if clients & set(range(controller, controller + nodes)):
            controller = port + 100
        if max(port, controller) + nodes - 1 > 65535:
            raise BrokerError(f"{nodes} nodes from port {port} do not fit below 65536")
        data_dir = settings.broker_data_dir.resolve()
        return cls(
            nodes=tuple(
                NodeSpec(
                    node_id=i + 1,
                    host=settings.broker_host,
                    port=port + i,
                    controller_port=controller + i,
                    data_dir=data_dir / f"node-{i + 1}",
                )
                for i in range(nodes)
            ),
            kafka_version=settings.broker_kafka_version,
            cache_dir=settings.broker_cache_dir,
            heap=settings.broker_heap,
            start_timeout=settings.broker_start_timeout,
        )

    @property
    def quorum_voters(self) -> str:
        return ",".join(f"{n.node_id}@{n.host}:{n.controller_port}" for n in self.nodes)

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(n.bootstrap_server for n in self.nodes)

    @property
    def classpath_dir(self) -> Path:
        return self.cache_dir / f"kafka-{self.kafka_version}" / "libs"


def render_server_properties(cluster: ClusterSpec, node: NodeSpec) -> str:
    """The server.properties of one node, as text."""
    replication = str(min(3, len(cluster.nodes)))
    min_isr = str(max(1, min(2, len(cluster.nodes) - 1)))
    properties: dict[str, str] = {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "listeners": (
            f"PLAINTEXT://{node.host}:{node.port},CONTROLLER://{node.host}:{node.controller_port}"
        ),
        "advertised.listeners": f"PLAINTEXT://{node.host}:{node.port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "controller.quorum.voters": cluster.quorum_voters,
        "log.dirs": str(node.log_dir),
        "num.partitions": "1",
        # Topics are created deliberately by medstream with their partition count; a typo in a
        # topic name must fail loudly instead of creating a one-partition topic.
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": replication,
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": replication,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": replication,
        "share.coordinator.state.topic.min.isr": min_isr,
        "group.initial.rebalance.delay.ms": "0",
        "log.retention.hours": "168",
        "log.segment.bytes": str(64 * 1024 * 1024),
    }
    properties.update(_node_values(cluster.extra_properties, node))
    return "".join(f"{key}={value}\n" for key, value in properties.items())


def _node_values(extra: Mapping[str, str], node: NodeSpec) -> dict[str, str]:
    """``extra_properties`` for one node: ``{host}``, ``{port}``, ``{controller_port}`` and
    ``{node_id}`` in a value are that node's."""
    tokens = {
        "{host}": node.host,
        "{port}": str(node.port),
        "{controller_port}": str(node.controller_port),
        "{node_id}": str(node.node_id),
    }
    rendered = {}
    for key, value in extra.items():
        for token, replacement in tokens.items():
            value = value.replace(token, replacement)
        rendered[key] = value
    return rendered


def secured_properties(
    tls_dir: Path, admin_user: str, admin_password: str, mechanism: str = "SCRAM-SHA-512"
) -> dict[str, str]:
    """``extra_properties`` of a secured cluster: clients and brokers talk SASL_SSL (SCRAM over
    TLS) on the client port, the controller listener stays PLAINTEXT on loopback, and the KRaft
    StandardAuthorizer denies whatever no ACL allows. ``admin_user`` (the brokers' own principal,
    a super user) must be among the SCRAM credentials the storage is formatted with.

    ``tls_dir`` holds PEM files: ``server.pem`` (the unencrypted PKCS#8 private key followed by
    the certificate chain) and ``ca.pem``. The controller's principal is ``User:ANONYMOUS``
    (PLAINTEXT), so it is a super user too: keep the controller port on loopback.
    """
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{admin_user}" password="{admin_password}";'
    )
    return {
        "listeners": "SASL_SSL://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": "SASL_SSL://{host}:{port}",
        "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "SASL_SSL",
        "sasl.enabled.mechanisms": mechanism,
        "sasl.mechanism.inter.broker.protocol": mechanism,
        f"listener.name.sasl_ssl.{mechanism.lower()}.sasl.jaas.config": jaas,
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(tls_dir / "server.pem"),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(tls_dir / "ca.pem"),
        "ssl.endpoint.identification.algorithm": "https",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:{admin_user};User:ANONYMOUS",
        "allow.everyone.if.no.acl.found": "false",
    }


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes in unpadded URL-safe base64, never starting with '-'
    (the storage tool's argument parser takes one for an option: 1 start in 64 failed so, and
    Kafka's own Uuid.randomUuid draws again for the same reason)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def ensure_classpath(cluster: ClusterSpec) -> Path:
    """Fetch the broker's jars from Maven Central into the cache once; return their folder."""
    libs = cluster.classpath_dir
    marker = libs / CLASSPATH_COMPLETE_MARKER
    # The marker holds the pom's digest: jars fetched for an older pom are fetched again.
    wanted = hashlib.sha256((DEPLOY_DIR / "pom.xml").read_bytes()).hexdigest()
    if marker.exists() and marker.read_text().strip() == wanted:
        return libs
    if libs.exists():
        for jar in libs.glob("*.jar"):
            jar.unlink()
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Maven ('mvn') is needed to fetch Kafka's jars; install it first")
    libs.mkdir(parents=True, exist_ok=True)
    log.info("fetching Apache Kafka %s jars into %s", cluster.kafka_version, libs)
    result = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(DEPLOY_DIR / "pom.xml"),
            f"-Dkafka.version={cluster.kafka_version}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={libs}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BrokerError(
            f"fetching Kafka {cluster.kafka_version} failed:\n{result.stdout}{result.stderr}"
        )
    marker.write_text(wanted + "\n")
    return libs


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise BrokerError("Java 17 or newer is needed to run Kafka; install it first")
    return java


def _running_pid(node: NodeSpec) -> int | None:
    """The pid of this node's broker if it is running, else None (a stale pid file is removed)."""
    try:
        pid = int(node.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        node.pid_file.unlink(missing_ok=True)
        return None
    # A recycled pid belongs to another program: only our java with our properties counts.
    if str(node.properties_file).encode() not in cmdline:
        node.pid_file.unlink(missing_ok=True)
        return None
    if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
        return None
    return pid


async def probe_metadata(
    bootstrap_servers: str, timeout: float = 5.0, **options: Any
) -> list[int] | None:
    """Ask the cluster for its metadata; return the ids of the brokers it lists, or None."""
    # While a broker boots, every probe fails to connect; those errors are expected noise.
    aiokafka_log = logging.getLogger("aiokafka")
    previous_level = aiokafka_log.level
    aiokafka_log.setLevel(logging.CRITICAL)
    client = AIOKafkaClient(
        bootstrap_servers=bootstrap_servers,
        request_timeout_ms=int(timeout * 1000),
        connections_max_idle_ms=int(timeout * 1000) + 1000,
        **options,
    )
    try:
        await asyncio.wait_for(client.bootstrap(), timeout)
        metadata = await asyncio.wait_for(client.fetch_all_metadata(), timeout)
        return sorted(broker.nodeId for broker in metadata.brokers())
    except Exception:
        return None
    finally:
        await client.close()
        aiokafka_log.setLevel(previous_level)


class LocalKafka:
    """Start, stop and inspect a local cluster described by a ClusterSpec."""

    def __init__(self, cluster: ClusterSpec) -> None:
        self.cluster = cluster

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalKafka:
        return cls(ClusterSpec.single_node(settings))

    @property
    def bootstrap_servers(self) -> str:
        return self.cluster.bootstrap_servers

    @classmethod
    def cluster_from_settings(cls, settings: Settings, nodes: int) -> LocalKafka:
        return cls(ClusterSpec.multi_node(settings, nodes))

    def kill_node(self, node_id: int) -> int | None:
        """SIGKILL one node's broker (a crash: nothing flushed, no controlled shutdown) and
        wait until it is gone; return its pid, or None when it was not running."""
        node = next(n for n in self.cluster.nodes if n.node_id == node_id)
        pid = _running_pid(node)
        if pid is None:
            return None
        os.kill(pid, signal.SIGKILL)
        while _pid_alive(pid):
            time.sleep(0.05)
        node.pid_file.unlink(missing_ok=True)
        return pid

    def running_pids(self) -> dict[int, int | None]:
        """Node id to pid of its running broker process (None when it is not running)."""
        return {node.node_id: _running_pid(node) for node in self.cluster.nodes}

    def start(self) -> bool:
        """Start every node that is not running and wait until the cluster answers.

        Returns True when it started something, False when everything was already running.
        """
        libs = ensure_classpath(self.cluster)
        started: list[tuple[NodeSpec, subprocess.Popen[bytes]]] = []
        cluster_id = self._cluster_id()
        for node in self.cluster.nodes:
            if _running_pid(node) is not None:
                continue
            for port in (node.port, node.controller_port):
                # Another program on our port would answer the readiness probe in our place.
                if _port_in_use(node.host, port):
                    raise BrokerError(
                        f"port {port} on {node.host} is in use by another process; "
                        "stop it or choose other ports"
                    )
            started.append((node, self._start_node(node, libs, cluster_id)))
        try:
            asyncio.run(self._wait_ready(started))
        except BaseException:
            for node, process in started:
                self._terminate(node, process.pid)
            raise
        return bool(started)

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop every running node (SIGTERM, then SIGKILL after ``timeout``)."""
        # All at once: stopped one after another, the last nodes of a cluster wait for a
        # quorum that is gone and sit out the whole timeout before the SIGKILL.
        running = [(node, _running_pid(node)) for node in self.cluster.nodes]
        for _node, pid in running:
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        for node, pid in running:
            if pid is not None:
                self._terminate(node, pid, timeout)
            node.pid_file.unlink(missing_ok=True)
        return any(pid is not None for _, pid in running)

    def status(self) -> dict[str, object]:
        """Which nodes run, and whether the cluster answers a metadata request."""
        pids = self.running_pids()
        answering = None
        if any(pid is not None for pid in pids.values()):
            answering = asyncio.run(
                probe_metadata(self.bootstrap_servers, **self.cluster.probe_options)
            )
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "nodes": {node_id: pid for node_id, pid in pids.items()},
            "brokers_answering": answering or [],
        }

    def _cluster_id(self) -> str:
        # All nodes of one cluster must be formatted with the same id; it lives beside node 1.
        id_file = self.cluster.nodes[0].data_dir / CLUSTER_ID_FILE
        if id_file.exists():
            return id_file.read_text().strip()
        id_file.parent.mkdir(parents=True, exist_ok=True)
        cluster_id = new_cluster_id()
        id_file.write_text(cluster_id)
        return cluster_id

    def _start_node(self, node: NodeSpec, libs: Path, cluster_id: str) -> subprocess.Popen[bytes]:
        node.data_dir.mkdir(parents=True, exist_ok=True)
        node.properties_file.write_text(render_server_properties(self.cluster, node))
        classpath = f"{libs}/*"
        if not (node.log_dir / "meta.properties").exists():
            result = subprocess.run(
                [
                    _java(),
                    "-Xmx256m",
                    "-cp",
                    classpath,
                    f"-Dlog4j2.configurationFile={DEPLOY_DIR / 'log4j2.properties'}",
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(node.properties_file),
                    "--ignore-formatted",
                    *(arg for c in self.cluster.scram_credentials for arg in ("--add-scram", c)),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise BrokerError(f"formatting node {node.node_id} failed:\n{result.stderr}")
        log_handle = node.log_file.open("ab")
        try:
            process = subprocess.Popen(
                [
                    _java(),
                    f"-Xmx{self.cluster.heap}",
                    f"-Xms{self.cluster.heap}",
                    "-XX:+UseG1GC",
                    "-XX:MaxGCPauseMillis=20",
                    "-Djava.awt.headless=true",
                    f"-Dlog4j2.configurationFile={DEPLOY_DIR / 'log4j2.properties'}",
                    f"-Dkafka.logs.dir={node.data_dir}",
                    "-cp",
                    classpath,
                    "kafka.Kafka",
                    str(node.properties_file),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_handle,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C meant for a foreground program must not reach it.
                start_new_session=True,
            )
        finally:
            log_handle.close()
        node.pid_file.write_text(str(process.pid))
        return process

    async def _wait_ready(
        self, started: Sequence[tuple[NodeSpec, subprocess.Popen[bytes]]]
    ) -> None:
        expected = sorted(node.node_id for node in self.cluster.nodes)
        deadline = time.monotonic() + self.cluster.start_timeout
        while True:
            for node, process in started:
                if process.poll() is not None:
                    tail = node.log_file.read_text(errors="replace")[-4000:]
                    raise BrokerError(
                        f"broker node {node.node_id} exited with {process.returncode}:\n{tail}"
                    )
            answer = await probe_metadata(
                self.bootstrap_servers, timeout=2.0, **self.cluster.probe_options
            )
            if answer == expected:
                return
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"the broker did not answer a metadata request within "
                    f"{self.cluster.start_timeout:.0f}s; see {self.cluster.nodes[0].log_file}"
                )
            await asyncio.sleep(0.5)

    @staticmethod
    def _terminate(node: NodeSpec, pid: int, timeout: float = 30.0) -> None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            node.pid_file.unlink(missing_ok=True)
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                break
            time.sleep(0.2)
        else:
            log.warning("broker node %s ignored SIGTERM; killing it", node.node_id)
            os.kill(pid, signal.SIGKILL)
            while _pid_alive(pid):
                time.sleep(0.1)
        node.pid_file.unlink(missing_ok=True)


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex((host, port)) == 0


def _pid_alive(pid: int) -> bool:
    # A child we started ourselves stays a zombie until reaped; reap it if it is ours.
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"


SASL_SSL_ADMIN = "admin"


def read_users(path: Path) -> dict[str, str]:
    """A users file: ``name=password`` a line (``#`` starts a comment)."""
    users = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, separator, password = line.partition("=")
        if not separator or not name.strip() or not password:
            raise BrokerError(f"{path}: expected name=password, got {line!r}")
        users[name.strip()] = password
    return users


def secured_cluster(
    cluster: ClusterSpec, sasl_ssl_dir: Path, mechanism: str = "SCRAM-SHA-512"
) -> ClusterSpec:
    """``cluster`` secured as ``secured_properties`` describes, from a folder holding
    ``server.pem`` (PKCS#8 key and certificate chain), ``ca.pem`` and ``users.properties``
    (``name=password`` lines, ``admin`` among them: the brokers' own super user)."""
    sasl_ssl_dir = sasl_ssl_dir.resolve()
    for name in ("server.pem", "ca.pem", "users.properties"):
        if not (sasl_ssl_dir / name).is_file():
            raise BrokerError(f"{sasl_ssl_dir} has no {name}")
    users = read_users(sasl_ssl_dir / "users.properties")
    if SASL_SSL_ADMIN not in users:
        raise BrokerError(f"{sasl_ssl_dir / 'users.properties'} has no {SASL_SSL_ADMIN} user")
    return dataclasses.replace(
        cluster,
        extra_properties={
            **cluster.extra_properties,
            **secured_properties(sasl_ssl_dir, SASL_SSL_ADMIN, users[SASL_SSL_ADMIN], mechanism),
        },
        scram_credentials=tuple(
            f"{mechanism}=[name={name},password={password}]" for name, password in users.items()
        ),
        probe_options={
            "security_protocol": "SASL_SSL",
            "ssl_context": ssl.create_default_context(cafile=str(sasl_ssl_dir / "ca.pem")),
            "sasl_mechanism": mechanism,
            "sasl_plain_username": SASL_SSL_ADMIN,
            "sasl_plain_password": users[SASL_SSL_ADMIN],
        },
    )


def admin_client_properties(cluster: ClusterSpec, sasl_ssl_dir: Path) -> str:
    """A Kafka client properties file's text for the admin user of a ``secured_cluster``."""
    password = read_users(sasl_ssl_dir / "users.properties")[SASL_SSL_ADMIN]
    return (
        f"bootstrap.servers={cluster.bootstrap_servers}\n"
        "security.protocol=SASL_SSL\n"
        "sasl.mechanism=SCRAM-SHA-512\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{SASL_SSL_ADMIN}" password="{password}";\n'
        "ssl.truststore.type=PEM\n"
        f"ssl.truststore.location={sasl_ssl_dir.resolve() / 'ca.pem'}\n"
    )
