"""The operators' verbs of the command line: tail, dlq, replay, pause, resume and status."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition

from streams.contracts.codecs import EventDecoder
from streams.contracts.dead_letters import original_record
from streams.contracts.models import DeadLetter
from streams.contracts.registry import SchemaRegistry
from streams.contracts.schemas import default_catalog
from streams.kafka_client import client_options
from streams.ops.control import send_pause_commands, write_audit
from streams.ops.records import (
    DEAD_LETTER_HEADER,
    DeadLetterFilter,
    OffsetRange,
    Progress,
    RawRecord,
    bytes_for_display,
    dead_letter_row,
    decode_record,
    find_ranges,
    format_json,
    format_table,
    format_text,
    iso_millis,
    new_consumer,
    parse_time,
    read_ranges,
    topic_partitions,
)
from streams.ops.status import gather_status
from streams.settings import Settings
from streams.topics import (
    AUDIT_LOG,
    CONTROL,
    DEAD_LETTERS,
    EVERY_TOPIC,
    INPUT_TOPICS,
    ensure_topics,
)
from streams.topology import consumed_topics, pause_targets

_SEND_BATCH = 500  # sends in flight before waiting for their acknowledgements
_REPLAY_SELECTORS = ("reason", "topic", "since", "until", "from_offset", "to_offset", "partition")
# What a replay may write to: the contract's input topics (by a range, or as dead letters put
# back). Never medstream-control (it would pause or resume workers), audit-log, outputs (a
# replayed alert would be notified again under the notifier's nose) or changelogs.
REPLAYABLE_TOPICS = tuple(spec.base_name for spec in INPUT_TOPICS)


def replayable(settings: Settings, topic: str) -> bool:
    """Whether a replay may write to ``topic`` (a full name in this deployment)."""
    return topic in {settings.topic_name(base) for base in REPLAYABLE_TOPICS}


def _registry(settings: Settings) -> SchemaRegistry | None:
    if not settings.schema_registry_url:
        return None
    return SchemaRegistry(settings.schema_registry_url, settings.schema_registry_timeout)


def _fail(message: str, code: int = 2) -> int:
    print(f"medstream: {message}", file=sys.stderr)
    return code


def _run(coroutine: Callable[[], Coroutine[Any, Any, int]]) -> int:
    try:
        return asyncio.run(coroutine())
    except (LookupError, ValueError) as error:
        # A missing topic or partition, or a bad bound: the operator's to fix, not a crash.
        return _fail(str(error))


# tail ------------------------------------------------------------------------------------------


async def _tail(args: argparse.Namespace, settings: Settings) -> int:
    topic = settings.topic_name(args.topic)
    decoder = EventDecoder(default_catalog())
    registry = _registry(settings)
    consumer = new_consumer(client_options(settings))
    await consumer.start()
    try:
        partitions = await topic_partitions(client_options(settings), topic)
        consumer.assign(partitions)
        if args.from_beginning:
            await consumer.seek_to_beginning(*partitions)
        elif args.since is not None:
            ends = await consumer.end_offsets(partitions)
            found = await consumer.offsets_for_times(
                {tp: int(args.since.timestamp() * 1000) for tp in partitions}
            )
            for tp in partitions:
                hit = found.get(tp)
                consumer.seek(tp, ends[tp] if hit is None else hit.offset)
        else:
            await consumer.seek_to_end(*partitions)
        # Every partition's position is now known: what is written from here on is shown.
        positions = [f"p{tp.partition}@{await consumer.position(tp)}" for tp in partitions]
        print(f"following {topic} from offset {' '.join(positions)}", file=sys.stderr, flush=True)
        shown = 0
        last_record = time.monotonic()
        while args.max is None or shown < args.max:
            batches = await consumer.getmany(timeout_ms=500)
            records = [record for batch in batches.values() for record in batch]
            if not records:
                if args.timeout is not None and time.monotonic() - last_record >= args.timeout:
                    break
                continue
            last_record = time.monotonic()
            # Across partitions, time order reads best; within one, offsets are already ordered.
            for record in sorted(records, key=lambda item: (item.timestamp, item.partition)):
                raw = RawRecord.from_consumer(record)
                decoded = await decode_record(decoder, raw.value, registry)
                print(format_json(raw, decoded) if args.json else format_text(raw, decoded))
                shown += 1
                if args.max is not None and shown >= args.max:
                    break
            sys.stdout.flush()
        return 0
    finally:
        await consumer.stop()


def _cmd_tail(args: argparse.Namespace) -> int:
    settings = Settings()
    return _run(lambda: _tail(args, settings))


# dlq -------------------------------------------------------------------------------------------


async def _dead_letters(
    settings: Settings,
    selected: DeadLetterFilter,
    partition: int | None = None,
    offset: int | None = None,
) -> list[tuple[RawRecord, DeadLetter | None]]:
    """The dead letters (read up to today's end) that pass the filter; None if undecodable."""
    decoder = EventDecoder(default_catalog())
    consumer = new_consumer(client_options(settings))
    await consumer.start()
    try:
        ranges = await find_ranges(
            consumer,
            client_options(settings),
            settings.topic_name(DEAD_LETTERS.base_name),
            partition=partition,
            from_offset=offset,
            to_offset=offset,
        )
        found: list[tuple[RawRecord, DeadLetter | None]] = []
        async for raw in read_ranges(consumer, ranges):
            decoded = await decode_record(decoder, raw.value)
            if decoded.event is None or decoded.error is not None:
                found.append((raw, None))
                continue
            dead_letter = DeadLetter.model_validate(decoded.event)
            if selected.matches(dead_letter):
                found.append((raw, dead_letter))
        return found
    finally:
        await consumer.stop()


def _filter_from(args: argparse.Namespace, settings: Settings) -> DeadLetterFilter:
    return DeadLetterFilter(
        reason=args.reason,
        original_topic=None if args.topic is None else settings.topic_name(args.topic),
        since=args.since,
        until=getattr(args, "until", None),
    )


def _cmd_dlq_list(args: argparse.Namespace) -> int:
    settings = Settings()
    selected = _filter_from(args, settings)

    async def run() -> int:
        found = await _dead_letters(settings, selected)
        letters = [(raw, letter) for raw, letter in found if letter is not None]
        if args.json:
            for raw, letter in letters:
                # The original bytes stay out of the listing: `dlq show` is for one record.
                shown = letter.model_dump(mode="json", exclude={"value"})
                line = {"partition": raw.partition, "offset": raw.offset, "dead_letter": shown}
                print(json.dumps(line, separators=(",", ":"), ensure_ascii=False))
        else:
            print(format_table(DEAD_LETTER_HEADER, [dead_letter_row(r, d) for r, d in letters]))
        unreadable = len(found) - len(letters)
        if unreadable:
            print(
                f"{unreadable} records of the dead-letters topic are not DeadLetters",
                file=sys.stderr,
            )
        print(f"{len(letters)} dead letters", file=sys.stderr)
        return 0

    return _run(run)


def _show(raw: RawRecord, letter: DeadLetter) -> str:
    key, value, headers = original_record(letter)
    lines = [
        f"dead letter {raw.partition}:{raw.offset} (event_id {letter.event_id})",
        f"written at:  {iso_millis(raw.timestamp)}",
        f"failed at:   {letter.failed_at.isoformat().replace('+00:00', 'Z')}",
        f"original:    {letter.original_topic} partition {letter.partition} offset {letter.offset}",
        f"error_type:  {letter.error_type}",
        f"error:       {letter.error_message}",
        f"patient_id:  {letter.patient_id or '-'}",
        f"key:         {bytes_for_display(key)}",
        "headers:     "
        + (", ".join(f"{name}={bytes_for_display(item)}" for name, item in headers) or "-"),
        f"value ({0 if value is None else len(value)} bytes):",
        bytes_for_display(value),
    ]
    if letter.truncated:
        lines.insert(
            -2,
            f"truncated:   the original value has {letter.value_length} bytes, SHA-256 "
            f"{letter.value_sha256}; what is shown was cut to fit the broker's limit (replay "
            "sends the original from its topic)",
        )
    return "\n".join(lines)


def _cmd_dlq_show(args: argparse.Namespace) -> int:
    settings = Settings()

    async def run() -> int:
        found = await _dead_letters(settings, DeadLetterFilter(), args.partition, args.offset)
        if not found:
            where = "any partition" if args.partition is None else f"partition {args.partition}"
            return _fail(f"no dead letter at offset {args.offset} in {where}", 1)
        for number, (raw, letter) in enumerate(found):
            if number:
                print()
            if letter is None:
                print(f"record {raw.partition}:{raw.offset} is not a DeadLetter")
            else:
                print(_show(raw, letter))
        return 0

    return _run(run)


# replay ----------------------------------------------------------------------------------------


class _Sender:
    """Sends records with bounded batches in flight, or only counts them on a dry run."""

    def __init__(self, settings: Settings, dry_run: bool, progress: Progress) -> None:
        self.settings = settings
        self.dry_run = dry_run
        self.progress = progress
        self.producer: AIOKafkaProducer | None = None
        self.in_flight: list[asyncio.Future[Any]] = []
        self.sent: Counter[str] = Counter()

    async def __aenter__(self) -> _Sender:
        if not self.dry_run:
            self.producer = AIOKafkaProducer(
                acks="all", enable_idempotence=True, **client_options(self.settings)
            )
            await self.producer.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            if exc_info[0] is None:
                await self.flush()
        finally:
            if self.producer is not None:
                await self.producer.stop()
        if exc_info[0] is None:
            self.progress.finish()

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes | None]],
        partition: int | None,
    ) -> None:
        if self.producer is not None:
            self.in_flight.append(
                await self.producer.send(
                    topic, value, key=key, partition=partition, headers=headers
                )
            )
            if len(self.in_flight) >= _SEND_BATCH:
                await self.flush()
        self.sent[topic] += 1
        self.progress.advance()

    async def flush(self) -> None:
        if self.in_flight:
            await asyncio.gather(*self.in_flight)
            self.in_flight.clear()


