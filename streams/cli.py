"""The medstream command line: the worker, the local broker, topics, publishing, operating
(status, tail, dlq, replay, pause, resume), schemas, interactions and the demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from streams.local_kafka import BrokerError
from streams.ops.commands import add_ops_commands
from streams.settings import Settings


def _settings(**overrides: Any) -> Settings:
    """Settings from the environment, with the command line's options on top."""
    return Settings(**{key: value for key, value in overrides.items() if value is not None})


def _cmd_worker(args: argparse.Namespace) -> int:
    from streams.worker import run_worker

    run_worker(_settings(web_port=args.web_port, data_dir=args.data_dir))
    return 0


def _broker(args: argparse.Namespace) -> Any:
    from streams.local_kafka import ClusterSpec, LocalKafka

    settings = _settings(
        broker_port=args.port,
        broker_controller_port=args.controller_port,
        broker_data_dir=args.data_dir,
        broker_heap=args.heap,
    )
    cluster = ClusterSpec.multi_node(settings, args.nodes)
    if args.sasl_ssl_dir is None:
        return LocalKafka(cluster)
    from streams.local_kafka import secured_cluster

    return LocalKafka(secured_cluster(cluster, args.sasl_ssl_dir))


def _create_role_acls(args: argparse.Namespace, broker: Any) -> None:
    """On a secured broker: the ACLs of streams/acls.py for each role the users file names."""
    import tempfile

    from streams import acls
    from streams.local_kafka import admin_client_properties, ensure_classpath, read_users

    users = read_users(args.sasl_ssl_dir / "users.properties")
    roles = {role: role for role in acls.ROLES if role in users}
    if not roles:
        return
    with tempfile.NamedTemporaryFile("w", suffix=".properties") as properties:
        properties.write(admin_client_properties(broker.cluster, args.sasl_ssl_dir))
        properties.flush()
        acls.create_acls(
            _settings(), roles, ensure_classpath(broker.cluster), Path(properties.name)
        )
    print(f"ACLs of {', '.join(roles)} created")


def _cmd_broker_start(args: argparse.Namespace) -> int:
    broker = _broker(args)
    started = broker.start()
    state = "started" if started else "already running"
    print(f"broker {state} at {broker.bootstrap_servers}")
    if args.sasl_ssl_dir is not None:
        _create_role_acls(args, broker)
    return 0


def _cmd_broker_stop(args: argparse.Namespace) -> int:
    broker = _broker(args)
    print("broker stopped" if broker.stop() else "broker was not running")
    return 0


def _cmd_broker_status(args: argparse.Namespace) -> int:
    status = _broker(args).status()
    print(json.dumps(status, indent=2))
    running = any(pid is not None for pid in status["nodes"].values())
    return 0 if running and status["brokers_answering"] else 1


def _cmd_broker_credentials(args: argparse.Namespace) -> int:
    from streams.local_credentials import write_credentials
    from streams.local_kafka import ClusterSpec

    settings = _settings(broker_port=args.port, broker_controller_port=args.controller_port)
    cluster = ClusterSpec.multi_node(settings, args.nodes)
    hosts = [settings.broker_host, "localhost", *args.host]
    written = write_credentials(
        args.directory, hosts, cluster.bootstrap_servers, min(3, args.nodes)
    )
    print(f"wrote {', '.join(path.name for path in written)} into {args.directory}")
    print(f"then: medstream broker start --nodes {args.nodes} --sasl-ssl-dir {args.directory}")
    return 0


def _cmd_topics_create(args: argparse.Namespace) -> int:
    from streams.topics import ensure_topics

    created = asyncio.run(ensure_topics(_settings()))
    print("created: " + (", ".join(created) if created else "nothing (all exist)"))
    return 0


