"""deploy/kubernetes against the code: settings, probes, topics, ACLs and the autoscaler.

Each check runs on the manifests as the files give them (a small reader of the kustomizations:
their resources and the settings' env files, no patches), and again on what kustomize renders
when `make k8s-check` has installed it. The last test runs `make k8s-check`'s script itself
(kustomize and kubeconform -strict against offline schemas) when its tools are installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.settings import REPOSITORY_ROOT, Settings
from streams.state.changelog import changelog_topic
from streams.topics import (
    AUDIT_LOG,
    CONTROL,
    DOWNSTREAM_TOPICS,
    EVERY_TOPIC,
    FHIR_RESOURCES,
    INPUT_TOPICS,
    PATIENT_EVENTS,
    TopicSpec,
)
from streams.topology import (
    AGENTS,
    DELIVERY_LEDGER_TABLE,
    MAP_FHIR_RESOURCES,
    PATIENT_STATE_TABLE,
    TIMERS,
)

KUBERNETES = REPOSITORY_ROOT / "deploy" / "kubernetes"
OVERLAYS = sorted(path.parent for path in (KUBERNETES / "overlays").glob("*/kustomization.yaml"))
CACHE = Path(os.environ.get("MEDSTREAM_CACHE", Path.home() / ".cache" / "medstream"))
KUSTOMIZE = CACHE / "bin" / "kustomize"
KUBECONFORM = CACHE / "bin" / "kubeconform"
TABLES = (PATIENT_STATE_TABLE, DELIVERY_LEDGER_TABLE)

Document = dict[str, Any]


# --- reading the manifests ------------------------------------------------------------------


def _env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value.strip()
    return pairs


def _read_kustomization(directory: Path) -> tuple[list[Document], dict[str, dict[str, str]]]:
    """The resources of a kustomization (recursively) and its generated ConfigMaps' data."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    documents: list[Document] = []
    generated: dict[str, dict[str, str]] = {}
    for resource in kustomization.get("resources", []):
        path = (directory / resource).resolve()
        if path.is_dir():
            found, made = _read_kustomization(path)
            documents += found
            for name, data in made.items():
                generated.setdefault(name, {}).update(data)
        else:
            documents += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for generator in kustomization.get("configMapGenerator", []):
        data = generated.setdefault(generator["name"], {})
        if generator.get("behavior", "create") != "merge":
            data.clear()
        for env in generator.get("envs", []):
            data.update(_env_file(directory / env))
    return documents, generated


def source_documents(overlay: Path) -> list[Document]:
    documents, generated = _read_kustomization(overlay)
    for name, data in generated.items():
        documents.append(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}
        )
    return documents


def rendered_documents(overlay: Path) -> list[Document]:
    if not KUSTOMIZE.exists():
        pytest.skip(f"kustomize is not installed ({KUSTOMIZE}): `make k8s-check` installs it")
    output = subprocess.run(
        [str(KUSTOMIZE), "build", str(overlay)], check=True, capture_output=True, text=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(output) if doc]


@pytest.fixture(
    params=[(overlay, how) for overlay in OVERLAYS for how in ("files", "kustomize")],
    ids=lambda param: f"{param[0].name}-{param[1]}",
)
def manifests(request: pytest.FixtureRequest) -> list[Document]:
    overlay, how = request.param
    return source_documents(overlay) if how == "files" else rendered_documents(overlay)


def of_kind(documents: list[Document], kind: str) -> list[Document]:
    return [doc for doc in documents if doc["kind"] == kind]


def one(documents: list[Document], kind: str) -> Document:
    (found,) = of_kind(documents, kind)
    return found