def _report(sent: Counter[str], dry_run: bool, fallback_topic: str) -> None:
    verb = "would replay" if dry_run else "replayed"
    suffix = " (--dry-run: nothing sent)" if dry_run else ""
    for topic, count in sorted(sent.items()) or [(fallback_topic, 0)]:
        print(f"{verb} {count} records to {topic}{suffix}")


def replay_arguments(**selection: Any) -> argparse.Namespace:
    """The replay options as the command line parses them (the admin endpoint's input)."""
    defaults: dict[str, Any] = {
        "dead_letters": False,
        "dry_run": False,
        "actor": None,
        **dict.fromkeys(_REPLAY_SELECTORS),
    }
    unknown = set(selection) - set(defaults)
    if unknown:
        raise ValueError(f"unknown replay options: {', '.join(sorted(unknown))}")
    args = argparse.Namespace(**{**defaults, **selection})
    for name in ("since", "until"):
        if isinstance(getattr(args, name), str):
            setattr(args, name, parse_time(getattr(args, name)))
    return args


async def replay(args: argparse.Namespace, settings: Settings) -> Counter[str]:
    """Run a replay; records sent per topic. The one gate of every replay (command line and
    admin endpoint): options that :func:`check_replay` refuses raise ValueError."""
    problem = check_replay(args)
    if problem:
        raise ValueError(problem)
    if args.dead_letters:
        return await _replay_dead_letters(args, settings)
    return await _replay_topic(args, settings)