def _cmd_publish(args: argparse.Namespace) -> int:
    from streams.observability.tracing import configure_tracing
    from streams.publish import check_file, publish_events

    if args.fhir:
        return _publish_fhir(args)
    checked = check_file(args.file)
    for invalid in checked.invalid:
        print(f"{args.file}:{invalid.line}: {invalid.reason}", file=sys.stderr)
    if checked.invalid and not args.skip_invalid:
        print(
            f"nothing published: {len(checked.invalid)} invalid of "
            f"{len(checked.invalid) + len(checked.valid)} (--skip-invalid publishes the rest)",
            file=sys.stderr,
        )
        return 1
    if args.dry_run:
        print(f"{len(checked.valid)} valid events; nothing published (--dry-run)")
        return 0
    configure_tracing()  # spans exported per OTEL_TRACES_EXPORTER; traceparent sent always
    sent = asyncio.run(publish_events(_settings(), checked.valid, avro=args.avro))
    for topic, count in sorted(sent.items()):
        print(f"published {count} to {topic}")
    if checked.invalid:
        print(f"skipped {len(checked.invalid)} invalid events", file=sys.stderr)
    return 0


def _publish_fhir(args: argparse.Namespace) -> int:
    """``publish --fhir``: map each record as the worker will, report what cannot be mapped,
    and send the records unchanged (the worker maps them again: the original is what is
    kept). A ``.ndjson`` file (FHIR Bulk Data) holds one record a line, any other one record."""
    from collections import Counter

    from streams.fhir import FhirRules, map_fhir_record
    from streams.observability.tracing import configure_tracing
    from streams.publish import fhir_record_key, mapped_patients, publish_fhir

    settings = _settings()
    rules = FhirRules.from_settings(settings)
    content = args.file.read_bytes()
    if args.file.suffix.lower() == ".ndjson":
        values = [
            (f"{args.file}:{number}", line)
            for number, line in enumerate(content.splitlines(), start=1)
            if line.strip()
        ]
    else:
        values = [(str(args.file), content)]
    counts: Counter[str] = Counter()
    records: list[tuple[bytes, bytes | None]] = []
    problems = 0
    shared = 0
    for where, value in values:
        mapping = map_fhir_record(value, rules)
        for problem in mapping.problems:
            print(
                f"{where}: {problem.path}: {problem.error_type}: {problem.reason}", file=sys.stderr
            )
        problems += len(mapping.problems)
        counts.update(str(event["event_type"]) for event in mapping.events)
        if len(mapped_patients(mapping.events)) > 1:
            shared += 1
        if mapping.events or mapping.problems:
            records.append((value, fhir_record_key(mapping.events)))
    summary = ", ".join(f"{count} {name}" for name, count in sorted(counts.items())) or "no events"
    if problems and not args.skip_invalid:
        print(
            f"nothing published: {problems} problems (--skip-invalid publishes the file anyway; "
            "the worker dead-letters the parts it cannot map)",
            file=sys.stderr,
        )
        return 1
    if not records:
        print("nothing published: the file maps to no event", file=sys.stderr)
        return 1
    plural = "" if len(records) == 1 else "s"
    if args.dry_run:
        verb = "maps" if len(records) == 1 else "map"
        counted = f"{len(records)} FHIR record{plural} {verb} to {summary}"
        print(f"{counted}; nothing published (--dry-run)")
        return 0
    if shared:
        print(
            f"{shared} records are about several patients: publish one Bundle per patient to "
            "keep each patient's resources in order",
            file=sys.stderr,
        )
    configure_tracing()
    topic = asyncio.run(publish_fhir(settings, records))
    print(f"published {len(records)} FHIR record{plural} to {topic}: maps to {summary}")
    return 0


def _cmd_schemas_check(args: argparse.Namespace) -> int:
    from streams.contracts.compatibility import check_against_released
    from streams.contracts.schemas import RELEASED_DIR, SCHEMAS_DIR

    current_dir = args.schemas_dir or SCHEMAS_DIR
    # An install without its schemas (a wheel that lost them) would otherwise pass: with no
    # released schema there is nothing to compare.
    for directory in (current_dir, RELEASED_DIR):
        if not any(directory.glob("*.avsc")):
            print(f"no schemas (*.avsc) in {directory}", file=sys.stderr)
            return 1
    problems = check_against_released(current_dir, RELEASED_DIR)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{len(problems)} backward-incompatible changes", file=sys.stderr)
        return 1
    released = len(list(RELEASED_DIR.glob("*.avsc")))
    print(f"schemas are backward compatible with the released ones ({released} released)")
    return 0


