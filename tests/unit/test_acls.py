"""The README's ACL table is streams/acls.py's, and the ACLs keep to their roles."""

from __future__ import annotations

from streams import acls
from streams.settings import REPOSITORY_ROOT, Settings
from streams.topics import INPUT_TOPICS
from streams.topology import MAP_FHIR_RESOURCES


def test_the_readme_lists_the_acls_of_streams_acls() -> None:
    readme = (REPOSITORY_ROOT / "README.md").read_text()
    assert acls.render_markdown() in readme, (
        "the README's ACL table is stale: paste streams.acls.render_markdown() into it"
    )


def test_only_the_publisher_writes_the_inputs_and_only_the_worker_creates() -> None:
    settings = Settings(topic_prefix="p.", app_id="app")
    inputs = {settings.topic_name(spec.base_name) for spec in INPUT_TOPICS}
    # The worker's FHIR intake writes the contract events it maps FHIR onto, nothing else.
    mapped_onto = {settings.topic_name(spec.base_name) for spec in MAP_FHIR_RESOURCES.writes}
    for role, found in acls.role_acls(settings).items():
        writes = {acl.name for acl in found if "Write" in acl.operations}
        if role == acls.PUBLISHER:
            assert writes == inputs
        elif role == acls.WORKER:
            assert (
                writes & inputs
                == mapped_onto & inputs
                == {
                    settings.topic_name("medication-events"),
                    settings.topic_name("schedule-events"),
                }
            )
        else:
            assert not writes & inputs, role
        creates = {acl.name for acl in found if "Create" in acl.operations}
        assert not creates or role == acls.WORKER
        assert creates <= {
            acls.leader_topic(settings),
            *(
                acls.changelog_topic(settings, t)
                for t in ("state-by-patient", "deliveries-by-notification")
            ),
        }


def test_acl_lines_name_the_users_principals() -> None:
    lines = acls.acl_lines(Settings(), {acls.DOWNSTREAM: "alerts-reader"})
    topics = ("medication-reminders", "refill-alerts", "interaction-warnings", "notifications")
    assert lines == [
        *(
            f"User:alerts-reader\tTOPIC\t{topic}\t{operation}\tLITERAL"
            for topic in topics
            for operation in ("DESCRIBE", "READ")
        ),
        "User:alerts-reader\tGROUP\tmedstream-downstream\tREAD\tPREFIXED",
    ]


def test_dead_letters_raw_payloads_are_read_by_the_operator_alone() -> None:
    # A dead letter keeps the refused record's value (patient data): the worker writes them,
    # the operator reads them to replay; the publisher and downstream consumers never do.
    from streams.acls import role_acls
    from streams.settings import Settings

    settings = Settings()
    dead_letters = settings.topic_name("dead-letters")
    rights = {
        role: {op for acl in acls if acl.name == dead_letters for op in acl.operations}
        for role, acls in role_acls(settings).items()
    }
    assert "Read" not in rights["worker"]
    assert "Write" in rights["worker"]
    assert "Read" in rights["operator"]
    assert "Write" not in rights["operator"]
    assert not rights["publisher"] & {"Read", "Write"}
    assert not rights["downstream"] & {"Read", "Write"}


def test_the_only_prefixed_acl_is_downstream_groups_and_it_misses_the_workers_names() -> None:
    settings = Settings(topic_prefix="p.", app_id="app")
    prefixed = [
        (role, acl)
        for role, found in acls.role_acls(settings).items()
        for acl in found
        if acl.pattern == acls.PREFIXED
    ]
    assert [(role, acl.resource_type, acl.name) for role, acl in prefixed] == [
        (acls.DOWNSTREAM, "group", "app-downstream")
    ]
    # The workers' group and Faust's topics must not start with it.
    for name in (
        settings.app_id,
        acls.leader_topic(settings),
        acls.changelog_topic(settings, "state-by-patient"),
    ):
        assert not name.startswith("app-downstream"), name