async def _replay_topic(args: argparse.Namespace, settings: Settings) -> Counter[str]:
    topic = settings.topic_name(args.topic)
    consumer = new_consumer(client_options(settings))
    await consumer.start()
    try:
        ranges: dict[TopicPartition, OffsetRange] = await find_ranges(
            consumer,
            client_options(settings),
            topic,
            since=args.since,
            until=args.until,
            from_offset=args.from_offset,
            to_offset=args.to_offset,
            partition=args.partition,
        )
        total = sum(span.size for span in ranges.values())
        progress = Progress(total, sys.stderr)
        async with _Sender(settings, args.dry_run, progress) as sender:
            async for raw in read_ranges(consumer, ranges):
                # The same partition as before: per-patient order holds even for keyless records.
                await sender.send(topic, raw.key, raw.value, list(raw.headers), raw.partition)
        return sender.sent
    finally:
        await consumer.stop()


async def _replay_dead_letters(args: argparse.Namespace, settings: Settings) -> Counter[str]:
    found = await _dead_letters(settings, _filter_from(args, settings))
    letters = [letter for _, letter in found if letter is not None]
    refused = [letter for letter in letters if not replayable(settings, letter.original_topic)]
    if refused:
        # A dead letter names its own destination: one of another topic is not put back.
        print(
            f"{len(refused)} dead letters of topics that are not inputs "
            f"({', '.join(REPLAYABLE_TOPICS)}) are not replayed",
            file=sys.stderr,
        )
        letters = [letter for letter in letters if replayable(settings, letter.original_topic)]
    partitions = {
        topic: len(await topic_partitions(client_options(settings), topic))
        for topic in {letter.original_topic for letter in letters}
    }
    progress = Progress(len(letters), sys.stderr)
    async with _Sender(settings, args.dry_run, progress) as sender:
        for letter in letters:
            if letter.truncated:
                # The dead letter kept only part of the record: send the original again.
                await _replay_original(settings, letter, sender)
                continue
            key, value, headers = original_record(letter)
            # Back to the partition it failed on, if the topic still has it; else by key.
            same = (
                letter.partition if letter.partition < partitions[letter.original_topic] else None
            )
            await sender.send(letter.original_topic, key, value, headers, same)
    return sender.sent


