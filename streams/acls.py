"""The Kafka ACLs of each medstream principal, in one place.

The worker's rights follow streams/topology.py (what the agents and timers read and write);
the others are fixed roles. deploy/kubernetes/strimzi/users.yaml, the README's security section
and tests/integration/test_security.py are checked against or built from this module.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from streams.settings import REPOSITORY_ROOT, Settings
from streams.topics import (
    ALL_TOPICS,
    AUDIT_LOG,
    CONTROL,
    DOWNSTREAM_TOPICS,
    INPUT_TOPICS,
    NOTIFICATION_RELEASES,
)
from streams.topology import AGENTS, DELIVERY_LEDGER_TABLE, PATIENT_STATE_TABLE, TIMERS

CREATE_ACLS_PROGRAM = REPOSITORY_ROOT / "deploy" / "kafka" / "CreateAcls.java"

WORKER = "worker"
PUBLISHER = "publisher"
OPERATOR = "operator"
DOWNSTREAM = "downstream"
ROLES = (WORKER, PUBLISHER, OPERATOR, DOWNSTREAM)


LITERAL = "literal"
PREFIXED = "prefixed"


@dataclass(frozen=True)
class Acl:
    """Allow ``operations`` on a resource (a topic or a consumer group): the one named ``name``
    (literal), or every one whose name starts with it (prefixed)."""

    resource_type: str  # "topic" or "group"
    name: str
    operations: tuple[str, ...]
    pattern: str = LITERAL


def changelog_topic(settings: Settings, table: str) -> str:
    """Faust's changelog topic of a table: ``<app id>-<table>-changelog``."""
    return f"{settings.app_id}-{table}-changelog"


def leader_topic(settings: Settings) -> str:
    """Faust's leader-election topic."""
    return f"{settings.app_id}-__assignor-__leader"


def downstream_group(settings: Settings) -> str:
    """The consumer group of a downstream consumer of the alerts."""
    return f"{settings.app_id}-downstream"


def _merge(entries: Iterable[tuple[str, str, tuple[str, ...]] | Acl]) -> tuple[Acl, ...]:
    merged: dict[tuple[str, str, str], list[str]] = {}
    for entry in entries:
        acl = entry if isinstance(entry, Acl) else Acl(*entry)
        wanted = merged.setdefault((acl.resource_type, acl.name, acl.pattern), [])
        wanted.extend(op for op in acl.operations if op not in wanted)
    order = ("Describe", "Read", "Write", "Create")
    return tuple(
        Acl(resource_type, name, tuple(sorted(ops, key=order.index)), pattern)
        for (resource_type, name, pattern), ops in merged.items()
    )


def worker_acls(settings: Settings) -> tuple[Acl, ...]:
    """What a worker needs: the agents' reads and the agents' and timers' writes, the control
    topic, both changelogs, Faust's leader topic and the consumer group. Describe on every topic
    of the contract (ensure_topics lists them at start). Never Write on the inputs, the control
    topic or the audit log; Create only on Faust's own topics; never Delete, Alter or cluster
    rights."""
    entries: list[tuple[str, str, tuple[str, ...]]] = []
    read = {spec.base_name for agent in AGENTS for spec in agent.reads}
    written = {spec.base_name for agent in AGENTS for spec in agent.writes}
    written |= {spec.base_name for timer in TIMERS for spec in timer.writes}
    for spec in (*ALL_TOPICS, NOTIFICATION_RELEASES, CONTROL):
        operations = ["Describe"]
        if spec.base_name in read or spec is CONTROL:
            operations.append("Read")
        if spec.base_name in written and spec is not CONTROL:
            operations.append("Write")
        entries.append(("topic", settings.topic_name(spec.base_name), tuple(operations)))
    # Create on Faust's own topics only: Faust asks to create them at start unless its cached
    # metadata lists them, and without Create the broker answers TOPIC_AUTHORIZATION_FAILED
    # where it would answer TOPIC_ALREADY_EXISTS (the worker then stops).
    for table in (PATIENT_STATE_TABLE, DELIVERY_LEDGER_TABLE):
        entries.append(
            ("topic", changelog_topic(settings, table), ("Describe", "Read", "Write", "Create"))
        )
    entries.append(("topic", leader_topic(settings), ("Describe", "Read", "Create")))
    entries.append(("group", settings.app_id, ("Read",)))
    return _merge(entries)