def worker_container(documents: list[Document]) -> Document:
    (container,) = one(documents, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    return container


def settings_map(documents: list[Document]) -> dict[str, str]:
    """The data of the ConfigMap the worker takes its environment from."""
    (source,) = worker_container(documents)["envFrom"]
    name = source["configMapRef"]["name"]
    (config,) = [doc for doc in of_kind(documents, "ConfigMap") if doc["metadata"]["name"] == name]
    return {key: str(value) for key, value in config["data"].items()}


@pytest.fixture
def settings(manifests: list[Document], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The workers' Settings, read from the ConfigMap as the worker would read its environment."""
    for name in list(os.environ):
        if name.startswith("MEDSTREAM_"):
            monkeypatch.delenv(name)
    for name, value in settings_map(manifests).items():
        monkeypatch.setenv(name, value)
    return Settings()


def topics_by_name(documents: list[Document]) -> dict[str, Document]:
    return {
        doc["spec"].get("topicName", doc["metadata"]["name"]): doc
        for doc in of_kind(documents, "KafkaTopic")
    }


def acls(documents: list[Document], user: str) -> Iterator[tuple[str, str, str, str]]:
    """(resource type, name, pattern type, operation) of each operation a KafkaUser may do."""
    (found,) = [doc for doc in of_kind(documents, "KafkaUser") if doc["metadata"]["name"] == user]
    assert found["spec"]["authorization"]["type"] == "simple"
    for rule in found["spec"]["authorization"]["acls"]:
        assert rule.get("type", "allow") == "allow"
        resource = rule["resource"]
        for operation in rule["operations"]:
            yield resource["type"], resource["name"], resource["patternType"], operation


def topic_operations(documents: list[Document], user: str) -> dict[str, set[str]]:
    operations: dict[str, set[str]] = {}
    for kind, name, pattern, operation in acls(documents, user):
        if kind == "topic":
            assert pattern == "literal", f"{user}: only literal topic names, not {pattern}"
            operations.setdefault(name, set()).add(operation)
    return operations


def names(settings: Settings, specs: tuple[TopicSpec, ...] | list[TopicSpec]) -> set[str]:
    return {settings.topic_name(spec.base_name) for spec in specs}


def leader_topic(settings: Settings) -> str:
    # faust.assignor.leader_assignor.LeaderAssignor._leader_topic_name
    return f"{settings.app_id}-__assignor-__leader"


def state_topics(settings: Settings) -> set[str]:
    return {changelog_topic(settings, table) for table in TABLES}


# --- the workers -----------------------------------------------------------------------------


def test_every_medstream_variable_is_a_real_setting(manifests: list[Document]) -> None:
    real = {f"MEDSTREAM_{name.upper()}" for name in Settings.model_fields}
    given = set(settings_map(manifests))
    given |= {var["name"] for var in worker_container(manifests).get("env", [])}
    assert {name for name in given if name.startswith("MEDSTREAM_")} <= real
    assert given <= real | {"PYTHONUNBUFFERED"}


def test_the_settings_are_accepted_and_name_the_kafka_credentials(settings: Settings) -> None:
    assert settings.security_protocol.value == "SASL_SSL"
    assert settings.sasl_mechanism == "SCRAM-SHA-512"
    assert settings.sasl_username == "medstream-worker"
    assert settings.ssl_cafile is not None
    assert settings.web_host not in {"127.0.0.1", "localhost", "::1"}, "kubelet probes the pod IP"


def test_the_kafka_credentials_come_from_secrets(
    manifests: list[Document], settings: Settings
) -> None:
    container = worker_container(manifests)
    (password,) = [var for var in container["env"] if var["name"] == "MEDSTREAM_SASL_PASSWORD"]
    assert password["valueFrom"]["secretKeyRef"] == {"name": "medstream-worker", "key": "password"}
    assert "MEDSTREAM_SASL_PASSWORD" not in settings_map(manifests)
    # The user is the KafkaUser whose Secret holds the password.
    assert settings.sasl_username in {
        u["metadata"]["name"] for u in of_kind(manifests, "KafkaUser")
    }
    # The CA file is the cluster CA Secret of the Kafka cluster, mounted read-only.
    spec = one(manifests, "StatefulSet")["spec"]["template"]["spec"]
    assert settings.ssl_cafile is not None
    (mount,) = [
        m for m in container["volumeMounts"] if settings.ssl_cafile.parent == Path(m["mountPath"])
    ]
    assert mount["readOnly"] is True
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    kafka = one(manifests, "Kafka")["metadata"]["name"]
    assert volume["secret"]["secretName"] == f"{kafka}-cluster-ca-cert"
    assert volume["secret"]["items"] == [{"key": "ca.crt", "path": settings.ssl_cafile.name}]
    assert settings.bootstrap_servers == f"{kafka}-kafka-bootstrap:9093"


def test_probes_ask_health_and_ready_on_the_web_port(
    manifests: list[Document], settings: Settings
) -> None:
    container = worker_container(manifests)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    for probe, path in (
        ("livenessProbe", "/health"),
        ("readinessProbe", "/ready"),
        ("startupProbe", "/health"),
    ):
        http = container[probe]["httpGet"]
        assert http["path"] == path
        assert ports.get(http["port"], http["port"]) == settings.web_port
    service = one(manifests, "Service")
    assert service["spec"]["clusterIP"] == "None"
    assert one(manifests, "StatefulSet")["spec"]["serviceName"] == service["metadata"]["name"]


def test_each_worker_keeps_its_tables_on_its_own_volume(
    manifests: list[Document], settings: Settings
) -> None:
    statefulset = one(manifests, "StatefulSet")
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    mounts = {m["name"]: m["mountPath"] for m in worker_container(manifests)["volumeMounts"]}
    assert Path(mounts[claim["metadata"]["name"]]) == settings.data_dir
    assert settings.store_url == "rocksdb://"
    # The worker must exit (MEDSTREAM_SHUTDOWN_TIMEOUT_SECONDS) before Kubernetes kills it.
    grace = statefulset["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > settings.shutdown_timeout_seconds


def test_the_worker_runs_unprivileged_with_a_read_only_root(manifests: list[Document]) -> None:
    pod = one(manifests, "StatefulSet")["spec"]["template"]["spec"]
    container = worker_container(manifests)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    assert {"cpu", "memory"} <= set(requests)
    assert {"cpu", "memory"} <= set(limits)
    # The image's user is the pod's (deploy/container/Containerfile).
    image = (REPOSITORY_ROOT / "deploy" / "container" / "Containerfile").read_text()
    user = pod["securityContext"]["runAsUser"]
    assert f"USER {user}:{pod['securityContext']['runAsGroup']}" in image
    assert 'ENTRYPOINT ["medstream"]' in image
    assert 'CMD ["worker"]' in image
    assert container["args"] == ["worker"]


def test_a_disruption_takes_at_most_one_worker(manifests: list[Document]) -> None:
    budget = one(manifests, "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    labels = one(manifests, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


# --- Strimzi -------------------------------------------------------------------------------


def test_the_cluster_is_kraft_replicated_and_authorizes(manifests: list[Document]) -> None:
    kafka = one(manifests, "Kafka")["spec"]["kafka"]
    assert kafka["config"]["default.replication.factor"] == 3
    assert kafka["config"]["min.insync.replicas"] == 2
    assert kafka["authorization"]["type"] == "simple"
    (listener,) = kafka["listeners"]
    assert listener["tls"] is True
    assert listener["authentication"]["type"] == "scram-sha-512"
    pools = of_kind(manifests, "KafkaNodePool")
    assert {role for pool in pools for role in pool["spec"]["roles"]} == {"broker", "controller"}
    assert all(pool["spec"]["replicas"] == 3 for pool in pools)


def test_every_topic_medstream_uses_is_a_kafka_topic(
    manifests: list[Document], settings: Settings
) -> None:
    topics = topics_by_name(manifests)
    wanted = {settings.topic_name(spec.base_name): spec for spec in EVERY_TOPIC}
    used = set(wanted) | state_topics(settings) | {leader_topic(settings)}
    assert set(topics) == used
    for name, spec in wanted.items():
        assert topics[name]["spec"]["partitions"] == spec.partition_count(settings), name
        compacted = topics[name]["spec"].get("config", {}).get("cleanup.policy") == "compact"
        assert compacted == spec.compacted, name
    for name in state_topics(settings):
        # A table has as many partitions as MEDSTREAM_TOPIC_PARTITIONS (streams/agents/tables.py).
        assert topics[name]["spec"]["partitions"] == settings.topic_partitions
        assert topics[name]["spec"]["config"]["cleanup.policy"] == "compact"
    assert topics[leader_topic(settings)]["spec"]["partitions"] == 1
    for topic in topics.values():
        assert topic["spec"]["replicas"] == settings.topic_replication_factor == 3


def test_the_worker_may_do_what_the_topology_does(
    manifests: list[Document], settings: Settings
) -> None:
    operations = topic_operations(manifests, "medstream-worker")
    reads = names(settings, [topic for agent in AGENTS for topic in agent.reads])
    reads |= names(settings, [CONTROL]) | state_topics(settings) | {leader_topic(settings)}
    writes = names(settings, [topic for agent in AGENTS for topic in agent.writes])
    writes |= names(settings, [topic for timer in TIMERS for topic in timer.writes])
    writes |= state_topics(settings)
    assert {name for name, ops in operations.items() if "Read" in ops} == reads
    assert {name for name, ops in operations.items() if "Write" in ops} == writes
    # At start it lists every topic of the contract (ensure_topics): it must see them all.
    assert names(settings, EVERY_TOPIC) <= set(operations)
    # Of the inputs, only the FHIR intake's two contract topics (what it maps FHIR onto).
    assert names(settings, INPUT_TOPICS) & writes == names(settings, MAP_FHIR_RESOURCES.writes) & (
        names(settings, INPUT_TOPICS)
    )
    assert names(settings, [PATIENT_EVENTS, FHIR_RESOURCES]).isdisjoint(writes)
    assert set().union(*operations.values()) <= {"Describe", "Read", "Write", "Create"}
    # Create only on Faust's own topics, which Faust asks to create at start.
    creates = {name for name, ops in operations.items() if "Create" in ops}
    assert creates == state_topics(settings) | {leader_topic(settings)}
    groups = {(n, op) for kind, n, _, op in acls(manifests, "medstream-worker") if kind == "group"}
    assert groups == {(settings.app_id, "Read")}


def test_the_publisher_writes_only_the_input_topics(
    manifests: list[Document], settings: Settings
) -> None:
    operations = topic_operations(manifests, "medstream-publisher")
    assert set(operations) == names(settings, INPUT_TOPICS)
    assert all(ops == {"Describe", "Write"} for ops in operations.values())
    assert all(kind == "topic" for kind, *_ in acls(manifests, "medstream-publisher"))


def test_the_operator_never_touches_state_and_writes_only_control_and_audit(
    manifests: list[Document], settings: Settings
) -> None:
    operations = topic_operations(manifests, "medstream-operator")
    assert not set(operations) & (state_topics(settings) | {leader_topic(settings)})
    writes = {name for name, ops in operations.items() if "Write" in ops}
    # `medstream pause` sends to medstream-control, then appends an AuditRecord to audit-log.
    assert writes == names(settings, [CONTROL, AUDIT_LOG])
    # status, tail and dlq read every topic of the contract and the internal ones.
    assert {name for name, ops in operations.items() if "Read" in ops} == names(
        settings, EVERY_TOPIC
    )
    groups = {
        (n, op) for kind, n, _, op in acls(manifests, "medstream-operator") if kind == "group"
    }
    assert groups == {(settings.app_id, "Describe")}


def test_the_downstream_consumer_reads_only_the_alerts_in_its_own_group(
    manifests: list[Document], settings: Settings
) -> None:
    operations = topic_operations(manifests, "medstream-downstream")
    assert set(operations) == names(settings, DOWNSTREAM_TOPICS)
    assert all(ops == {"Describe", "Read"} for ops in operations.values())
    groups = {
        (n, pattern)
        for kind, n, pattern, _ in acls(manifests, "medstream-downstream")
        if kind == "group"
    }
    # One prefix per deployment, so each downstream service takes a group of its own; never
    # one that the workers' group name starts with.
    assert groups == {(f"{settings.app_id}-downstream", "prefix")}


# --- KEDA ----------------------------------------------------------------------------------


def test_the_autoscaler_stops_at_the_input_partitions(
    manifests: list[Document], settings: Settings
) -> None:
    scaled = one(manifests, "ScaledObject")["spec"]
    statefulset = one(manifests, "StatefulSet")
    assert scaled["scaleTargetRef"]["kind"] == "StatefulSet"
    assert scaled["scaleTargetRef"]["name"] == statefulset["metadata"]["name"]
    topics = topics_by_name(manifests)
    inputs = names(settings, INPUT_TOPICS)
    partitions = {topics[name]["spec"]["partitions"] for name in inputs}
    assert partitions == {settings.topic_partitions}
    assert scaled["maxReplicaCount"] == settings.topic_partitions
    assert scaled["minReplicaCount"] <= statefulset["spec"]["replicas"] <= scaled["maxReplicaCount"]
    triggers = scaled["triggers"]
    assert {t["metadata"]["topic"] for t in triggers} == inputs
    for trigger in triggers:
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["consumerGroup"] == settings.app_id
        assert trigger["metadata"]["bootstrapServers"] == settings.bootstrap_servers
    # Its own KafkaUser, which may only describe.
    operations = topic_operations(manifests, "medstream-scaler")
    assert set(operations) == inputs
    assert set().union(*operations.values()) == {"Describe"}


# --- the tools -----------------------------------------------------------------------------


def test_make_k8s_check_validates_every_overlay() -> None:
    missing = [str(tool) for tool in (KUSTOMIZE, KUBECONFORM) if not tool.exists()]
    if shutil.which("go") is None:
        missing.append("go")
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (`make k8s-check` installs them)")
    result = subprocess.run(
        ["bash", str(KUBERNETES / "tools" / "check.sh")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summaries = [line for line in result.stdout.splitlines() if line.startswith("Summary:")]
    assert summaries, result.stdout
    assert all("Invalid: 0, Errors: 0, Skipped: 0" in line for line in summaries), result.stdout


def test_the_kafka_users_hold_exactly_the_acls_of_streams_acls(
    manifests: list[Document], settings: Settings
) -> None:
    from streams.acls import role_acls

    for role, expected in role_acls(settings).items():
        found = {
            (kind, name, pattern, operation)
            for kind, name, pattern, operation in acls(manifests, f"medstream-{role}")
        }
        # Strimzi spells Kafka's PREFIXED pattern type "prefix".
        strimzi = {"literal": "literal", "prefixed": "prefix"}
        wanted = {
            (acl.resource_type, acl.name, strimzi[acl.pattern], op)
            for acl in expected
            for op in acl.operations
        }
        assert found == wanted, (role, found ^ wanted)