def _cmd_schemas_docs(args: argparse.Namespace) -> int:
    from streams.contracts.docs import render_events_markdown
    from streams.contracts.schemas import default_catalog
    from streams.settings import REPOSITORY_ROOT

    target = args.output or REPOSITORY_ROOT / "docs" / "events.md"
    target.write_text(render_events_markdown(default_catalog()))
    print(f"wrote {target}")
    return 0


def _cmd_schemas_release(args: argparse.Namespace) -> int:
    from streams.contracts.compatibility import check_against_released, release
    from streams.contracts.schemas import RELEASED_DIR, SCHEMAS_DIR

    problems = check_against_released(SCHEMAS_DIR, RELEASED_DIR)
    if problems and not args.force:
        for problem in problems:
            print(problem, file=sys.stderr)
        print("not released: incompatible (use --force for a new major version)", file=sys.stderr)
        return 1
    names = release(SCHEMAS_DIR, RELEASED_DIR)
    print(f"released {len(names)} schemas into {RELEASED_DIR}")
    return 0


def _cmd_interactions_coverage(args: argparse.Namespace) -> int:
    from streams.domain.interaction_classes import default_catalog
    from streams.domain.interaction_coverage import render_coverage_markdown, summary_lines
    from streams.domain.interactions import InteractionKnowledgeBase
    from streams.settings import REPOSITORY_ROOT

    catalog, kb = default_catalog(), InteractionKnowledgeBase.load_default()
    for line in summary_lines(catalog, kb):
        print(line)
    target = args.output or REPOSITORY_ROOT / "docs" / "interactions.md"
    target.write_text(render_coverage_markdown(catalog, kb))
    print(f"wrote {target}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from streams.demo import run_demo

    return run_demo(_settings(), duration=args.duration)


def _add_broker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, help="client port (MEDSTREAM_BROKER_PORT)")
    parser.add_argument(
        "--controller-port", type=int, help="controller port (MEDSTREAM_BROKER_CONTROLLER_PORT)"
    )
    parser.add_argument("--data-dir", type=Path, help="data directory (MEDSTREAM_BROKER_DATA_DIR)")
    parser.add_argument("--heap", help="JVM heap, e.g. 512m (MEDSTREAM_BROKER_HEAP)")
    parser.add_argument(
        "--sasl-ssl-dir",
        type=Path,
        help="secure it: SASL_SSL with SCRAM-SHA-512 and ACLs; DIR holds server.pem (PKCS#8 key "
        "and certificate chain), ca.pem and users.properties (name=password lines, admin among "
        "them; worker, publisher, operator and downstream get their ACLs)",
    )
    parser.add_argument(
        "--nodes",
        type=int,
        default=1,
        help="nodes of a KRaft cluster (default 1): ports --port.. and --controller-port.. "
        "(or --port+100.. when they would overlap), data in <data-dir>/node-<id>",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medstream", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    worker = commands.add_parser("worker", help="run a stream-processing worker")
    worker.add_argument("--web-port", type=int, help="web server port (MEDSTREAM_WEB_PORT)")
    worker.add_argument("--data-dir", type=Path, help="table data (MEDSTREAM_DATA_DIR)")
    worker.set_defaults(handler=_cmd_worker)

    broker = commands.add_parser("broker", help="run a local Apache Kafka broker")
    broker_commands = broker.add_subparsers(dest="broker_command", required=True)
    for name, handler, text in (
        ("start", _cmd_broker_start, "start it (harmless when it runs already)"),
        ("stop", _cmd_broker_stop, "stop it and wait until it has exited"),
        ("status", _cmd_broker_status, "is it running and answering?"),
    ):
        sub = broker_commands.add_parser(name, help=text)
        _add_broker_options(sub)
        sub.set_defaults(handler=handler)
    credentials = broker_commands.add_parser(
        "credentials",
        help="make the files --sasl-ssl-dir reads: a CA, the brokers' certificate, a user per "
        "role with a random password, and each user's client settings (DIR/<user>.env)",
    )
    credentials.add_argument("directory", type=Path, metavar="DIR", help="created, mode 0700")
    credentials.add_argument("--nodes", type=int, default=1, help="as for broker start")
    credentials.add_argument("--port", type=int, help="as for broker start")
    credentials.add_argument("--controller-port", type=int, help="as for broker start")
    credentials.add_argument(
        "--host",
        action="append",
        default=[],
        help="another name or address for the brokers' certificate (MEDSTREAM_BROKER_HOST "
        "and localhost are in it); repeatable",
    )
    credentials.set_defaults(handler=_cmd_broker_credentials)

    topics = commands.add_parser("topics", help="manage the contract's topics")
    topics_commands = topics.add_subparsers(dest="topics_command", required=True)
    create = topics_commands.add_parser("create", help="create the topics that are missing")
    create.set_defaults(handler=_cmd_topics_create)

    publish = commands.add_parser(
        "publish", help="validate a JSON or JSON-lines file of events and publish it"
    )
    publish.add_argument("file", type=Path, help="JSON object, JSON array or JSON lines")
    publish.add_argument(
        "--skip-invalid", action="store_true", help="publish the valid events even if some fail"
    )
    publish.add_argument("--dry-run", action="store_true", help="only validate")
    publish.add_argument(
        "--avro", action="store_true", help="publish as Avro single-object encoding"
    )
    publish.add_argument(
        "--fhir",
        action="store_true",
        help="the file is one FHIR R4 JSON resource or Bundle, or FHIR Bulk Data NDJSON (a "
        ".ndjson file, one resource a line): validate and map it as the worker will, then "
        "publish it unchanged to fhir-resources (docs/fhir.md)",
    )
    publish.set_defaults(handler=_cmd_publish)

    schemas = commands.add_parser("schemas", help="the Avro schemas of the event contract")
    schemas_commands = schemas.add_subparsers(dest="schemas_command", required=True)
    check = schemas_commands.add_parser(
        "check", help="fail when a schema is not backward compatible with the released one"
    )
    check.add_argument("--schemas-dir", type=Path, help="schemas to check (default: schemas/)")
    check.set_defaults(handler=_cmd_schemas_check)
    docs = schemas_commands.add_parser("docs", help="regenerate docs/events.md")
    docs.add_argument("--output", type=Path, help="where to write (default: docs/events.md)")
    docs.set_defaults(handler=_cmd_schemas_docs)
    release = schemas_commands.add_parser(
        "release", help="record the current schemas as the released baseline"
    )
    release.add_argument("--force", action="store_true", help="release even if incompatible")
    release.set_defaults(handler=_cmd_schemas_release)

    interactions = commands.add_parser("interactions", help="the interaction knowledge base")
    interactions_commands = interactions.add_subparsers(dest="interactions_command", required=True)
    coverage = interactions_commands.add_parser(
        "coverage", help="print classes, members and pair counts; regenerate docs/interactions.md"
    )
    coverage.add_argument(
        "--output", type=Path, help="where to write (default: docs/interactions.md)"
    )
    coverage.set_defaults(handler=_cmd_interactions_coverage)

    add_ops_commands(commands)

    demo = commands.add_parser(
        "demo", help="start broker and worker, feed a demo scenario, print what comes out"
    )
    demo.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: run until Ctrl-C)",
    )
    demo.set_defaults(handler=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # The Kafka client's routine INFO lines (subscriptions, metadata) drown the CLI's output.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        code = args.handler(args)
    except ValidationError as error:
        print(f"medstream: invalid settings:\n{error}", file=sys.stderr)
        code = 2
    except BrokerError as error:
        print(f"medstream: {error}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