def publisher_acls(settings: Settings) -> tuple[Acl, ...]:
    """Upstream producers and `medstream publish`: write the input topics, nothing else."""
    return _merge(
        ("topic", settings.topic_name(spec.base_name), ("Describe", "Write"))
        for spec in INPUT_TOPICS
    )


def operator_acls(settings: Settings) -> tuple[Acl, ...]:
    """`medstream status`, `tail`, `dlq list|show`, `pause`, `resume`: read every topic of the
    contract and the internal ones, never a changelog nor the leader topic; write only the
    control topic and the audit log; Describe the workers' group (committed offsets)."""
    entries: list[tuple[str, str, tuple[str, ...]]] = []
    for spec in (*ALL_TOPICS, NOTIFICATION_RELEASES, CONTROL):
        writes = ("Write",) if spec in (CONTROL, AUDIT_LOG) else ()
        entries.append(
            ("topic", settings.topic_name(spec.base_name), ("Describe", "Read", *writes))
        )
    entries.append(("group", settings.app_id, ("Describe",)))
    return _merge(entries)


def downstream_acls(settings: Settings) -> tuple[Acl, ...]:
    """A consumer of the alerts and the notifications (what the Subscriber reads). Its groups
    are those named with the downstream group as a prefix, so that each downstream service
    has one of its own (``medstream-downstream-billing``), never the workers' group."""
    entries: list[tuple[str, str, tuple[str, ...]] | Acl] = [
        ("topic", settings.topic_name(spec.base_name), ("Describe", "Read"))
        for spec in DOWNSTREAM_TOPICS
    ]
    entries.append(Acl("group", downstream_group(settings), ("Read",), PREFIXED))
    return _merge(entries)


def role_acls(settings: Settings) -> dict[str, tuple[Acl, ...]]:
    """Every role's ACLs."""
    return {
        WORKER: worker_acls(settings),
        PUBLISHER: publisher_acls(settings),
        OPERATOR: operator_acls(settings),
        DOWNSTREAM: downstream_acls(settings),
    }


def acl_lines(settings: Settings, users: Mapping[str, str]) -> list[str]:
    """The CreateAcls program's input: principal, resource type, name, operation and pattern
    type per line, tab-separated.

    ``users`` maps a role to its SCRAM user name.
    """
    lines = []
    for role, acls in role_acls(settings).items():
        if role not in users:
            continue
        for acl in acls:
            for operation in acl.operations:
                lines.append(
                    f"User:{users[role]}\t{acl.resource_type.upper()}\t{acl.name}\t"
                    f"{operation.upper()}\t{acl.pattern.upper()}"
                )
    return lines


def create_acls(
    settings: Settings,
    users: Mapping[str, str],
    classpath_dir: Path,
    admin_properties: Path,
    java: str = "java",
    timeout: float = 120.0,
) -> str:
    """Create the roles' ACLs on the cluster with Kafka's own Admin client (a small Java
    program: aiokafka has no CreateAcls). ``admin_properties`` is a Kafka client properties file
    of a super user. Returns the program's output; raises RuntimeError when it fails."""
    result = subprocess.run(
        [
            java,
            "-Xmx256m",
            "-cp",
            f"{classpath_dir}/*",
            str(CREATE_ACLS_PROGRAM),
            str(admin_properties),
        ],
        input="\n".join(acl_lines(settings, users)) + "\n",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"creating ACLs failed:\n{result.stdout}{result.stderr[-4000:]}")
    return result.stdout


def render_markdown(settings: Settings | None = None) -> str:
    """The README's table of ACLs per role (default settings: no topic prefix, app id
    ``medstream``)."""
    settings = settings or Settings()
    lines = ["| principal | resource | name | operations |", "|---|---|---|---|"]
    for role, acls in role_acls(settings).items():
        for acl in acls:
            name = f"names starting `{acl.name}`" if acl.pattern == PREFIXED else f"`{acl.name}`"
            lines.append(
                f"| `{role}` | {acl.resource_type} | {name} | {', '.join(acl.operations)} |"
            )
    return "\n".join(lines) + "\n"