async def _replay_original(settings: Settings, letter: DeadLetter, sender: _Sender) -> None:
    """Send the record a truncated dead letter stands for, read from its original offset."""
    consumer = new_consumer(client_options(settings))
    await consumer.start()
    try:
        where = TopicPartition(letter.original_topic, letter.partition)
        found = False
        async for raw in read_ranges(
            consumer, {where: OffsetRange(letter.offset, letter.offset + 1)}
        ):
            await sender.send(where.topic, raw.key, raw.value, list(raw.headers), where.partition)
            found = True
        if not found:
            print(
                f"the record behind the cut dead letter of {where.topic} partition "
                f"{where.partition} offset {letter.offset} is no longer in the topic",
                file=sys.stderr,
            )
    finally:
        await consumer.stop()


def _cmd_replay(args: argparse.Namespace) -> int:
    problem = check_replay(args)
    if problem:
        return _fail(problem)
    settings = Settings()

    async def run() -> int:
        sent = await replay(args, settings)
        fallback = "their original topics" if args.dead_letters else settings.topic_name(args.topic)
        _report(sent, args.dry_run, fallback)
        return 0

    code = _run(run)
    if not args.dry_run:
        outcome = "ok" if code == 0 else f"failed (exit {code})"
        _run(lambda: audit_replay(settings, args, _actor(args), outcome))
    return code


async def audit_replay(
    settings: Settings, args: argparse.Namespace, actor: str, outcome: str
) -> int:
    """Write the AuditRecord of a replay (from the command line or the admin endpoint)."""
    await ensure_topics(settings, (AUDIT_LOG,))
    await write_audit(
        settings,
        actor=actor,
        action="replay",
        target="dead-letters" if args.dead_letters else f"topic:{args.topic}",
        outcome=outcome,
        parameters={
            name: str(getattr(args, name))
            for name in _REPLAY_SELECTORS
            if getattr(args, name) is not None
        },
    )
    return 0


def _actor(args: argparse.Namespace) -> str:
    return str(getattr(args, "actor", None) or getpass.getuser())


def check_replay(args: argparse.Namespace) -> str | None:
    """What is wrong with replay's options, or None."""
    if args.dead_letters:
        if args.from_offset is not None or args.to_offset is not None or args.partition is not None:
            return "--dead-letters selects by --reason, --topic, --since and --until"
        return None
    if args.topic is None:
        return "replay needs --topic BASE (or --dead-letters)"
    if args.topic not in REPLAYABLE_TOPICS:
        return f"only input topics can be replayed: {', '.join(REPLAYABLE_TOPICS)}"
    if args.reason is not None:
        return "--reason only applies to --dead-letters"
    if (args.since is None) == (args.from_offset is None):
        return "replay --topic needs either --since or --from-offset"
    if args.since is None and args.until is not None:
        return "--until goes with --since"
    if args.from_offset is None and (args.to_offset is not None or args.partition is not None):
        return "--to-offset and --partition go with --from-offset"
    if args.to_offset is not None and args.to_offset < args.from_offset:
        return "--to-offset is before --from-offset"
    return None


# pause, resume, status ----------------------------------------------------------------------


async def _pause(args: argparse.Namespace, settings: Settings, paused: bool) -> int:
    # From the topology, not from a built app: the command line never builds Faust's app.
    targets = pause_targets(args.topic or [], args.agent or [])
    if not targets:
        return _fail("name at least one --topic or --agent")
    await ensure_topics(settings, (CONTROL, AUDIT_LOG))
    await send_pause_commands(settings, targets, paused=paused, actor=_actor(args))
    verb = "paused" if paused else "resumed"
    print(f"{verb}: {', '.join(targets)} (every worker applies it within two seconds)")
    return 0


def _cmd_pause(args: argparse.Namespace) -> int:
    return _run(lambda: _pause(args, Settings(), paused=True))


def _cmd_resume(args: argparse.Namespace) -> int:
    return _run(lambda: _pause(args, Settings(), paused=False))


async def _status(args: argparse.Namespace, settings: Settings) -> int:
    status = await gather_status(settings, consumed_topics(), EVERY_TOPIC, args.stall_sample)
    if args.json:
        print(json.dumps(status.as_json(), indent=2))
    else:
        print(status.as_text(settings.app_id))
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    return _run(lambda: _status(args, Settings()))


# registration ----------------------------------------------------------------------------------


def _time(text: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _offset(text: str) -> int:
    number = int(text)
    if number < 0:
        raise argparse.ArgumentTypeError("offsets are >= 0")
    return number


def add_ops_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register tail, dlq and replay on the medstream command line."""
    tail = commands.add_parser(
        "tail", help="follow a topic, decoded and readable (until Ctrl-C, --max or --timeout)"
    )
    tail.add_argument("topic", help="the topic's base name, e.g. refill-alerts")
    tail.add_argument("--json", action="store_true", help="one JSON object per record")
    start = tail.add_mutually_exclusive_group()
    start.add_argument("--since", type=_time, help="start at this ISO-8601 time (default: now)")
    start.add_argument("--from-beginning", action="store_true", help="start at the oldest record")
    tail.add_argument("--max", type=int, help="stop after this many records")
    tail.add_argument("--timeout", type=float, help="stop after this many seconds without records")
    tail.set_defaults(handler=_cmd_tail)

    dlq = commands.add_parser("dlq", help="dead letters: inputs that failed, with their reasons")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True)
    listing = dlq_commands.add_parser("list", help="a table of the dead letters")
    _add_dead_letter_filters(listing)
    listing.add_argument("--until", type=_time, help="failed before this ISO-8601 time")
    listing.add_argument("--json", action="store_true", help="one JSON object per dead letter")
    listing.set_defaults(handler=_cmd_dlq_list)
    show = dlq_commands.add_parser("show", help="one dead letter, with its original record")
    show.add_argument("offset", type=_offset, help="its offset in the dead-letters topic")
    show.add_argument("--partition", type=int, help="its partition (default: look in each)")
    show.set_defaults(handler=_cmd_dlq_show)

    replay = commands.add_parser(
        "replay",
        help="re-feed a topic's records (by time or offsets), or dead letters, into the pipeline",
        description=(
            "Re-produce records with the same key, value and headers: either a range of one "
            "topic into the same topic, or dead letters back to their original topic. "
            "Deterministic event ids and de-duplication make a replay safe."
        ),
    )
    replay.add_argument(
        "--dead-letters", action="store_true", help="replay dead letters to their original topic"
    )
    _add_dead_letter_filters(replay, topic_help="the topic to replay (base name)")
    replay.add_argument("--until", type=_time, help="until this ISO-8601 time (exclusive)")
    replay.add_argument("--from-offset", type=_offset, help="first offset (every partition)")
    replay.add_argument("--to-offset", type=_offset, help="last offset, inclusive")
    replay.add_argument("--partition", type=int, help="only this partition")
    replay.add_argument("--dry-run", action="store_true", help="count what would be sent")
    replay.add_argument("--actor", help="who replays, for the audit log (default: login name)")
    replay.set_defaults(handler=_cmd_replay)

    for verb, handler, text in (
        ("pause", _cmd_pause, "stop processing topics or agents on every worker"),
        ("resume", _cmd_resume, "resume paused topics or agents on every worker"),
    ):
        parser = commands.add_parser(
            verb,
            help=text,
            description=(
                f"{text.capitalize()}, within two seconds; it survives restarts. Events published "
                "while paused wait in Kafka and are processed on resume. Audited in audit-log."
            ),
        )
        parser.add_argument(
            "--topic", action="append", help="a consumed topic's base name (repeatable)"
        )
        parser.add_argument(
            "--agent", action="append", help="an agent: all the topics it consumes (repeatable)"
        )
        parser.add_argument("--actor", help="who does it, for the audit log (default: login name)")
        parser.set_defaults(handler=handler)

    status = commands.add_parser(
        "status",
        help="consumer-group lag per partition, events in and out, dead letters, deliveries",
    )
    status.add_argument("--json", action="store_true", help="one JSON document")
    status.add_argument(
        "--stall-sample",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="read the group's offsets again after this long; a partition with lag whose "
        "committed offset did not move is stalled (default 5; 0: one reading, no check)",
    )
    status.set_defaults(handler=_cmd_status)


def _add_dead_letter_filters(
    parser: argparse.ArgumentParser,
    topic_help: str = "only dead letters of this original topic (base name)",
) -> None:
    parser.add_argument("--reason", help="substring of the error type or message, any case")
    parser.add_argument("--topic", help=topic_help)
    parser.add_argument("--since", type=_time, help="from this ISO-8601 time")
